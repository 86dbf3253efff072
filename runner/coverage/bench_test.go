package coverage_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/coverage"
	report "github.com/machineserver/machineserver/shared/coverage"
)

// BenchmarkOverhead runs the CPU-bound covbench.elf (about 1.2 G guest
// instructions) to its semihosting exit without coverage, with coverage
// (block counts, edges derived: the default) and with exact edges. Each
// iteration runs all three, rotating their order so machine noise spreads
// evenly; run it with -benchtime 10x or more. It reports the median wall
// time of each and the ratios to the run without coverage.
func BenchmarkOverhead(b *testing.B) {
	qemuBin := tool(b, "qemu-system-arm", "qemu-system-arm")
	elf := firmware(b, "netduino2", "covbench.elf")
	so := pluginPath(b)
	out := filepath.Join(b.TempDir(), "cov.dat")
	base := []string{"-M", "netduino2", "-display", "none", "-monitor", "none", "-serial", "null",
		"-semihosting-config", "enable=on,target=native", "-kernel", elf}
	variants := []struct {
		name string
		args []string
	}{
		{"plain", base},
		{"coverage", append(slices.Clip(base), "-plugin", "file="+so+",out="+out)},
		{"exact", append(slices.Clip(base), "-plugin", "file="+so+",out="+out+",edges=exact")},
	}
	times := make([][]time.Duration, len(variants))
	i := 0
	for b.Loop() {
		for k := range variants {
			v := (i + k) % len(variants)
			cmd := exec.Command(qemuBin, variants[v].args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				b.Fatalf("%s run: %v: %s", variants[v].name, err, stderr.String())
			}
			times[v] = append(times[v], time.Since(t0))
		}
		i++
	}
	plain := median(times[0])
	b.ReportMetric(float64(plain.Milliseconds()), "plain-ms")
	for v := 1; v < len(variants); v++ {
		m := median(times[v])
		b.ReportMetric(float64(m.Milliseconds()), variants[v].name+"-ms")
		b.ReportMetric(float64(m)/float64(plain), variants[v].name+"-x")
	}
	c, err := coverage.Read(filepath.Dir(out))
	if err != nil || len(c.Blocks) == 0 {
		b.Fatalf("the plugin wrote no counts: %v", err)
	}
	b.Logf("%d runs each; medians: plain %v, coverage %v, exact edges %v", len(times[0]), plain, median(times[1]), median(times[2]))
}

// BenchmarkOverheadByArch is BenchmarkOverhead for a RISC-V and an AVR
// board: the shell firmware's "work N" command (CPU-bound, then "done")
// without coverage, with block counts and with exact edges, rotating the
// order each iteration. N is sized for about a second of guest work on
// each. It measures QEMU's CPU time (user and system) from start to exit
// right after "done" rather than wall time: these QEMUs do not exit by
// themselves (AVR cannot), and CPU time is what a shared machine's other
// load disturbs least.
func BenchmarkOverheadByArch(b *testing.B) {
	for _, bc := range []struct {
		board, load, rounds string
	}{
		{"sifive_e", "-kernel", "80000000"},
		{"arduino-uno", "-bios", "6000000"},
	} {
		b.Run(bc.board, func(b *testing.B) {
			arch, qemuBin := archOf(b, bc.board)
			elf := firmware(b, bc.board, "fw.elf")
			out := filepath.Join(b.TempDir(), "cov.dat")
			base := []string{"-M", bc.board, "-display", "none", "-monitor", "none", "-serial", "stdio", bc.load, elf}
			plugin := "file=" + pluginPath(b) + ",out=" + out
			variants := []struct {
				name string
				args []string
			}{
				{"plain", base},
				{"coverage", append(slices.Clip(base), "-plugin", plugin)},
				{"exact", append(slices.Clip(base), "-plugin", plugin+",edges=exact")},
			}
			times := make([][]time.Duration, len(variants))
			i := 0
			for b.Loop() {
				for k := range variants {
					v := (i + k) % len(variants)
					times[v] = append(times[v], cpuForWork(b, qemuBin, variants[v].args, bc.rounds))
				}
				i++
			}
			plain := median(times[0])
			b.ReportMetric(float64(plain.Milliseconds()), "plain-cpu-ms")
			for v := 1; v < len(variants); v++ {
				m := median(times[v])
				b.ReportMetric(float64(m.Milliseconds()), variants[v].name+"-cpu-ms")
				b.ReportMetric(float64(m)/float64(plain), variants[v].name+"-x")
			}
			c, err := coverage.Read(filepath.Dir(out))
			if err != nil || len(c.Blocks) == 0 || c.Snapshot.Reason != "exit" {
				b.Fatalf("the plugin wrote no final counts on %s (%s): %v", bc.board, arch, err)
			}
			b.Logf("%s: %d runs each; median CPU times: plain %v, coverage %v, exact edges %v", bc.board, len(times[0]), plain, median(times[1]), median(times[2]))
		})
	}
}

// cpuForWork starts QEMU with the shell firmware on its stdio UART, sends
// "work rounds" once it is ready, ends QEMU with SIGTERM (on which the
// plugin writes its final counts) at "done", and returns the CPU time QEMU
// used.
func cpuForWork(b *testing.B, qemuBin string, args []string, rounds string) time.Duration {
	b.Helper()
	cmd := exec.Command(qemuBin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Process.Kill() // after a failure; a no-op once it has exited
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch {
		case strings.Contains(sc.Text(), "ready"):
			if _, err := io.WriteString(stdin, "work "+rounds+"\r"); err != nil {
				b.Fatal(err)
			}
		case strings.Contains(sc.Text(), "done"):
			cmd.Process.Signal(syscall.SIGTERM)
			go io.Copy(io.Discard, stdout) // QEMU may still be writing
			_ = cmd.Wait()                 // the signal's status; the final counts are checked after the runs
			return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
	}
	b.Fatalf("%s ended before \"done\": %v; stderr: %s", qemuBin, sc.Err(), stderr.String())
	return 0
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}

// BenchmarkReport measures turning the counts of one cov.elf run into every
// report: parse the counts, load the ELF and its DWARF, analyse, and write
// LCOV, JSON and the HTML zip (with source).
func BenchmarkReport(b *testing.B) {
	elf := firmware(b, "netduino2", "cov.elf")
	g := start(b, "netduino2", elfFirmware(elf), coverage.Options{})
	g.expect(b, "COV ready\r\n")
	g.send(b, "bxbq")
	g.waitExit(b, 0)
	raw, err := os.ReadFile(filepath.Join(g.dir, coverage.CountsFile))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c, err := report.Parse(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(elf)
		if err != nil {
			b.Fatal(err)
		}
		p, err := report.LoadELF(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		r := report.Analyze(p, c)
		if err := r.WriteLCOV(io.Discard, "bench"); err != nil {
			b.Fatal(err)
		}
		if err := r.WriteJSON(io.Discard); err != nil {
			b.Fatal(err)
		}
		if err := r.WriteHTMLZip(io.Discard, os.ReadFile); err != nil {
			b.Fatal(err)
		}
	}
}
