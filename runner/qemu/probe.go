package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// Probe is what an installed QEMU binary says it offers.
type Probe struct {
	Binary   string
	Version  string
	Machines []string
	CPUs     []string
}

// Discover asks the binary for its version, machines and CPUs.
func Discover(ctx context.Context, binary string) (Probe, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return Probe{}, fmt.Errorf("qemu: %s not found (install qemu-system-arm): %w", binary, err)
	}
	p := Probe{Binary: path}
	run := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, path, args...).Output()
		if err != nil {
			return "", fmt.Errorf("qemu: %s %s: %w", path, strings.Join(args, " "), err)
		}
		return string(out), nil
	}
	v, err := run("--version")
	if err != nil {
		return p, err
	}
	p.Version = parseVersion(v)
	m, err := run("-machine", "help")
	if err != nil {
		return p, err
	}
	p.Machines = parseList(m, "Supported machines")
	c, err := run("-cpu", "help")
	if err != nil {
		return p, err
	}
	for _, cpu := range parseList(c, "Available CPUs") {
		p.CPUs = append(p.CPUs, cpuName(cpu))
	}
	return p, nil
}

// parseVersion takes "QEMU emulator version 7.2.22 (Debian ...)" to "7.2.22".
func parseVersion(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return strings.TrimSpace(line)
}

// parseList takes the first word of every line after the header line.
func parseList(s, header string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, header) || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		out = append(out, f[0])
	}
	return out
}

// cpuName takes a CPU as -cpu help lists it to the name the board catalog
// uses: qemu-system-avr lists QOM type names ("avr5-avr-cpu") where the
// others list bare names.
func cpuName(s string) string {
	if base, ok := strings.CutSuffix(s, "-avr-cpu"); ok {
		return base
	}
	return s
}

// clockProbeImage is a few instructions that start a board's timer, read
// it twice, stop it and idle: a device that cannot be read on the
// instruction counter ends QEMU at its first read (QEMU 7.2's AVR Timer1:
// "Bad icount read"), where an idle guest would prove nothing. The guest
// idles afterwards because a busy one starves QMP in record mode (cont
// never answers). insns is how many instructions QEMU 7.2 counts until the
// idle loop (QMP query-replay, the same in both modes).
type clockProbeImage struct {
	addr  uint64
	insns int64
	code  []byte
}

var clockProbeImages = map[string]clockProbeImage{
	// A vector table (stack 0x20001000, reset at 0x8) at the boot address,
	// then: ldr r1,=0xE000E010; mvn r0,#0xFF000000; str r0,[r1,#4] (SysTick
	// reload); movs r0,#5; str r0,[r1] (enable, CPU clock); ldr r0,[r1,#8]
	// twice (current value); movs r2,#0; str r2,[r1] (stop); 1: wfi; b 1b.
	board.ArchARM: {0, 9, []byte{0x00, 0x10, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x05, 0x49, 0x6f, 0xf0,
		0x7f, 0x40, 0x48, 0x60, 0x05, 0x20, 0x08, 0x60, 0x88, 0x68, 0x88, 0x68,
		0x00, 0x22, 0x0a, 0x60, 0x30, 0xbf, 0xfd, 0xe7, 0x10, 0xe0, 0x00, 0xe0}},
	// Where sifive_e's mask ROM jumps (after its own instructions): lui
	// t0,0x200c; lw t1,-8(t0) twice (the CLINT's mtime); 1: wfi; j 1b.
	board.ArchRISCV32: {0x20400000, 7, []byte{0xb7, 0xc2, 0x00, 0x02, 0x03, 0xa3, 0x82, 0xff, 0x03, 0xa3, 0x82, 0xff,
		0x73, 0x00, 0x50, 0x10, 0xf5, 0xbf}},
	// The flash image: ldi r16,1; sts 0x81,r16 (TCCR1B: Timer1 on the CPU
	// clock); lds r16,0x84 twice (TCNT1L); ldi r16,0; sts 0x81,r16 (stop);
	// 1: sleep; rjmp 1b.
	board.ArchAVR: {0, 6, []byte{0x01, 0xe0, 0x00, 0x93, 0x81, 0x00, 0x00, 0x91, 0x84, 0x00, 0x00, 0x91,
		0x84, 0x00, 0x00, 0xe0, 0x00, 0x93, 0x81, 0x00, 0x88, 0x95, 0xfe, 0xcf}},
}

// ClockProbe is what the binary says about one machine on the instruction
// counter: the clock features it ran with (board.ClockFeatures), and why
// each other one is missing.
type ClockProbe struct {
	Features []string          `json:"features,omitempty"`
	Missing  map[string]string `json:"missing,omitempty"`
}

func (c *ClockProbe) miss(feature, why string) {
	if c.Missing == nil {
		c.Missing = map[string]string{}
	}
	c.Missing[feature] = why
}

