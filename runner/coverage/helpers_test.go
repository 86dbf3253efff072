package coverage_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/qemu"
	catalog "github.com/machineserver/machineserver/shared/board"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/model"
)

// testTimeout only guards against a hung QEMU.
const testTimeout = 60 * time.Second

var boards = []struct{ name, flash string }{
	{"netduino2", "0x08000000"},
	{"mps2-an385", "0"},
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = filepath.Dir(dir)
	}
}

func pluginPath(t testing.TB) string {
	t.Helper()
	p, err := coverage.Locate()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// firmware is a built test image: make firmware (or MS_TEST_FIRMWARE_DIR).
func firmware(t testing.TB, board, name string) string {
	t.Helper()
	dir := os.Getenv("MS_TEST_FIRMWARE_DIR")
	if dir == "" {
		dir = filepath.Join(moduleRoot(t), "build", "firmware")
	}
	p, err := filepath.Abs(filepath.Join(dir, board, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test firmware missing (run make firmware, or set MS_TEST_FIRMWARE_DIR): %v", err)
	}
	return p
}

func tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (apt-get install %s): %v", name, pkg, err)
	}
	return p
}

// shortDir is an instance directory short enough for unix sockets.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mcov")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// markers maps each COV:<name> marker of covtest.c to its line.
func markers(t testing.TB) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "firmware", "src", "covtest.c"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	re := regexp.MustCompile(`COV:([a-z-]+)`)
	for i, l := range strings.Split(string(b), "\n") {
		if s := re.FindStringSubmatch(l); s != nil {
			m[s[1]] = i + 1
		}
	}
	return m
}

// guest is a running QEMU with the coverage plugin and its UART.
type guest struct {
	p   *qemu.Process
	dir string

	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{}
}

// archOf is a catalog board's architecture and the QEMU binary that runs it.
func archOf(t testing.TB, name string) (arch, binary string) {
	t.Helper()
	for _, k := range catalog.Known {
		if k.Name == name {
			pkg := "qemu-system-misc"
			if k.Arch == catalog.ArchARM {
				pkg = "qemu-system-arm"
			}
			return k.Arch, tool(t, "qemu-system-"+k.Arch, pkg)
		}
	}
	t.Fatalf("board %s is not in the catalog", name)
	return "", ""
}

