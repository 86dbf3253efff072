package e2e

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/machineserver/machineserver/runner/qemu"
	"github.com/machineserver/machineserver/runner/qmp"
	"github.com/machineserver/machineserver/shared/model"
)

// BenchmarkSnapshot measures, in one run, snapshot save (API call to stored)
// against a raw QMP migrate to a file, and restore (API call to the first
// UART byte of the restored, streaming firmware) against raw QEMU restoring
// the same kind of state cold (-incoming "exec:cat FILE") and pre-started
// (-incoming defer, then migrate-incoming). Each iteration times one raw
// migrate right after the API save, under the same conditions (one machine
// printing, the other quiet, nothing being restored or prelaunched), so load
// from elsewhere on the machine hits both alike.
func BenchmarkSnapshot(b *testing.B) {
	const board = "mps2-an385"
	fw, _ := filepath.Abs(firmware(b, board, "fw.elf"))
	raw := startRaw(b, board, fw)
	state := raw.state

	for _, form := range forms {
		b.Run(form.name, func(b *testing.B) {
			pl := form.start(b, "MS_LOG_LEVEL=warn")
			id := runningSession(b, pl, board)

			var save, rawSave, quiet, rawQuiet, restore, rawCold, rawDefer []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A machine that prints nothing (the firmware's idle loop),
				// then raw QEMU's likewise.
				t0 := time.Now()
				var snap map[string]any
				pl.must(b, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "quiet"}, &snap)
				quiet = append(quiet, time.Since(t0))
				rawQuiet = append(rawQuiet, raw.save(b, false))
				pl.must(b, 204, "DELETE", "/api/v1/snapshots/"+snap["id"].(string), nil, nil)

				// Snapshot a machine that is printing, so the restored one prints at once.
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("stream\r"), nil)
				time.Sleep(50 * time.Millisecond)
				t0 = time.Now()
				pl.must(b, 201, "POST", "/api/v1/sessions/"+id+"/snapshots", map[string]string{"name": "bench"}, &snap)
				save = append(save, time.Since(t0))

				// Quiet the source so the first byte after restore is the restored one.
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("x\r"), nil)
				// Raw QEMU's save right away, while the platform is as idle as
				// it was for the API save.
				rawSave = append(rawSave, raw.save(b, true))
				time.Sleep(20 * time.Millisecond)
				restore = append(restore, timeRestore(b, pl, id, snap["id"].(string)))
				// The restored machine streams again: quiet it while raw QEMU is timed.
				pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("x\r"), nil)

				rawCold = append(rawCold, rawRestore(b, board, fw, state, false))
				rawDefer = append(rawDefer, rawRestore(b, board, fw, state, true))
				pl.must(b, 204, "DELETE", "/api/v1/snapshots/"+snap["id"].(string), nil, nil)
			}
			b.StopTimer()
			pl.must(b, 200, "POST", "/api/v1/sessions/"+id+"/console", []byte("x\r"), nil)
			pl.must(b, 204, "DELETE", "/api/v1/sessions/"+id, nil, nil)
			report := func(name string, d []time.Duration) {
				b.ReportMetric(ms(percentile(d, 0.5)), name+"-p50-ms")
				b.ReportMetric(ms(percentile(d, 0.95)), name+"-p95-ms")
			}
			report("save", save)
			report("raw-migrate", rawSave)
			report("save-quiet", quiet)
			report("raw-migrate-quiet", rawQuiet)
			report("restore", restore)
			report("raw-incoming-cold", rawCold)
			report("raw-incoming-defer", rawDefer)
			b.ReportMetric(float64(percentile(save, 0.5))/float64(percentile(rawSave, 0.5)), "save-ratio-p50")
			b.ReportMetric(float64(percentile(save, 0.95))/float64(percentile(rawSave, 0.95)), "save-ratio-p95")
			b.ReportMetric(float64(percentile(quiet, 0.5))/float64(percentile(rawQuiet, 0.5)), "save-quiet-ratio-p50")
			b.ReportMetric(float64(percentile(quiet, 0.95))/float64(percentile(rawQuiet, 0.95)), "save-quiet-ratio-p95")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// timeRestore is POST /restore to the first restored byte at a WebSocket client.
