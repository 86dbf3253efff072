package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/gdb/gdbtest"
	"github.com/machineserver/machineserver/runner/qemu"
)

// BenchmarkRecordSlowdown runs the CPU-bound covbench.elf on mps2-an385 to
// its semihosting exit plainly, recorded (as the runner records: icount,
// rr=record with the initial snapshot) and replayed, rotating the order
// each iteration; it reports median wall times and the ratios record/plain
// and replay/record, and the log's size.
func BenchmarkRecordSlowdown(b *testing.B) {
	elf := firmware(b, "mps2-an385", "covbench.elf")
	dir := b.TempDir()
	base := []string{"-M", "mps2-an385", "-display", "none", "-monitor", "none", "-serial", "null",
		"-semihosting-config", "enable=on,target=native", "-kernel", elf}
	icount := fmt.Sprintf("shift=%d,rrfile=%s,rrsnapshot=init", qemu.ICountShift, filepath.Join(dir, qemu.ReplayLog))
	drive := []string{"-drive", "file=" + filepath.Join(dir, qemu.ReplayImage) + ",if=none,id=replay"}
	run := func(name string, args ...string) time.Duration {
		cmd := exec.Command("qemu-system-arm", append(append([]string{}, base...), args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("%s: %v: %s", name, err, stderr.String())
		}
		return time.Since(t0)
	}
	var plain, rec, rep []time.Duration
	var logBytes int64
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			plain = append(plain, run("plain"))
		}
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, qemu.ReplayImage), "1M").CombinedOutput(); err != nil {
			b.Fatalf("qemu-img: %v: %s", err, out)
		}
		rec = append(rec, run("record", append([]string{"-icount", icount + ",rr=record"}, drive...)...))
		if fi, err := os.Stat(filepath.Join(dir, qemu.ReplayLog)); err == nil {
			logBytes = fi.Size()
		}
		rep = append(rep, run("replay", append([]string{"-icount", icount + ",rr=replay"}, drive...)...))
		if i%2 == 1 {
			plain = append(plain, run("plain"))
		}
	}
	p, r, y := median(plain), median(rec), median(rep)
	b.ReportMetric(float64(p.Milliseconds()), "plain-ms")
	b.ReportMetric(float64(r.Milliseconds()), "record-ms")
	b.ReportMetric(float64(y.Milliseconds()), "replay-ms")
	b.ReportMetric(float64(r)/float64(p), "record-x")
	b.ReportMetric(float64(y)/float64(r), "replay-vs-record-x")
	b.ReportMetric(float64(logBytes)/1024, "log-KiB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRecording records, through the platform, an mps2-an385 session
// that idles (a "tick" line a second) and one that prints flat out
// ("stream"), each for about two seconds of guest time (a recorded guest's
// clock follows the host's), and reports the stored size per guest second;
// then replays the printing one (replay time over recording time), and in
// a replay of a recording with "poke" in it times one reverse-stepi and one
// reverse-continue back across about a second of guest time.
func BenchmarkRecording(b *testing.B) {
	pl := startStandalone(b)
	elf := firmware(b, "mps2-an385", "fw.elf")
	code, body := pl.upload(b, "fw", "elf", elf, nil)
	if code != 201 {
		b.Fatalf("upload: %d %s", code, body)
	}
	prog := decode(b, body)["id"].(string)
	record := func(name string, hold time.Duration, input ...string) (rid string, size int64, took time.Duration) {
		var s map[string]any
		pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": name, "record": true, "board_config": map[string]string{"board": "mps2-an385"}}, &s)
		id := s["id"].(string)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
		for _, in := range input {
			pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte(in), nil)
		}
		time.Sleep(hold)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, &s)
		var rec struct {
			Size  int64 `json:"size"`
			Files []struct {
				Name string
				Size int64
			} `json:"files"`
			Duration string `json:"duration"`
		}
		pl.must(b, 200, "GET", "/api/v1/recordings/"+s["recording_id"].(string), nil, &rec)
		d, _ := time.ParseDuration(rec.Duration)
		for _, f := range rec.Files {
			if f.Name == qemu.ReplayLog {
				size = f.Size
			}
		}
		return s["recording_id"].(string), size, d
	}
	var quiet, loud, printed, replayX, rstepi, rcont []float64
	for b.Loop() {
		_, qs, qd := record("quiet", 2*time.Second)
		quiet = append(quiet, float64(qs)/qd.Seconds()/1024)
		rid, ls, ld := record("loud", 2*time.Second, "stream\r")
		loud = append(loud, float64(ls)/ld.Seconds()/1024)

		var rs map[string]any
		pl.must(b, 201, "POST", "/api/v1/recordings/"+rid+"/sessions", nil, &rs)
		t0 := time.Now()
		pl.must(b, 200, "POST", "/api/v1/sessions/"+rs["id"].(string)+"/poweron", nil, nil)
		// Not waitState's 20 s: QEMU replays a console write an event at a
		// time, and a guest printing flat out replays many times slower.
		var end map[string]any
		for deadline := time.Now().Add(5 * time.Minute); end == nil || end["state"] == "running" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			pl.must(b, 200, "GET", "/api/v1/sessions/"+rs["id"].(string), nil, &end)
		}
		if end["state"] != "stopped" {
			b.Fatalf("replay of the printing recording: %v", end)
		}
		replayX = append(replayX, float64(time.Since(t0))/float64(ld))
		printed = append(printed, float64(len(pl.must(b, 200, "GET", "/api/v1/recordings/"+rid+"/console", nil, nil)))/ld.Seconds()/1024)

		// poke, then ticks (a line a second): from the second tick after
		// poke, reverse-continue to poke crosses more than a second.
		rid, _, _ = record("poke", 3*time.Second, "poke\r")
		pl.must(b, 201, "POST", "/api/v1/recordings/"+rid+"/sessions", nil, &rs)
		dbg := rs["id"].(string)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+dbg+"/poweron?halted=true", nil, nil)
		var info gdbInfo
		pl.must(b, 200, "GET", "/api/v1/sessions/"+dbg+"/gdb", nil, &info)
		stamp := "python print('T=%f' % __import__('time').time())"
		out, err := gdbtest.GDBFor(context.Background(), b, elf, info.TCP,
			"break main.c:"+strconv.Itoa(sourceLine(b, "POKE-LINE")), "continue", "delete",
			"break main.c:"+strconv.Itoa(sourceLine(b, "printed = now;")), "continue", "continue", "delete",
			"watch victim", stamp, "reverse-stepi", stamp, "reverse-continue", stamp, "bt 1", "detach")
		ts := regexp.MustCompile(`T=([0-9.]+)`).FindAllStringSubmatch(out, -1)
		if len(ts) != 3 || !strings.Contains(out, " in poke (") {
			b.Fatalf("gdb (err %v):\n%s", err, out)
		}
		t := func(i int) float64 { v, _ := strconv.ParseFloat(ts[i][1], 64); return v }
		rstepi = append(rstepi, (t(1)-t(0))*1000)
		rcont = append(rcont, (t(2)-t(1))*1000)
		pl.must(b, 204, "DELETE", "/api/v1/sessions/"+dbg, nil, nil)
	}
	b.ReportMetric(medianF(quiet), "quiet-KiB/guest-s")
	b.ReportMetric(medianF(loud), "printing-KiB/guest-s")
	b.ReportMetric(medianF(printed), "console-KiB/s")
	b.ReportMetric(medianF(replayX), "replay-vs-record-x")
	b.ReportMetric(medianF(rstepi), "reverse-stepi-ms")
	b.ReportMetric(medianF(rcont), "reverse-continue-ms")
	b.ReportMetric(0, "ns/op")
}

func median(d []time.Duration) time.Duration { return percentile(d, 0.5) }

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
