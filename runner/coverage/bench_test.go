package coverage_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
