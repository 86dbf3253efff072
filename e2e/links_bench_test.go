package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// rttLine is uartping's report of one round trip, in guest microseconds
// (on the host clock, guest time follows the host's).
var rttLine = regexp.MustCompile(`rtt \d+ (\d+)\r\n`)

// rtts are the round trips reported in out past byte mark.
func rtts(out string, mark int) []float64 {
	var v []float64
	for _, m := range rttLine.FindAllStringSubmatch(out[min(mark, len(out)):], -1) {
		us, _ := strconv.ParseFloat(m[1], 64)
		v = append(v, us)
	}
	return v
}

// BenchmarkRunnerLink compares the round trip between two nodes joined by
// the runner's link (two sessions of the distributed platform: the pumps
// tee each port into the link through in-memory pipes) with two bare
// QEMUs joined directly by a socket chardev, all four running at once.
// Each iteration takes the next 5 round trips uartping reports on each
// pair; it reports the medians and their ratio.
func BenchmarkRunnerLink(b *testing.B) {
	pl := startDistributed(b)
	ids := map[string]string{}
	for _, fw := range []string{"uartping.elf", "uartpong.elf"} {
		prog := uploadELF(b, pl, "mps2-an385", fw)
		var s model.Session
		pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "bench", "board_config": map[string]string{"board": "mps2-an385"}}, &s)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+s.ID+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+s.ID+"/poweron", nil, nil)
		ids[fw] = s.ID
	}
	rc, err := runnerapi.NewClient(pl.runnerURL, runnerToken)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rc.PutLink(b.Context(), model.NewID(), runnerapi.LinkRequest{Ends: [2]runnerapi.LinkEnd{
		{Session: ids["uartping.elf"], Port: "uart1"}, {Session: ids["uartpong.elf"], Port: "uart1"}}}); err != nil {
		b.Fatal(err)
	}
	runner := func() string { out, _, _ := pl.console(b, ids["uartping.elf"], 0); return out }
	direct := directPair(b)

	sources := []func() string{runner, direct}
	var got [2][]float64
	const samples = 5
	for b.Loop() {
		var marks [2]int
		for k, src := range sources {
			marks[k] = len(src())
		}
		for k, src := range sources {
			deadline := time.Now().Add(time.Minute)
			for len(rtts(src(), marks[k])) < samples {
				if time.Now().After(deadline) {
					b.Fatalf("pair %d reported no round trips: %q", k, src())
				}
				time.Sleep(20 * time.Millisecond)
			}
			got[k] = append(got[k], rtts(src(), marks[k])[:samples]...)
		}
	}
	b.ReportMetric(medianF(got[0]), "runner-rtt-us")
	b.ReportMetric(medianF(got[1]), "direct-rtt-us")
	b.ReportMetric(medianF(got[0])/medianF(got[1]), "rtt-x")
	b.ReportMetric(0, "ns/op")
}

// directPair starts uartpong and uartping as bare QEMUs with the runner's
// options for the board, uart1 one socket chardev (uartpong's listens),
// and returns what uartping's console wrote so far (a file).
func directPair(b *testing.B) func() string {
	dir := shortDir(b, "lnk")
	sock := filepath.Join(dir, "l.sock")
	for _, fw := range []string{"uartpong.elf", "uartping.elf"} {
		lk := "socket,id=lk,path=" + sock
		if fw == "uartpong.elf" {
			lk += ",server=on,wait=off"
		}
		cmd := exec.Command("qemu-system-arm", "-M", "mps2-an385", "-display", "none", "-monitor", "none",
			"-chardev", lk, "-serial", "file:"+filepath.Join(dir, fw+".log"), "-serial", "chardev:lk",
			"-nic", "user,restrict=on", "-semihosting-config", "enable=on,target=native", "-kernel", firmware(b, "mps2-an385", fw))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(time.Minute); fw == "uartpong.elf"; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("uartpong's link socket never appeared")
			}
		}
	}
	return func() string {
		out, _ := os.ReadFile(filepath.Join(dir, "uartping.elf.log"))
		return string(out)
	}
}
