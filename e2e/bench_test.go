package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rawColdStart execs qemu-system-arm -kernel like a user would by hand and
// times exec to the first UART byte.
func rawColdStart(b *testing.B, board, fw string) time.Duration {
	args := []string{"-M", board, "-display", "none", "-monitor", "none", "-serial", "stdio"}
	bin := "qemu-system-arm"
	switch board {
	case "sifive_e":
		bin = "qemu-system-riscv32"
		args = append(args, "-semihosting-config", "enable=on,target=native", "-kernel", fw)
	case "arduino-uno":
		bin = "qemu-system-avr"
		args = append(args, "-bios", fw)
	default:
		args = append(args, "-semihosting-config", "enable=on,target=native", "-kernel", fw)
	}
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReader(out)
	if _, err := r.ReadByte(); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	cmd.Process.Kill()
	cmd.Wait()
	return d
}

// BenchmarkPowerOnToFirstByte compares, in one run, raw QEMU cold start (exec
// to first UART byte) with POST /poweron to the first byte at a WebSocket
// client, on both forms of the platform, cold (QEMU exec'd by the power on)
// and prelaunched (a paused QEMU kept ready, the default), and the idle PSS
// of a running session: for mps2-an385 on both forms, and for a RISC-V and
// an AVR board on the standalone form. (The AVR guest polls, as QEMU 7.2's
// AVR core never wakes from SLEEP, so its "idle" PSS is of a busy guest.)
func BenchmarkPowerOnToFirstByte(b *testing.B) {
	type form struct {
		name  string
		start func(testing.TB, ...string) *platform
		env   string
	}
	forms := []form{
		{"standalone-cold", startStandalone, "MS_PRELAUNCH=false"},
		{"standalone-prelaunched", startStandalone, "MS_PRELAUNCH=true"},
		{"distributed-cold", startDistributed, "MS_PRELAUNCH=false"},
		{"distributed-prelaunched", startDistributed, "MS_PRELAUNCH=true"},
	}
	for _, bf := range []struct {
		board string
		forms []form
	}{{"mps2-an385", forms}, {"sifive_e", forms[:2]}, {"arduino-uno", forms[:2]}} {
		for _, form := range bf.forms {
			powerOnBench(b, bf.board, form.name, form.start, form.env)
		}
	}
}

func powerOnBench(b *testing.B, board, name string, start func(testing.TB, ...string) *platform, env string) {
	fw := firmware(b, board, "fw.elf")
	b.Run(board+"/"+name, func(b *testing.B) {
		pl := start(b, "MS_LOG_LEVEL=warn", env)
		code, body := pl.upload(b, "bench", "elf", fw, nil)
		if code != 201 {
			b.Fatalf("upload: %d %s", code, body)
		}
		prog := decode(b, body)["id"].(string)
		var s map[string]any
		pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "bench", "board_config": map[string]string{"board": board}}, &s)
		id := s["id"].(string)
		pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)

		var raw, plat []time.Duration
		var pss int
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			raw = append(raw, rawColdStart(b, board, fw))

			// Connect at the end of the history so the first frame is new output.
			u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/sessions/" + id + "/stream/console?offset=end"
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c, _, err := websocket.Dial(ctx, u, nil)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			resp, err := http.Post(pl.base+"/api/v1/sessions/"+id+"/poweron", "", nil)
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("poweron: %v %v", err, resp)
			}
			resp.Body.Close()
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
			plat = append(plat, time.Since(start))
			c.CloseNow()
			cancel()
			if i == 0 {
				time.Sleep(2 * time.Second) // idle: the firmware sleeps in WFI
				pss = emulatorPSS(b, pl.socketDir)
			}
			pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
		}
		b.StopTimer()
		b.ReportMetric(ms(percentile(raw, 0.5)), "raw-p50-ms")
		b.ReportMetric(ms(percentile(raw, 0.95)), "raw-p95-ms")
		b.ReportMetric(ms(percentile(plat, 0.5)), "platform-p50-ms")
		b.ReportMetric(ms(percentile(plat, 0.95)), "platform-p95-ms")
		b.ReportMetric(float64(percentile(plat, 0.5))/float64(percentile(raw, 0.5)), "ratio-p50")
		b.ReportMetric(float64(percentile(plat, 0.95))/float64(percentile(raw, 0.95)), "ratio-p95")
		b.ReportMetric(float64(pss), "idle-session-PSS-KiB")
		b.ReportMetric(0, "ns/op")
		pl.must(b, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	})
}