// ProbeClock runs machine b, for real, the way Launch would for a
// recording (Clock.Record, with the initial snapshot when snapshots says
// the board restores), on a program that reads its timer: running it is
// deterministic mode and record both working, and reverse-debug with the
// snapshot. Only if that fails does a second run on the plain instruction
// counter (Clock.Deterministic) decide deterministic mode. qemuImg is the
// qemu-img recordings need, "" when it is not installed.
func ProbeClock(ctx context.Context, binary string, b board.Board, snapshots bool, qemuImg, dir string) ClockProbe {
	var res ClockProbe
	fail := func(features []string, why string) {
		for _, f := range features {
			res.miss(f, why)
		}
	}
	im, ok := clockProbeImages[b.Arch]
	if !ok {
		fail(board.ClockFeatures, "no probe program for architecture "+b.Arch)
		return res
	}
	img := filepath.Join(dir, "clock.bin")
	if err := os.WriteFile(img, im.code, 0o600); err != nil {
		fail(board.ClockFeatures, err.Error())
		return res
	}
	run := func(sub string, c Clock) error {
		pdir := filepath.Join(dir, sub)
		if c.Record != "" {
			c.Record = pdir
			if err := os.MkdirAll(pdir, 0o700); err != nil {
				return err
			}
			if c.Snapshot {
				if err := createReplayImage(ctx, pdir); err != nil {
					return err
				}
			}
		}
		p, err := Start(ctx, Config{Binary: binary, Machine: b.Name, Dir: pdir, Arch: b.Arch, Ethernet: b.Ethernet, Clock: c,
			Firmware: Firmware{Path: img, Format: model.FormatBIN, LoadAddress: im.addr}})
		if err != nil {
			return err
		}
		defer p.Kill()
		return ranInsns(ctx, p, im.insns)
	}
	switch {
	case qemuImg == "":
		fail([]string{board.FeatureRecord, board.FeatureReverseDebug}, "recordings need qemu-img, which is not installed (Debian's qemu-utils)")
	case !snapshots:
		res.miss(board.FeatureReverseDebug, "reverse execution starts from a snapshot taken when recording begins, and this board's state does not restore on this QEMU (see snapshots)")
	}
	if qemuImg != "" {
		err := run("r", Clock{Record: "-", Snapshot: snapshots})
		if err == nil {
			res.Features = []string{board.FeatureDeterministic, board.FeatureRecord}
			if snapshots {
				res.Features = append(res.Features, board.FeatureReverseDebug)
			}
			return res
		}
		fail([]string{board.FeatureRecord, board.FeatureReverseDebug}, "recording failed: "+err.Error())
	}
	if err := run("d", Clock{Deterministic: true}); err != nil {
		res.miss(board.FeatureDeterministic, err.Error())
		return res
	}
	res.Features = []string{board.FeatureDeterministic}
	return res
}

// ranInsns resumes p and waits until its guest has executed n instructions
// on the instruction counter; QEMU ending first is the error, with its last
// words.
func ranInsns(ctx context.Context, p *Process, n int64) error {
	if _, err := p.QMP.Execute(ctx, "cont", nil); err != nil {
		return exitError(p, err)
	}
	for {
		ran, err := p.instructions(ctx)
		if err != nil {
			return exitError(p, err)
		}
		if ran >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the guest ran %d instructions, not %d: %w", ran, n, ctx.Err())
		case <-p.Done():
			return exitError(p, nil)
		case <-time.After(time.Millisecond):
		}
	}
}

// instructions is how many guest instructions QEMU has executed on its
// instruction counter (QMP query-replay, which answers in every mode); 0
// on the host clock.
func (p *Process) instructions(ctx context.Context) (int64, error) {
	raw, err := p.QMP.Execute(ctx, "query-replay", nil)
	if err != nil {
		return 0, fmt.Errorf("qemu: query-replay: %w", err)
	}
	var st struct {
		ICount int64 `json:"icount"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, fmt.Errorf("qemu: query-replay: %w", err)
	}
	return st.ICount, nil
}

// Instructions is how many guest instructions the machine has executed,
// on the instruction counter (Spec.Deterministic); the runner waits for it
// to stand still, the guest asleep, before it hands a deterministic guest
// console input.
func (m *machine) Instructions(ctx context.Context) (int64, error) { return m.p.instructions(ctx) }

// exitError is why a probed QEMU failed: its own last line when it ended.
func exitError(p *Process, err error) error {
	select {
	case <-p.Done():
		log := p.Log()
		if len(log) > 0 {
			return fmt.Errorf("%s: %s", p.ExitReason(), log[len(log)-1])
		}
		return errors.New(p.ExitReason())
	case <-time.After(100 * time.Millisecond):
		return err
	}
}

// ProbeClocks probes every board (ProbeClock), two at a time; snapshots
// says which restore. Results are cached in cacheDir per binary, boards
// and qemu-img, as the probe starts a QEMU per board.
func ProbeClocks(ctx context.Context, binary string, boards []board.Board, snapshots map[string]bool, cacheDir string) map[string]ClockProbe {
	out := map[string]ClockProbe{}
	fi, err := os.Stat(binary)
	if err != nil {
		return out
	}
	qemuImg, _ := exec.LookPath("qemu-img")
	key := fmt.Sprintf("%s|%d|%d|%s", binary, fi.Size(), fi.ModTime().UnixNano(), qemuImg)
	for _, b := range boards {
		key += fmt.Sprintf("|%s:%t", b.Name, snapshots[b.Name])
	}
	cache := filepath.Join(cacheDir, fmt.Sprintf("clock-probe-v1-%x.json", hashString(key)))
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &out) == nil {
		return out
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for _, b := range boards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := ClockProbe{}
			if dir, err := os.MkdirTemp("", "msc"); err != nil {
				r.miss(board.FeatureDeterministic, err.Error())
			} else {
				pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				r = ProbeClock(pctx, binary, b, snapshots[b.Name], qemuImg, dir)
				cancel()
				os.RemoveAll(dir)
			}
			mu.Lock()
			out[b.Name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if b, err := json.Marshal(out); err == nil {
		tmp := cache + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, cache)
		}
	}
	return out
}
