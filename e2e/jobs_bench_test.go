package e2e

import (
	"bufio"
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/machineserver/machineserver/shared/model"
)

// rawJob is what a job does, done by hand: exec QEMU with the firmware,
// read the serial port on stdio until the pass pattern, kill it.
func rawJob(b *testing.B, board, fw string, pattern []byte) time.Duration {
	start := time.Now()
	cmd := exec.Command("qemu-system-arm", "-M", board, "-display", "none", "-monitor", "none",
		"-semihosting-config", "enable=on,target=native", "-serial", "stdio", "-kernel", fw)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReader(out)
	var seen []byte
	for !bytes.Contains(seen, pattern) {
		c, err := r.ReadByte()
		if err != nil {
			b.Fatalf("raw qemu ended before %q: %v (%q)", pattern, err, seen)
		}
		seen = append(seen, c)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return time.Since(start)
}

// BenchmarkJobs measures short test jobs end to end (enqueue to result
// stored, from the job's own timestamps) against raw QEMU running the same
// firmware to the same pass pattern in the same run. One op is one job:
// first b.N jobs one at a time, each paired with a raw run (latency and the
// queue's overhead per job), then b.N jobs submitted at once (throughput
// with MS_JOB_WORKERS workers).
func BenchmarkJobs(b *testing.B) {
	const board = "netduino2"
	const pattern = "MS-TEST-FW netduino2 ready"
	fw := firmware(b, board, "fw.elf")
	for _, form := range forms {
		b.Run(form.name, func(b *testing.B) {
			pl := form.start(b, "MS_LOG_LEVEL=warn", "MS_JOB_WORKERS=2")
			prog := uploadFW(b, pl, board)
			spec := model.JobSpec{ProgramID: prog, BoardConfig: model.BoardConfig{Board: board}, PassPattern: pattern, Timeout: "20s"}
			submit := func() string {
				var j model.Job
				pl.must(b, 201, "POST", "/api/v1/jobs", spec, &j)
				return j.ID
			}
			took := func(id string) (model.Job, time.Duration) {
				j := pl.waitJob(b, id)
				if j.State != model.JobPassed {
					b.Fatalf("bench job: %+v", j)
				}
				return j, j.FinishedAt.Sub(j.CreatedAt)
			}
			submit() // warm up: the first job of a process pays for connections
			var raw, plat, over []time.Duration
			b.ResetTimer()
			for range b.N {
				r := rawJob(b, board, fw, []byte(pattern))
				_, p := took(submit())
				raw, plat, over = append(raw, r), append(plat, p), append(over, p-r)
				// The worker deletes the session after storing the result;
				// let that finish so the next raw run has the CPU to itself.
				waitNoEmulators(b, pl)
			}
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = submit()
			}
			var first, last time.Time
			for _, id := range ids {
				j, _ := took(id)
				if first.IsZero() || j.CreatedAt.Before(first) {
					first = j.CreatedAt
				}
				if j.FinishedAt.After(last) {
					last = *j.FinishedAt
				}
			}
			b.StopTimer()
			b.ReportMetric(ms(percentile(raw, 0.5)), "raw-p50-ms")
			b.ReportMetric(ms(percentile(plat, 0.5)), "job-p50-ms")
			b.ReportMetric(ms(percentile(plat, 0.95)), "job-p95-ms")
			b.ReportMetric(ms(percentile(over, 0.5)), "overhead-p50-ms")
			b.ReportMetric(ms(percentile(over, 0.95)), "overhead-p95-ms")
			b.ReportMetric(float64(b.N)/last.Sub(first).Minutes(), "jobs/min")
			b.ReportMetric(0, "ns/op")
		})
	}
}
