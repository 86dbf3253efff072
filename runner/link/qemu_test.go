package link_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/emulator"
	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/runner/link"
	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/shared/board"
	"github.com/machineserver/machineserver/shared/model"
)

// waitLimit only bounds how long a broken setup hangs a test; nothing is
// timed against it.
const waitLimit = time.Minute

// firmware is a built image of the linked-machine firmware
// (firmware/src/uartlink.c).
func firmware(t testing.TB, file string) string {
	t.Helper()
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = "../../build/firmware"
	}
	p, err := filepath.Abs(filepath.Join(dir, "mps2-an385", file))
	if err == nil {
		_, err = os.Stat(p)
	}
	if err != nil {
		t.Fatalf("test firmware missing (run make firmware, or set MS_TEST_FIRMWARE_DIR): %v", err)
	}
	return p
}

// shortDir is a fresh directory with a short path (unix socket paths are
// capped at 108 bytes), removed at the end.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// node is one machine launched by the runner's QEMU backend, paused, with
// its console watched.
type node struct {
	m       emulator.Machine
	console *emulatortest.Output
}

// launch starts elf on an mps2-an385 through the runner's backend, its
// NIC linked when nic is set.
func launch(t testing.TB, b *qemu.Backend, elf string, nic ...emulator.NIC) node {
	t.Helper()
	i := slices.IndexFunc(board.Known, func(k board.Board) bool { return k.Name == "mps2-an385" })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	spec := emulator.Spec{Board: board.Known[i], Dir: shortDir(t), Firmware: emulator.Firmware{Path: elf, Format: model.FormatELF}}
	if len(nic) > 0 {
		spec.NIC = &nic[0]
	}
	m, err := b.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill(); <-m.Done() })
	return node{m: m, console: emulatortest.Watch(m.Ports()["uart0"])}
}

func (n node) port(t testing.TB, name string) net.Conn {
	t.Helper()
	c := n.m.Ports()[name]
	if c == nil {
		t.Fatalf("no port %s", name)
	}
	return c
}