func timeRestore(b *testing.B, pl *platform, id, sid string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := strings.Replace(pl.base, "http", "ws", 1) + "/api/v1/sessions/" + id + "/stream/console?offset=end"
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	t0 := time.Now()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(pl.base+"/api/v1/sessions/"+id+"/restore", "application/json", strings.NewReader(`{"snapshot_id":"`+sid+`"}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = http.ErrNotSupported
			}
		}
		done <- err
	}()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		// The idle source prints a tick line each second; skip one if it lands here.
		if !strings.HasPrefix(string(data), "tick") {
			break
		}
	}
	d := time.Since(t0)
	if err := <-done; err != nil {
		b.Fatalf("restore: %v", err)
	}
	return d
}

// rawMachine is raw QEMU running the benchmark's firmware, saved the plain
// way: stop, QMP migrate to "exec:cat > FILE" (QEMU 7.2 has no file: URI),
// poll query-migrate, cont.
type rawMachine struct {
	p     *qemu.Process
	state string // the last saved state
}

func startRaw(b *testing.B, board, fw string) *rawMachine {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "msb")
	b.Cleanup(func() { os.RemoveAll(dir) })
	p, err := qemu.Start(ctx, qemu.Config{Binary: "qemu-system-arm", Machine: board, Dir: filepath.Join(dir, "q"),
		Firmware: qemu.Firmware{Path: fw, Format: model.FormatELF}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Stop(time.Second) })
	go func() { // keep the UART drained
		r := bufio.NewReader(p.Console)
		for {
			if _, err := r.ReadByte(); err != nil {
				return
			}
		}
	}()
	p.QMP.Execute(ctx, "cont", nil)
	time.Sleep(100 * time.Millisecond)
	m := &rawMachine{p: p, state: filepath.Join(dir, "state")}
	m.save(b, true) // the restores need a state from the start
	return m
}

// save times one migration of the machine, while it prints if printing (as
// the API save is timed) and quiets it again.
func (m *rawMachine) save(b *testing.B, printing bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if printing {
		m.p.Console.Write([]byte("stream\r"))
		time.Sleep(50 * time.Millisecond)
	}
	t0 := time.Now()
	if err := m.p.Save(ctx, m.state, nil); err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	if printing {
		m.p.Console.Write([]byte("x\r"))
	}
	return d
}

func rawArgs(board, fw, qmpSock string) []string {
	return []string{"-M", board, "-display", "none", "-monitor", "none", "-serial", "stdio",
		"-semihosting-config", "enable=on,target=native", "-kernel", fw, "-qmp", "unix:" + qmpSock + ",server=on,wait=off"}
}

// rawRestore starts QEMU with -incoming arg and returns the time from t0 to
// the first UART byte: migrate-incoming if deferred, wait until the state
// is loaded, cont (a state saved from a paused machine loads paused). The
// clock starts before exec for a cold restore and before migrate-incoming
// for a pre-started one.
func rawRestore(b *testing.B, board, fw, state string, deferred bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "msr")
	defer os.RemoveAll(dir)
	q := filepath.Join(dir, "q.sock")
	incoming := "exec:cat " + state
	if deferred {
		incoming = "defer"
	}
	cmd := exec.Command("qemu-system-arm", append(rawArgs(board, fw, q), "-incoming", incoming)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	m, err := qmp.Dial(ctx, "unix", q)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if deferred {
		t0 = time.Now()
		if _, err := m.Execute(ctx, "migrate-incoming", map[string]string{"uri": "exec:cat " + state}); err != nil {
			b.Fatal(err)
		}
	}
	for {
		st, err := m.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st == "paused" || st == "running" {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	if _, err := m.Execute(ctx, "cont", nil); err != nil {
		b.Fatal(err)
	}
	if _, err := bufio.NewReader(out).ReadByte(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}
