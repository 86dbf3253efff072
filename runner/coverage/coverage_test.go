package coverage_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/machineserver/machineserver/runner/coverage"
	"github.com/machineserver/machineserver/runner/qemu"
	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/model"
)

// TestKnownPaths runs the coverage firmware on each board and checks exact
// counts while it runs (on-demand flushes), after UART input takes a branch,
// and after its semihosting exit; then that lcov and genhtml accept the LCOV.
func TestKnownPaths(t *testing.T) {
	m := markers(t)
	for _, b := range boards {
		t.Run(b.name, func(t *testing.T) {
			elf := firmware(t, b.name, "cov.elf")
			prog := loadELF(t, elf)
			if prog.Level != report.LevelSource {
				t.Fatalf("cov.elf level %s, want source", prog.Level)
			}
			g := start(t, b.name, elfFirmware(elf), coverage.Options{})
			g.expect(t, "COV ready\r\n")

			r := report.Analyze(prog, g.snapshot(t))
			if r.Final || r.Snapshot.Reason != "request" {
				t.Fatalf("snapshot while running: reason %q final %v", r.Snapshot.Reason, r.Final)
			}
			f := covFile(t, r)
			want := map[string]uint64{
				"never-body": 0, "classify-if": 2, "classify-then": 2, "classify-else": 0,
				"loop-body": 7, "never-if": 1, "never-call": 0, "on-b": 0,
			}
			for name, n := range want {
				if got := lineCount(t, f, m[name]); got != n {
					t.Errorf("line %d (%s): count %d, want %d", m[name], name, got, n)
				}
			}
			if fn := function(t, f.Functions, "never_called"); fn.Count != 0 {
				t.Errorf("never_called: %d calls, want 0", fn.Count)
			}
			if fn := function(t, f.Functions, "classify"); fn.Count != 2 {
				t.Errorf("classify: %d calls, want 2", fn.Count)
			}
			// One outcome of each of these never happened; which one is the
			// jump depends on how the compiler laid the code out.
			for name, runs := range map[string]uint64{"classify-if": 2, "never-if": 1} {
				br := branchesAt(t, f, m[name])
				if len(br) != 1 || !br[0].Executed || min(br[0].Taken, br[0].NotTaken) != 0 || br[0].Taken+br[0].NotTaken != runs {
					t.Errorf("branch on line %d (%s): %+v, want one outcome %d times and the other never", m[name], name, br, runs)
				}
			}
			if br := branchesAt(t, f, m["on-b-if"]); br[0].Executed {
				t.Errorf("input branch ran before any input: %s", describe(br[0]))
			}

			booted := g.snapshot(t)
			g.send(t, "b")
			g.expect(t, "ready\r\nb")
			afterB := g.snapshot(t)
			f = covFile(t, report.Analyze(prog, afterB))
			if n := lineCount(t, f, m["on-b"]); n != 1 {
				t.Errorf("after 'b': on-b count %d, want 1", n)
			}
			checkWindow(t, report.Analyze(prog, report.Subtract(afterB, booted)))
			br := branchesAt(t, f, m["on-b-if"])[0]
			if !br.Executed || br.Taken+br.NotTaken != 1 {
				t.Errorf("after 'b': input branch %s, want one outcome once", describe(br))
			}

			g.send(t, "xb")
			g.expect(t, "ready\r\nbxb")
			f = covFile(t, report.Analyze(prog, g.snapshot(t)))
			if n := lineCount(t, f, m["on-b"]); n != 2 {
				t.Errorf("after 'xb': on-b count %d, want 2", n)
			}
			br = branchesAt(t, f, m["on-b-if"])[0]
			if got := []uint64{min(br.Taken, br.NotTaken), max(br.Taken, br.NotTaken)}; !slices.Equal(got, []uint64{1, 2}) {
				t.Errorf("after 'bxb': input branch %s, want 2 one way ('b') and 1 the other ('x')", describe(br))
			}

			g.send(t, "q")
			g.waitExit(t, 0)
			final := g.read(t)
			r = report.Analyze(prog, final)
			if !r.Final || r.Snapshot.Reason != "exit" || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "outside the program's sources") {
				t.Fatalf("after semihosting exit: reason %q final %v notes %v", r.Snapshot.Reason, r.Final, r.Notes)
			}
			f = covFile(t, r)
			for name, n := range map[string]uint64{"on-b": 2, "quit": 1, "loop-body": 7, "never-body": 0} {
				if got := lineCount(t, f, m[name]); got != n {
					t.Errorf("final: line %d (%s): count %d, want %d", m[name], name, got, n)
				}
			}
			if r.BranchesUndetermined != 0 {
				t.Errorf("%d branches undetermined", r.BranchesUndetermined)
			}
			checkOutputs(t, r)
			checkLibrary(t, prog, r, final)

			twice := covFile(t, report.Analyze(prog, report.Merge(final, final)))
			if n := lineCount(t, twice, m["loop-body"]); n != 14 {
				t.Errorf("merged twice: loop body %d, want 14", n)
			}
		})
	}
}