// linked launches uartping and uartpong, joins their uart1 ports with a
// link and resumes both.
func linked(t testing.TB, o link.Options) (ping, pong node, u *link.UART) {
	t.Helper()
	b := qemu.New(qemu.Options{Binaries: []string{"qemu-system-arm"}})
	ping = launch(t, b, firmware(t, "uartping.elf"))
	pong = launch(t, b, firmware(t, "uartpong.elf"))
	u, err := link.NewUART(ping.port(t, "uart1"), pong.port(t, "uart1"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	for _, n := range []node{pong, ping} {
		if err := n.m.Resume(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ping.console.Wait(t, 0, "uartping mps2-an385 ready\r\n")
	pong.console.Wait(t, 0, "uartpong mps2-an385 ready\r\n")
	return ping, pong, u
}

// lines are the whole lines o printed from offset from on that start with
// prefix.
func lines(o *emulatortest.Output, from int, prefix string) []string {
	var out []string
	s := o.Since(from)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// waitLines waits until o printed at least n lines starting with prefix
// from offset from on, and returns them.
func waitLines(t testing.TB, o *emulatortest.Output, from int, prefix string, n int) []string {
	t.Helper()
	limit := time.Now().Add(waitLimit)
	for {
		if l := lines(o, from, prefix); len(l) >= n {
			return l
		}
		if time.Now().After(limit) {
			t.Fatalf("fewer than %d %q lines; the console printed %q", n, prefix, o.Since(from))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// field is the i-th space-separated field of a line, as a number.
func field(t testing.TB, line string, i int) uint64 {
	t.Helper()
	f := strings.Fields(line)
	if i >= len(f) {
		t.Fatalf("line %q has no field %d", line, i)
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(f[i], "tx="), "rx="), 10, 64)
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return v
}

// command sends a console command and returns the first line it answers
// that starts with prefix.
func command(t testing.TB, n node, cmd, prefix string) string {
	t.Helper()
	from := n.console.Len()
	if _, err := n.port(t, "uart0").Write([]byte(cmd + "\r")); err != nil {
		t.Fatal(err)
	}
	return waitLines(t, n.console, from, prefix, 1)[0]
}

// rxQuiet asks n for its stats until its received count stops moving
// (twice the same, a ping period apart) and returns it: whatever the link
// delivered has been taken by the guest.
func rxQuiet(t testing.TB, n node) uint64 {
	t.Helper()
	last := field(t, command(t, n, "stats", "stats "), 2)
	for {
		time.Sleep(200 * time.Millisecond)
		rx := field(t, command(t, n, "stats", "stats "), 2)
		if rx == last {
			return rx
		}
		last = rx
	}
}

// Two real mps2-an385 machines exchange numbered messages over a link:
// round trips are reported; a down link makes the firmware's timeout path
// print and the answers stop; up again they resume; at loss 0.5 the share
// of bytes the answering firmware receives is half, within a tolerance.
func TestUARTLinkQEMU(t *testing.T) {
	ping, pong, u := linked(t, link.Options{Names: [2]string{"ping:uart1", "pong:uart1"}, Seed: 1})
	sub := u.Subscribe(64)

	// Round trips, with matching answers on the other side.
	rtts := waitLines(t, ping.console, 0, "rtt ", 3)
	for _, l := range rtts {
		n := field(t, l, 1)
		pong.console.Wait(t, 0, fmt.Sprintf("pong %d\r\n", n))
	}
	t.Logf("round trips: %q", rtts)
	// Live records: QEMU writes a guest's bytes one by one, so a PING
	// may come in several records.
	for live := ""; !strings.Contains(live, "PING "); {
		select {
		case r := <-sub.C:
			if r.From == "ping:uart1" {
				live += string(r.Data)
			}
		case <-time.After(waitLimit):
			t.Fatalf("no PING among the live records")
		}
	}
	sub.Cancel()
	// Joined per direction, as a message may be split across records.
	sent := map[string]string{}
	for _, r := range u.Capture(0) {
		sent[r.From] += string(r.Data)
	}
	if sawPing, sawPong := strings.Contains(sent["ping:uart1"], "PING "), strings.Contains(sent["pong:uart1"], "PONG "); !sawPing || !sawPong {
		t.Errorf("capture lacks a direction (PING %v, PONG %v): %+v", sawPing, sawPong, u.Capture(0))
	}

	// Down: timeouts, and the answering side hears nothing. A PING in
	// flight when the link went down may still be answered, so silence
	// is checked from the first timeout on.
	u.SetFaults(link.Faults{Down: true})
	mark := ping.console.Len()
	waitLines(t, ping.console, mark, "timeout ", 1)
	pingMark, pongMark := ping.console.Len(), pong.console.Len()
	timeouts := waitLines(t, ping.console, pingMark, "timeout ", 3)
	if l := lines(pong.console, pongMark, "pong "); len(l) > 0 {
		t.Errorf("pong answered over a down link: %q", l)
	}
	if l := lines(ping.console, pingMark, "rtt "); len(l) > 0 {
		t.Errorf("round trips over a down link: %q", l)
	}
	t.Logf("down: %q", timeouts)

	// Up: round trips resume.
	u.SetFaults(link.Faults{})
	pingMark, pongMark = ping.console.Len(), pong.console.Len()
	resumed := waitLines(t, ping.console, pingMark, "rtt ", 2)
	waitLines(t, pong.console, pongMark, "pong ", 2)
	if field(t, resumed[0], 1) <= field(t, timeouts[len(timeouts)-1], 1) {
		t.Errorf("numbering went back: %q after %q", resumed, timeouts)
	}
	t.Logf("up: %q", resumed)

	// Loss 0.5. The window is bounded by the link going down on both
	// sides, so the answering firmware's received count is exact: the
	// bytes the link took in the window against those the guest got.
	u.SetFaults(link.Faults{Down: true})
	rx0 := rxQuiet(t, pong)
	s0 := u.Stats().Directions[0]
	u.SetFaults(link.Faults{Loss: 0.5})
	mark = ping.console.Len()
	command(t, ping, "flood 4000", "flood sent")
	lossy := lines(ping.console, mark, "timeout ")
	// "flood sent" means the guest's UART took the bytes, not that the
	// link read them all: the last are cut only once it has.
	for deadline := time.Now().Add(10 * time.Second); u.Stats().Directions[0].Bytes-s0.Bytes < 4000 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	u.SetFaults(link.Faults{Down: true})
	rx1 := rxQuiet(t, pong)
	s1 := u.Stats().Directions[0]
	offered := (s1.Bytes - s1.Dropped + s1.Lost) - (s0.Bytes - s0.Dropped + s0.Lost)
	got := rx1 - rx0
	if got != s1.Delivered-s0.Delivered {
		t.Errorf("pong received %d bytes, the link delivered %d", got, s1.Delivered-s0.Delivered)
	}
	measured := 1 - float64(got)/float64(offered)
	t.Logf("loss 0.5: %d of %d bytes received, measured loss %.3f; %d timeouts meanwhile", got, offered, measured, len(lossy))
	// Over 4000 bytes the standard deviation is 0.008.
	if offered < 4000 || math.Abs(measured-0.5) > 0.05 {
		t.Errorf("measured loss %.3f over %d bytes, want 0.5 +- 0.05", measured, offered)
	}

	u.Close()
	if g := linkGoroutines(); len(g) > 0 {
		t.Errorf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
	if u.Err() != nil {
		t.Errorf("the link ended by itself: %v", u.Err())
	}
}
