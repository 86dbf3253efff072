package link_test

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/emulator/emulatortest"
	"github.com/machineserver/machineserver/runner/link"
)

// pair is a uartping and a uartpong machine joined one way or another,
// seen through their consoles.
type pair struct {
	name       string
	ping, pong net.Conn
	pingOut    *emulatortest.Output
	pongOut    *emulatortest.Output
}

// floodBytes is what one throughput sample sends: long enough that the
// console round trips around it are noise.
const floodBytes = 16 << 10

// BenchmarkUARTLink compares two mps2-an385 QEMUs joined through
// link.UART with two joined directly by a socket chardev (one the server,
// the other the client), all four running at once. Each iteration takes
// the next rttSamples round trips each pair's uartping reports (guest
// microseconds from PING to PONG) and then one flood of floodBytes per
// pair, one pair after the other in rotating order (host time from the
// command to uartpong's "flooded"). It reports the medians and the
// link's cost as ratios to the direct socket.
func BenchmarkUARTLink(b *testing.B) {
	ping, pong, _ := linked(b, link.Options{Names: [2]string{"ping:uart1", "pong:uart1"}})
	pairs := []pair{
		{name: "link", ping: ping.port(b, "uart0"), pong: pong.port(b, "uart0"), pingOut: ping.console, pongOut: pong.console},
		direct(b),
	}
	for _, p := range pairs {
		waitLines(b, p.pingOut, 0, "rtt ", 1)
	}
	const rttSamples = 5
	rtts := make([][]float64, len(pairs))
	rates := make([][]float64, len(pairs))
	i := 0
	for b.Loop() {
		marks := make([]int, len(pairs))
		for k, p := range pairs {
			marks[k] = p.pingOut.Len()
		}
		for k, p := range pairs {
			for _, l := range waitLines(b, p.pingOut, marks[k], "rtt ", rttSamples)[:rttSamples] {
				rtts[k] = append(rtts[k], float64(field(b, l, 2)))
			}
		}
		for j := range pairs {
			k := (i + j) % len(pairs)
			rates[k] = append(rates[k], flood(b, pairs[k]))
		}
		i++
	}
	median := func(v []float64) float64 {
		s := slices.Sorted(slices.Values(v))
		return s[len(s)/2]
	}
	for k, p := range pairs {
		b.ReportMetric(median(rtts[k]), p.name+"-rtt-us")
		b.ReportMetric(median(rates[k]), p.name+"-KiB/s")
	}
	b.ReportMetric(median(rtts[0])/median(rtts[1]), "rtt-x")
	b.ReportMetric(median(rates[0])/median(rates[1]), "throughput-x")
}

// flood has p's uartping send floodBytes and returns the rate at which
// uartpong received them, in KiB/s.
func flood(b *testing.B, p pair) float64 {
	b.Helper()
	from := p.pongOut.Len()
	t0 := time.Now()
	if _, err := fmt.Fprintf(p.ping, "flood %d\r", floodBytes); err != nil {
		b.Fatal(err)
	}
	p.pongOut.Wait(b, from, "flooded "+strconv.Itoa(floodBytes)+"\r\n")
	return floodBytes / 1024 / time.Since(t0).Seconds()
}

// direct starts uartpong and uartping as plain qemu-system-arm processes
// whose uart1 are one socket chardev: uartpong's listens, uartping's
// connects. The other options are the runner backend's for the board (the
// restricted user network included, as it changes how QEMU's main loop
// polls), minus QMP and the GDB stub, which carry nothing here. Each
// console is a socket chardev that connects to a listener of the test's,
// as the backend's do, so no output is lost.
func direct(b *testing.B) pair {
	b.Helper()
	dir := shortDir(b)
	linkSock := filepath.Join(dir, "l.sock")
	start := func(elf, name string, server bool) (net.Conn, *emulatortest.Output) {
		consock := filepath.Join(dir, name+".sock")
		ln, err := net.Listen("unix", consock)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		lk := "socket,id=lk,path=" + linkSock
		if server {
			lk += ",server=on,wait=off"
		}
		// The link chardev comes first: once the console has connected,
		// the server's link socket exists for the client.
		cmd := exec.Command("qemu-system-arm", "-M", "mps2-an385", "-display", "none", "-monitor", "none",
			"-chardev", lk, "-chardev", "socket,id=con,path="+consock,
			"-serial", "chardev:con", "-serial", "chardev:lk",
			"-nic", "user,restrict=on", "-semihosting-config", "enable=on,target=native",
			"-kernel", elf)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		b.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		c := acceptFrom(b, ln, name+"'s console", exited, &stderr)
		return c, emulatortest.Watch(c)
	}
	pong, pongOut := start(firmware(b, "uartpong.elf"), "pong", true)
	ping, pingOut := start(firmware(b, "uartping.elf"), "ping", false)
	pingOut.Wait(b, 0, "uartping mps2-an385 ready\r\n")
	pongOut.Wait(b, 0, "uartpong mps2-an385 ready\r\n")
	return pair{name: "direct", ping: ping, pong: pong, pingOut: pingOut, pongOut: pongOut}
}