// checkOutputs writes the report in every format and checks each with its
// consumer: lcov --summary agrees with the JSON totals, genhtml renders the
// LCOV without warnings, the zip has an index and a page per file.
func checkOutputs(t *testing.T, r *report.Report) {
	t.Helper()
	tracefile := writeFile(t, "cov.info", func(f *os.File) error { return r.WriteLCOV(f, t.Name()) })
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Level  string        `json:"level"`
		Totals report.Totals `json:"totals"`
	}
	if err := json.Unmarshal(buf.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	if got := lcovSummary(t, tracefile); got != decoded.Totals {
		t.Errorf("lcov --summary %+v, JSON totals %+v", got, decoded.Totals)
	}
	if decoded.Totals.Lines.Hit == 0 || decoded.Totals.Functions.Hit == 0 || decoded.Totals.Branches.Hit == 0 {
		t.Errorf("JSON totals look empty: %+v", decoded.Totals)
	}
	genhtml(t, tracefile)

	buf.Reset()
	if err := r.WriteHTMLZip(&buf, os.ReadFile); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		pages[zf.Name] = b.String()
	}
	if len(pages) != len(r.Files)+len(r.OtherFiles)+1 || !strings.Contains(pages["index.html"], "covtest.c") {
		t.Errorf("HTML zip has %d pages for %d+%d files; index: %.300s", len(pages), len(r.Files), len(r.OtherFiles), pages["index.html"])
	}
	// Dated at the snapshot (to the zip format's 2 s), not 1980.
	for _, zf := range zr.File {
		if d := zf.Modified.Sub(r.Snapshot.Time); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("%s dated %s, the snapshot %s", zf.Name, zf.Modified, r.Snapshot.Time)
		}
	}
	// The index says which files' text was found: the program's own were,
	// the stand-in library's (built "elsewhere") were not.
	idx := pages["index.html"]
	if !regexp.MustCompile(`covtest\.c</a>.*shown`).MatchString(idx) || !regexp.MustCompile(`covlib\.c</a>.*not available`).MatchString(idx) {
		t.Errorf("index does not say which files have source text: %s", idx)
	}
	found := false
	for _, p := range pages {
		found = found || strings.Contains(p, "never_called") && strings.Contains(p, "COV:loop-body")
	}
	if !found {
		t.Error("no HTML page shows covtest.c's source and functions")
	}
}

// checkWindow checks the report of a window opened after boot, in which
// only 'b' was handled: main was entered before it, so it has 0 calls but
// executed; code that ran at boot only did not execute in it.
func checkWindow(t *testing.T, r *report.Report) {
	t.Helper()
	f := covFile(t, r)
	if fn := function(t, f.Functions, "main"); fn.Count != 0 || !fn.Executed {
		t.Errorf("main in a window opened after boot: %+v, want 0 calls and executed", fn)
	}
	for _, name := range []string{"classify", "never_called"} {
		if fn := function(t, f.Functions, name); fn.Count != 0 || fn.Executed {
			t.Errorf("%s in a window opened after boot: %+v, want neither called nor executed", name, fn)
		}
	}
	if !slices.ContainsFunc(r.Notes, func(n string) bool {
		return strings.Contains(n, "without being entered") && strings.Contains(n, "main")
	}) {
		t.Errorf("notes do not explain main's 0 calls: %v", r.Notes)
	}
}