// emulatorPSS is the proportional set size of the platform's one emulator.
func emulatorPSS(b *testing.B, dir string) int {
	pids := emulators(dir)
	if len(pids) != 1 {
		b.Fatalf("want one emulator, have %v", pids)
	}
	return pssKiB(b, pids[0])
}

// pssKiB is a process's proportional set size: its private pages plus its
// share of the pages it maps with others (QEMU's libraries, mostly).
func pssKiB(b *testing.B, pid int) int {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(f), "\n") {
		if strings.HasPrefix(line, "Pss:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	b.Fatal("no Pss in smaps_rollup")
	return 0
}

// BenchmarkIdleSessions measures what an idle session costs a runner in
// memory: the PSS of all emulator processes of N idle sessions, spares
// included, divided by N, and how many such sessions fit in 24 GiB against
// the goal of 500 (emulators only: the runner's own memory is not
// counted). Idle is running firmware asleep in WFI, alone or with the
// incoming spare of a session that took a snapshot, or stopped after a
// snapshot (a cold and an incoming spare). The spare budget is set high
// enough to keep every spare: this is the cost per session before the
// budget bounds it.
func BenchmarkIdleSessions(b *testing.B) {
	const n, board, goal = 20, "mps2-an385", 500
	for _, c := range []struct {
		name           string
		snapshot, stop bool
		procs          int // per session
	}{
		{"running", false, false, 1},
		{"running-snapshotted", true, false, 2},
		{"stopped-snapshotted", true, true, 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			pl := startStandalone(b, "MS_LOG_LEVEL=warn", "MS_IDLE_TIMEOUT=0", fmt.Sprint("MS_QUOTA_SESSIONS=", n),
				fmt.Sprint("MS_RUNNER_CAPACITY=", 2*n), fmt.Sprint("MS_RUNNER_SPARES=", 2*n))
			code, body := pl.upload(b, "idle", "elf", firmware(b, board, "fw.elf"), nil)
			if code != 201 {
				b.Fatalf("upload: %d %s", code, body)
			}
			prog := decode(b, body)["id"].(string)
			for range n {
				var s map[string]any
				pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "idle", "board_config": map[string]string{"board": board}}, &s)
				id := s["id"].(string)
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/program", map[string]string{"program_id": prog}, nil)
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweron", nil, nil)
				cs := pl.dialConsole(b, id, "")
				cs.waitFor(b, "ready", 1)
				cs.c.CloseNow()
				if c.snapshot {
					pl.must(b, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "idle"}, nil)
				}
				if c.stop {
					pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/poweroff", nil, nil)
				}
				waitEmulators(b, pl.socketDir+"/"+id, c.procs)
			}
			time.Sleep(2 * time.Second) // idle: the firmware sleeps in WFI between ticks
			var kib float64
			b.ResetTimer()
			for range b.N {
				pids := emulators(pl.socketDir)
				if len(pids) != n*c.procs {
					b.Fatalf("%d emulators for %d sessions, want %d", len(pids), n, n*c.procs)
				}
				for _, pid := range pids {
					kib += float64(pssKiB(b, pid))
				}
			}
			b.StopTimer()
			perSession := kib / float64(b.N) / n / 1024
			fits := 24 * 1024 / perSession
			b.ReportMetric(perSession, "PSS-MiB/session")
			b.ReportMetric(fits, "sessions/24GiB")
			b.ReportMetric(fits/goal, "of-goal-500")
			b.ReportMetric(0, "ns/op")
			b.Logf("%d sessions %s: %.1f MiB PSS each (%d QEMU each): %.0f per 24 GiB runner, goal %d", n, c.name, perSession, c.procs, fits, goal)
		})
	}
}

