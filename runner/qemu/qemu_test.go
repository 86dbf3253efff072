package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

func sockDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "mq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testFirmware(t testing.TB, boardName, file string) string {
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../../build/firmware"
	}
	p := filepath.Join(dir, boardName, file)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test firmware missing (run make firmware): %v", err)
	}
	abs, _ := filepath.Abs(p)
	return abs
}

func TestDiscover(t *testing.T) {
	p, err := Discover(context.Background(), "qemu-system-arm")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Version, "7.") || !slices.Contains(p.Machines, "netduino2") || !slices.Contains(p.CPUs, "cortex-m3") {
		t.Fatalf("probe: version %q, %d machines, %d cpus", p.Version, len(p.Machines), len(p.CPUs))
	}
	if slices.Contains(p.Machines, "Supported") || slices.Contains(p.CPUs, "Available") {
		t.Fatal("header parsed as an entry")
	}
	if _, err := Discover(context.Background(), "no-such-qemu"); err == nil {
		t.Fatal("missing binary not reported")
	}
}

// TestCatalogMatchesBinary checks the catalog's memory maps against what the
// installed QEMU really builds (info mtree), board by board.
func TestCatalogMatchesBinary(t *testing.T) {
	p, err := Discover(context.Background(), "qemu-system-arm")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range board.Known {
		if !slices.Contains(p.Machines, b.Name) {
			continue
		}
		t.Run(b.Name, func(t *testing.T) {
			dir := sockDir(t)
			q := filepath.Join(dir, "q.sock")
			cmd := exec.Command("qemu-system-arm", "-M", b.Name, "-S", "-display", "none", "-monitor", "none",
				"-serial", "null", "-qmp", "unix:"+q+",server=on,wait=off")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := qmp.Dial(ctx, "unix", q)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			tree, err := m.HumanCommand(ctx, "info mtree -f")
			if err != nil {
				t.Fatal(err)
			}
			for what, r := range map[string]model.Region{"flash": b.Flash, "ram": b.RAM} {
				want := fmt.Sprintf("%016x-%016x", r.Base, r.End()-1)
				if !strings.Contains(tree, want) {
					t.Errorf("%s %s not in the machine's memory map:\n%s", what, want, firstLines(tree, 40))
				}
			}
		})
	}
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// startELF starts QEMU paused on machine with an ELF image.
func startELF(ctx context.Context, t *testing.T, machine, fw string) *Process {
	t.Helper()
	p, err := Start(ctx, Config{Binary: "qemu-system-arm", Machine: machine, Dir: sockDir(t),
		Firmware: Firmware{Path: fw, Format: model.FormatELF}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartConsoleStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := startELF(ctx, t, "netduino2", testFirmware(t, "netduino2", "fw.elf"))
	if st, _ := p.QMP.Status(ctx); st != "prelaunch" {
		t.Fatalf("status before cont: %q", st)
	}
	if _, err := p.QMP.Execute(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(p.Console).ReadString('\n')
	if err != nil || !strings.Contains(line, "MS-TEST-FW netduino2 ready") {
		t.Fatalf("banner: %q %v", line, err)
	}
	p.Stop(2 * time.Second)
	if p.ExitReason() == "running" {
		t.Fatal("still running after Stop")
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("graceful quit should exit 0: %v", err)
	}
	if alive(p.Pid()) {
		t.Fatal("process still exists")
	}
}

// TestStopKillsWedgedProcess: when QMP is gone and SIGTERM is ignored the
// group still dies by SIGKILL.
func TestStopEscalates(t *testing.T) {
	p := startELF(context.Background(), t, "netduino2", testFirmware(t, "netduino2", "fw.elf"))
	p.QMP.Close() // no graceful path left
	start := time.Now()
	p.Stop(200 * time.Millisecond)
	if alive(p.Pid()) {
		t.Fatal("process survived Stop")
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("did not wait the grace period before signalling")
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	fw := testFirmware(t, "netduino2", "fw.elf")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Start(ctx, Config{Binary: "qemu-system-arm", Machine: "nosuchboard", Dir: sockDir(t),
		Firmware: Firmware{Path: fw, Format: model.FormatELF}})
	if err == nil || !strings.Contains(err.Error(), "unsupported machine type") || !strings.Contains(err.Error(), "exited with status 1") {
		t.Fatalf("want QEMU's own reason, got %v", err)
	}
	for _, c := range []Config{
		{Binary: "qemu-system-arm", Machine: "netduino2", Dir: "relative", Firmware: Firmware{Path: fw, Format: model.FormatELF}},
		{Binary: "qemu-system-arm", Machine: "netduino2", Dir: "/tmp/" + strings.Repeat("x", 120), Firmware: Firmware{Path: fw, Format: model.FormatELF}},
		{Binary: "qemu-system-arm", Machine: "netduino2,x=y", Dir: "/tmp/a", Firmware: Firmware{Path: fw, Format: model.FormatELF}},
		{Binary: "qemu-system-arm", Machine: "netduino2", Dir: "/tmp/a", Firmware: Firmware{Path: "/nonexistent", Format: model.FormatELF}},
		{Binary: "qemu-system-arm", Machine: "netduino2", Dir: "/tmp/a", Firmware: Firmware{Path: fw, Format: "srec"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("config accepted: %+v", c)
		}
	}
}

func TestArgsPerFormat(t *testing.T) {
	c := Config{Machine: "mps2-an385", Dir: "/tmp/d", Firmware: Firmware{Path: "/f.bin", Format: model.FormatBIN, LoadAddress: 0x100}}
	a := strings.Join(c.Args(), " ")
	if !strings.Contains(a, "-device loader,file=/f.bin,addr=0x100") || strings.Contains(a, "-kernel") {
		t.Fatalf("bin args: %s", a)
	}
	c.Firmware = Firmware{Path: "/f.hex", Format: model.FormatHEX}
	if a := strings.Join(c.Args(), " "); !strings.Contains(a, "-device loader,file=/f.hex") || strings.Contains(a, "-kernel") {
		t.Fatalf("hex args: %s", a)
	}
	c.Firmware = Firmware{Path: "/f.elf", Format: model.FormatELF}
	if a := strings.Join(Config{Machine: "mps2-an385", Dir: "/tmp/d", Ethernet: true}.Args(), " "); !strings.Contains(a, "-nic user,restrict=on") {
		t.Fatalf("a board with a NIC is not isolated: %s", a)
	}
	if a := strings.Join(c.Args(), " "); !strings.Contains(a, "-kernel /f.elf") || !strings.Contains(a, " -S ") || strings.Contains(a, "-nic") {
		t.Fatalf("elf args: %s", a)
	}
}

func alive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