// checkLibrary checks where the report puts the files of the stand-in C
// library (built with debug paths of a machine that does not exist) and of
// the firmware's own assembly (named relative to its compilation
// directory): the library's apart in OtherFiles, out of the totals and the
// LCOV unless all files are asked for, the assembly with the program's.
func checkLibrary(t *testing.T, prog *report.Program, r *report.Report, c report.Counts) {
	t.Helper()
	src := filepath.Join(moduleRoot(t), "firmware", "src")
	lib := "/nonexistent/toolchain-build/newlib/src/"
	var other []string
	for _, f := range r.OtherFiles {
		other = append(other, f.Path)
	}
	if want := []string{lib + "covlib.c", lib + "covlib_copy.S"}; !slices.Equal(other, want) {
		t.Errorf("other files %q, want %q", other, want)
	}
	for _, fn := range []string{"lib_memcpy", "lib_strlen", "asm_twice"} {
		if got := function(t, r.Functions, fn); got.Count != 1 || !got.Executed {
			t.Errorf("%s: %+v, want called once", fn, got)
		}
	}
	own := map[string]bool{}
	for _, f := range r.Files {
		own[f.Path] = true
	}
	if !own[filepath.Join(src, "covasm.S")] || !own[filepath.Join(src, "covtest.c")] || len(own) != 4 {
		t.Errorf("program's files %v, want covtest.c, covasm.S, startup.c and the UART's under %s", own, src)
	}

	all := report.AnalyzeAll(prog, c)
	if len(all.Files) != len(r.Files)+len(r.OtherFiles) || len(all.OtherFiles) != 0 ||
		all.Totals.Lines.Found != r.Totals.Lines.Found+r.OtherFiles[0].Totals.Lines.Found+r.OtherFiles[1].Totals.Lines.Found {
		t.Errorf("all files: %d files, %d other, totals %+v; the program's: %d files, totals %+v", len(all.Files), len(all.OtherFiles), all.Totals, len(r.Files), r.Totals)
	}
	tracefile := writeFile(t, "all.info", func(f *os.File) error { return all.WriteLCOV(f, "") })
	if got := lcovSummary(t, tracefile); got != all.Totals {
		t.Errorf("lcov --summary of all files %+v, JSON totals %+v", got, all.Totals)
	}
	// What the default leaves out is what genhtml could not read.
	out, err := exec.Command("genhtml", "-o", t.TempDir(), tracefile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), lib) {
		t.Errorf("genhtml of all files, with the library's missing: %v\n%s", err, out)
	}
}

// TestDerivedEdgesMatchExact collects with exact edges and checks that the
// outcomes derived from the block counts alone are the same: on the -O0
// coverage firmware, and on the -Os echo firmware whose SysTick and UART
// interrupts land between blocks.
func TestDerivedEdgesMatchExact(t *testing.T) {
	type step struct{ send, expect string }
	cases := []struct {
		board, file string
		steps       []step
	}{
		{"netduino2", "cov.elf", []step{{"", "COV ready\r\n"}, {"bxzb", "bxzb"}, {"q", ""}}},
		{"mps2-an385", "cov.elf", []step{{"", "COV ready\r\n"}, {"bxzb", "bxzb"}, {"q", ""}}},
		{"netduino2", "fw.elf", []step{{"", "ready\r\n"}, {"hi\rcount\r", "count="}, {"", "tick 10\r\n"}, {"exit 0\r", ""}}},
		{"mps2-an385", "fw.elf", []step{{"", "ready\r\n"}, {"hi\rcount\r", "count="}, {"exit 0\r", ""}}},
	}
	for _, tc := range cases {
		t.Run(tc.board+"/"+tc.file, func(t *testing.T) {
			elf := firmware(t, tc.board, tc.file)
			prog := loadELF(t, elf)
			g := start(t, tc.board, elfFirmware(elf), coverage.Options{ExactEdges: true})
			for _, s := range tc.steps {
				g.send(t, s.send)
				if s.expect != "" {
					g.expect(t, s.expect)
				}
			}
			g.waitExit(t, 0)
			c := g.read(t)
			if !c.ExactEdges || len(c.Edges) == 0 {
				t.Fatalf("exact edges were not recorded: %d edges", len(c.Edges))
			}
			exact := report.Analyze(prog, c)
			c.ExactEdges, c.Edges = false, nil
			derived := report.Analyze(prog, c)
			if exact.Edges != "exact" || derived.Edges != "derived" || derived.BranchesUndetermined != 0 {
				t.Fatalf("edges %q/%q, %d undetermined", exact.Edges, derived.Edges, derived.BranchesUndetermined)
			}
			n := 0
			for i, f := range exact.Files {
				for j, want := range f.Branches {
					if got := derived.Files[i].Branches[j]; got != want {
						t.Errorf("%s:%d: derived %s, exact %s", f.Path, want.Line, describe(got), describe(want))
					}
					n++
				}
			}
			if n == 0 {
				t.Fatal("no branches compared")
			}
		})
	}
}