// BenchmarkGetSessionAt200rps measures GET /api/v1/sessions/{id} latency
// under an open-loop load of 200 requests per second.
func BenchmarkGetSessionAt200rps(b *testing.B) {
	for _, form := range forms {
		b.Run(form.name, func(b *testing.B) {
			pl := form.start(b, "MS_LOG_LEVEL=warn")
			var s map[string]any
			pl.must(b, 201, "POST", "/api/v1/sessions", map[string]any{"name": "lat", "board_config": map[string]string{"board": "netduino2"}}, &s)
			url := pl.base + "/api/v1/sessions/" + s["id"].(string)
			client := &http.Client{Transport: keyTransport{&http.Transport{MaxIdleConnsPerHost: 64}}}
			// One op is one request; ops are paced at 200/s (open loop), so
			// -benchtime 1000x is 5 s of load.
			const rate = 200
			var mu sync.Mutex
			var wg sync.WaitGroup
			var lat []time.Duration
			tick := time.NewTicker(time.Second / rate)
			b.ResetTimer()
			for range b.N {
				<-tick.C
				wg.Add(1)
				go func() {
					defer wg.Done()
					t0 := time.Now()
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}()
			}
			wg.Wait()
			tick.Stop()
			b.StopTimer()
			b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkConsoleFlood measures what a guest that prints flat out costs:
// the CPU of the standalone process (the runner's console pump and
// everything else) and of QEMU, as percent of one core, over one second per
// iteration, with the bytes that reached the console ring per second; with
// the default gathering of output between reads and with none.
func BenchmarkConsoleFlood(b *testing.B) {
	for _, gather := range []string{"1ms", "0"} {
		b.Run("gather-"+gather, func(b *testing.B) { consoleFlood(b, "MS_CONSOLE_GATHER="+gather) })
	}
}

func consoleFlood(b *testing.B, env string) {
	pl := startStandalone(b, "MS_LOG_LEVEL=warn", env)
	id := runningSession(b, pl, "mps2-an385")
	pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("stream\r"), nil)
	time.Sleep(200 * time.Millisecond)
	qemus := emulators(pl.socketDir + "/" + id)
	if len(qemus) != 1 {
		b.Fatalf("want the session's one emulator, found %v", qemus)
	}
	self := pl.procs[0].cmd.Process.Pid
	// Where the console ring ends: the next offset after its newest byte.
	end := func() int64 {
		req, _ := http.NewRequest("GET", pl.base+"/api/v1/sessions/"+id+"/console?limit=1&offset=999999999999", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		n, err := strconv.ParseInt(resp.Header.Get("X-Console-Next-Offset"), 10, 64)
		if err != nil {
			b.Fatalf("console end: %d %v", resp.StatusCode, err)
		}
		return n
	}
	var platform, qemu, bytes float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p0, q0, e0 := cpuSeconds(b, self), cpuSeconds(b, qemus[0]), end()
		time.Sleep(time.Second)
		platform += 100 * (cpuSeconds(b, self) - p0)
		qemu += 100 * (cpuSeconds(b, qemus[0]) - q0)
		bytes += float64(end() - e0)
	}
	b.StopTimer()
	pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("x\r"), nil)
	pl.must(b, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
	n := float64(b.N)
	b.ReportMetric(platform/n, "platform-cpu-%")
	b.ReportMetric(qemu/n, "qemu-cpu-%")
	b.ReportMetric(bytes/n/1024, "console-KiB/s")
	b.ReportMetric(0, "ns/op")
}