func start(t testing.TB, board string, fw qemu.Firmware, o coverage.Options) *guest {
	t.Helper()
	arch, binary := archOf(t, board)
	g := &guest{dir: shortDir(t), changed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	p, err := qemu.Start(ctx, qemu.Config{
		Binary: binary, Arch: arch, Machine: board, Dir: g.dir, Firmware: fw,
		Plugins: []qemu.Plugin{{Path: pluginPath(t), Args: coverage.PluginArgs(g.dir, o)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g.p = p
	t.Cleanup(func() { p.Kill(); p.Wait() })
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := p.Console.Read(buf)
			g.mu.Lock()
			g.out.Write(buf[:n])
			close(g.changed)
			g.changed = make(chan struct{})
			g.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if _, err := p.QMP.Execute(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	return g
}

// expect waits until the UART output contains want.
func (g *guest) expect(t testing.TB, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for {
		g.mu.Lock()
		out, changed := g.out.String(), g.changed
		g.mu.Unlock()
		if strings.Contains(out, want) {
			return
		}
		select {
		case <-changed:
		case <-g.p.Done():
			t.Fatalf("QEMU exited (%s) before the UART said %q; it said %q; QEMU: %s", g.p.ExitReason(), want, out, g.p.Output())
		case <-ctx.Done():
			t.Fatalf("waiting for %q on the UART, got %q", want, out)
		}
	}
}

func (g *guest) send(t testing.TB, s string) {
	t.Helper()
	if _, err := g.p.Console.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// snapshot flushes and reads the counts of the running guest.
func (g *guest) snapshot(t testing.TB) report.Counts {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	// Paused for the flush: counters read while the guest runs are each
	// right but not consistent with each other (a polling AVR guest never
	// sleeps), and tests compare block counts with edge counts.
	if _, err := g.p.QMP.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	if err := coverage.Flush(ctx, g.dir); err != nil {
		t.Fatal(err)
	}
	c := g.read(t)
	if _, err := g.p.QMP.Execute(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func (g *guest) read(t testing.TB) report.Counts {
	t.Helper()
	c, err := coverage.Read(g.dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitExit waits for QEMU to end and checks its exit status.
func (g *guest) waitExit(t testing.TB, code int) {
	t.Helper()
	select {
	case <-g.p.Done():
	case <-time.After(testTimeout):
		t.Fatal("QEMU did not exit")
	}
	if g.p.ExitCode() != code {
		t.Fatalf("QEMU: %s, want status %d; output: %s", g.p.ExitReason(), code, g.p.Output())
	}
}

func loadELF(t testing.TB, path string) *report.Program {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := report.LoadELF(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// covFile is the report of covtest.c.
func covFile(t *testing.T, r *report.Report) report.FileReport {
	t.Helper()
	for _, f := range r.Files {
		if strings.HasSuffix(f.Path, "/covtest.c") {
			return f
		}
	}
	t.Fatalf("no covtest.c in the report; files: %v", r.Files)
	return report.FileReport{}
}

func lineCount(t *testing.T, f report.FileReport, line int) uint64 {
	t.Helper()
	for _, l := range f.Lines {
		if l.Line == line {
			return l.Count
		}
	}
	t.Fatalf("line %d has no code in %s", line, f.Path)
	return 0
}

func branchesAt(t *testing.T, f report.FileReport, line int) []report.BranchCount {
	t.Helper()
	var out []report.BranchCount
	for _, b := range f.Branches {
		if b.Line == line {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no conditional branch on line %d of %s", line, f.Path)
	}
	return out
}

func function(t *testing.T, fns []report.FunctionCount, name string) report.FunctionCount {
	t.Helper()
	for _, fn := range fns {
		if fn.Name == name {
			return fn
		}
	}
	t.Fatalf("no function %s", name)
	return report.FunctionCount{}
}

// lcovSummary runs lcov --summary on a tracefile and returns what it counted
// for lines, functions and branches.
func lcovSummary(t *testing.T, tracefile string) report.Totals {
	t.Helper()
	cmd := exec.Command(tool(t, "lcov", "lcov"), "--summary", tracefile, "--rc", "lcov_branch_coverage=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lcov --summary: %v\n%s", err, out)
	}
	var tot report.Totals
	seen := map[string]bool{}
	re := regexp.MustCompile(`(?m)^\s*(lines|functions|branches)\.*: [0-9.]+% \((\d+) of (\d+) `)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		hit, _ := strconv.Atoi(m[2])
		found, _ := strconv.Atoi(m[3])
		seen[m[1]] = true
		switch m[1] {
		case "lines":
			tot.Lines = report.Tally{Found: found, Hit: hit}
		case "functions":
			tot.Functions = report.Tally{Found: found, Hit: hit}
		case "branches":
			tot.Branches = report.Tally{Found: found, Hit: hit}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("lcov --summary did not report lines, functions and branches:\n%s", out)
	}
	return tot
}

// genhtml renders a tracefile as a user would, with default flags and then
// with branches, from a directory of its own (so a relative path in the
// tracefile finds nothing), and fails on any warning or error.
func genhtml(t *testing.T, tracefile string) {
	t.Helper()
	for _, flags := range [][]string{nil, {"--branch-coverage"}} {
		var stderr bytes.Buffer
		cmd := exec.Command(tool(t, "genhtml", "lcov"), append(flags, "-o", t.TempDir(), tracefile)...)
		cmd.Dir, cmd.Stderr = t.TempDir(), &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 || bytes.Contains(bytes.ToLower(out), []byte("warning")) {
			t.Fatalf("genhtml %v: %v\nstderr: %s\nstdout: %s", flags, err, stderr.String(), out)
		}
	}
}

func writeFile(t *testing.T, name string, write func(*os.File) error) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func elfFirmware(path string) qemu.Firmware {
	return qemu.Firmware{Path: path, Format: model.FormatELF}
}

func describe(b report.BranchCount) string {
	return fmt.Sprintf("executed=%v taken=%d not-taken=%d undetermined=%v", b.Executed, b.Taken, b.NotTaken, b.Undetermined)
}