// TestPeriodicFlushAndQuit: with an interval the counts appear without asking,
// and a QMP quit leaves the final counts.
func TestPeriodicFlushAndQuit(t *testing.T) {
	m := markers(t)
	elf := firmware(t, "netduino2", "cov.elf")
	prog := loadELF(t, elf)
	g := start(t, "netduino2", elfFirmware(elf), coverage.Options{Interval: 20 * time.Millisecond})
	g.expect(t, "COV ready\r\n")
	g.send(t, "b")
	g.expect(t, "ready\r\nb")
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for {
		c, err := coverage.Read(g.dir)
		if err == nil && c.Snapshot.Reason == "interval" && lineCount(t, covFile(t, report.Analyze(prog, c)), m["on-b"]) == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no interval snapshot with the 'b' branch: last %+v, %v", c.Snapshot, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	g.p.Stop(5 * time.Second)
	if code := g.p.ExitCode(); code != 0 {
		t.Fatalf("QMP quit: %s", g.p.ExitReason())
	}
	r := report.Analyze(prog, g.read(t))
	if !r.Final || r.Snapshot.Reason != "exit" {
		t.Fatalf("after quit: %+v final %v", r.Snapshot, r.Final)
	}
	if n := lineCount(t, covFile(t, r), m["on-b"]); n != 1 {
		t.Fatalf("after quit: on-b %d, want 1", n)
	}
}

// TestKillKeepsLastSnapshot: SIGKILL skips the exit write; the last snapshot
// stays and the report says it is not final.
func TestKillKeepsLastSnapshot(t *testing.T) {
	m := markers(t)
	elf := firmware(t, "netduino2", "cov.elf")
	prog := loadELF(t, elf)
	g := start(t, "netduino2", elfFirmware(elf), coverage.Options{})
	g.expect(t, "COV ready\r\n")
	g.send(t, "b")
	g.expect(t, "ready\r\nb")
	g.snapshot(t)
	g.send(t, "b")
	g.expect(t, "ready\r\nbb")
	g.p.Kill()
	g.p.Wait()
	r := report.Analyze(prog, g.read(t))
	if r.Final || r.Snapshot.Reason != "request" || len(r.Notes) == 0 || !strings.Contains(r.Notes[0], "missing") {
		t.Fatalf("after SIGKILL: %+v final %v notes %v", r.Snapshot, r.Final, r.Notes)
	}
	if n := lineCount(t, covFile(t, r), m["on-b"]); n != 1 {
		t.Fatalf("after SIGKILL: on-b %d, want 1 (the second 'b' came after the snapshot)", n)
	}
	if err := coverage.Flush(t.Context(), g.dir); err == nil {
		t.Fatal("flush of a dead QEMU succeeded")
	}
}

// TestStrippedAndRaw: an ELF without DWARF gives functions only, one without
// symbols (fully stripped) and a BIN give addresses only, each saying so.
func TestStrippedAndRaw(t *testing.T) {
	elf := firmware(t, "netduino2", "cov.elf")
	strip := tool(t, "arm-none-eabi-strip", "binutils-arm-none-eabi")
	objcopy := tool(t, "arm-none-eabi-objcopy", "binutils-arm-none-eabi")
	dir := t.TempDir()
	noDebug, noSyms, bin := filepath.Join(dir, "nodebug.elf"), filepath.Join(dir, "nosyms.elf"), filepath.Join(dir, "cov.bin")
	for _, args := range [][]string{
		{strip, "--strip-debug", "-o", noDebug, elf},
		{strip, "--strip-all", "-o", noSyms, elf},
		{objcopy, "-O", "binary", elf, bin},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run := func(fw qemu.Firmware) report.Counts {
		g := start(t, "netduino2", fw, coverage.Options{})
		g.expect(t, "COV ready\r\n")
		g.send(t, "q")
		g.waitExit(t, 0)
		return g.read(t)
	}

	t.Run("no-debug", func(t *testing.T) {
		prog := loadELF(t, noDebug)
		r := report.Analyze(prog, run(elfFirmware(noDebug)))
		if r.Level != report.LevelFunction || len(r.Files) != 0 {
			t.Fatalf("level %s with %d files, want function", r.Level, len(r.Files))
		}
		if err := r.WriteLCOV(&bytes.Buffer{}, ""); !errors.Is(err, report.ErrNoDebugInfo) {
			t.Fatalf("LCOV without DWARF: %v, want ErrNoDebugInfo", err)
		}
		if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "no debug info") }) {
			t.Errorf("notes do not say there is no debug info: %v", r.Notes)
		}
		if fn := function(t, r.Functions, "never_called"); fn.Count != 0 {
			t.Errorf("never_called: %d", fn.Count)
		}
		if fn := function(t, r.Functions, "classify"); fn.Count != 2 {
			t.Errorf("classify: %d, want 2", fn.Count)
		}
		if r.Totals.Functions.Found != len(r.Functions) || r.Totals.Functions.Hit == 0 {
			t.Errorf("function totals %+v for %d functions", r.Totals.Functions, len(r.Functions))
		}
	})
	t.Run("no-symbols", func(t *testing.T) {
		r := report.Analyze(loadELF(t, noSyms), run(elfFirmware(noSyms)))
		if r.Level != report.LevelAddress || len(r.Blocks) == 0 {
			t.Fatalf("level %s with %d blocks, want address", r.Level, len(r.Blocks))
		}
		if err := r.WriteLCOV(&bytes.Buffer{}, ""); !errors.Is(err, report.ErrNoSymbols) {
			t.Fatalf("LCOV without symbols: %v, want ErrNoSymbols", err)
		}
		if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "fully stripped") && !strings.Contains(n, "BIN") }) {
			t.Errorf("notes do not say the ELF is fully stripped: %v", r.Notes)
		}
	})
	t.Run("bin", func(t *testing.T) {
		r := report.Analyze(report.RawProgram(), run(qemu.Firmware{Path: bin, Format: model.FormatBIN, LoadAddress: 0x08000000}))
		var buf bytes.Buffer
		if err := r.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		var decoded struct {
			Level  string         `json:"level"`
			Notes  []string       `json:"notes"`
			Blocks []report.Block `json:"blocks"`
		}
		if err := json.Unmarshal(buf.Bytes(), &decoded); err != nil {
			t.Fatal(err)
		}
		if decoded.Level != "address" || len(decoded.Blocks) == 0 || !slices.ContainsFunc(decoded.Notes, func(n string) bool { return strings.Contains(n, "BIN or HEX image") }) {
			t.Fatalf("BIN JSON: %s", buf.String())
		}
		buf.Reset()
		if err := r.WriteHTMLZip(&buf, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPluginRefusesBadArguments: a plugin that cannot work stops QEMU at
// start with a message, instead of running without coverage.
func TestPluginRefusesBadArguments(t *testing.T) {
	tool(t, "qemu-system-arm", "qemu-system-arm")
	elf := firmware(t, "netduino2", "cov.elf")
	for name, args := range map[string][]string{
		"unwritable": {"out=/nonexistent/dir/cov.dat"},
		"unknown":    {"out=" + filepath.Join(t.TempDir(), "c.dat"), "colour=blue"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := qemu.Start(t.Context(), qemu.Config{
				Binary: "qemu-system-arm", Machine: "netduino2", Dir: shortDir(t), Firmware: elfFirmware(elf),
				Plugins: []qemu.Plugin{{Path: pluginPath(t), Args: args}},
			})
			if err == nil || !strings.Contains(err.Error(), "mscov:") {
				t.Fatalf("start with %v: %v, want the plugin's refusal", args, err)
			}
		})
	}
}
