package coverage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/machineserver/machineserver/runner/coverage"
	report "github.com/machineserver/machineserver/shared/coverage"
)

// shellLine is the line of firmware/src/shell.c that holds text.
func shellLine(t *testing.T, text string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "firmware", "src", "shell.c"))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("shell.c has no line with %q", text)
	return 0
}

// TestOtherArchitectures runs the shell firmware of a RISC-V and an AVR
// board with exact edges, sends three lines, and checks the report built
// with the real ELF: functions called as often as the lines make them,
// lines of shell.c hit, branches whose outcomes derived from the block
// counts alone are those the plugin recorded, and an LCOV that lcov and
// genhtml accept. RISC-V ends with a semihosting exit (final counts); AVR
// has no way to end its emulator, so its counts are a snapshot.
func TestOtherArchitectures(t *testing.T) {
	for _, tc := range []struct {
		board, exit string
		final       bool
	}{
		{"sifive_e", "exit 0\r", true},
		{"arduino-uno", "exit 5\r", false},
	} {
		t.Run(tc.board, func(t *testing.T) {
			elf := firmware(t, tc.board, "fw.elf")
			prog := loadELF(t, elf)
			if prog.Level != report.LevelSource {
				t.Fatalf("fw.elf level %s, want source", prog.Level)
			}
			g := start(t, tc.board, elfFirmware(elf), coverage.Options{ExactEdges: true})
			g.expect(t, "MS-TEST-FW "+tc.board+" ready\r\n")
			g.send(t, "count\r")
			g.expect(t, "count=")
			g.send(t, "hello\r")
			g.expect(t, "hello")
			g.send(t, tc.exit)
			var c report.Counts
			if tc.final {
				g.waitExit(t, 0)
				c = g.read(t)
			} else {
				g.expect(t, "exit is not supported on "+tc.board+"\r\n")
				c = g.snapshot(t)
			}
			if !c.ExactEdges || len(c.Edges) == 0 {
				t.Fatalf("exact edges were not recorded: %d edges", len(c.Edges))
			}
			exact := report.Analyze(prog, c)
			if exact.Final != tc.final {
				t.Errorf("final %v, want %v", exact.Final, tc.final)
			}
			var shell report.FileReport
			for _, f := range exact.Files {
				if strings.HasSuffix(f.Path, "/firmware/src/shell.c") {
					shell = f
				}
			}
			if shell.Path == "" {
				t.Fatalf("no shell.c in the report's files: %+v", exact.Files)
			}

			// run_line runs once per line; has_prefix and equal too (equal
			// after "exit N" only where exit returns), but on RISC-V their
			// loop starts at the entry, whose count then adds iterations.
			for _, c := range []struct {
				name    string
				n       uint64
				atLeast bool
			}{{"main", 1, false}, {"run_line", 3, false}, {"port_init", 1, false}, {"parse_uint", 1, false}, {"has_prefix", 3, true}, {"equal", 2, true}} {
				fn := function(t, exact.Functions, c.name)
				if fn.Count < c.n || fn.Count > c.n && !c.atLeast || !fn.Executed {
					t.Errorf("%s: %+v, want %d calls", c.name, fn, c.n)
				}
			}
			if fn := function(t, exact.Functions, "puts_raw"); fn.Count < 3 || fn.File == "" {
				t.Errorf("puts_raw: %+v, want called with a source file", fn)
			}
			unsupported := uint64(1)
			if tc.final {
				unsupported = 0 // the semihosting exit did not return
			}
			for text, n := range map[string]uint64{"lines_seen++": 3, `puts_raw("count=")`: 1, `puts_raw("exit is not supported on ")`: unsupported} {
				if got := lineCount(t, shell, shellLine(t, text)); got != n {
					t.Errorf("line %q: count %d, want %d", text, got, n)
				}
			}

			c.ExactEdges, c.Edges = false, nil
			derived := report.Analyze(prog, c)
			both, compared, pending := 0, 0, 0
			for i, f := range exact.Files {
				for j, want := range f.Branches {
					got := derived.Files[i].Branches[j]
					if want.Undetermined || got.Undetermined {
						// An AVR skip resolved inside a block: neither can tell.
						if !want.Undetermined || !got.Undetermined || !got.Executed {
							t.Errorf("%s:%d at 0x%x: derived %s, exact %s", f.Path, want.Line, want.Addr, describe(got), describe(want))
						}
						continue
					}
					compared++
					if got != want && !pendingEdge(tc.final, &pending, got, want) {
						t.Errorf("%s:%d at 0x%x: derived %s, exact %s", f.Path, want.Line, want.Addr, describe(got), describe(want))
					}
					if strings.HasSuffix(f.Path, "/shell.c") && got.Taken > 0 && got.NotTaken > 0 {
						both++
					}
				}
			}
			if compared == 0 || both == 0 {
				t.Errorf("%d branches compared, %d in shell.c went both ways", compared, both)
			}

			tracefile := writeFile(t, "fw.info", func(f *os.File) error { return derived.WriteLCOV(f, tc.board) })
			if got := lcovSummary(t, tracefile); got != derived.Totals {
				t.Errorf("lcov --summary %+v, JSON totals %+v", got, derived.Totals)
			}
			if tot := derived.Totals; tot.Lines.Hit == 0 || tot.Functions.Hit == 0 || tot.Branches.Hit == 0 {
				t.Errorf("totals look empty: %+v", tot)
			}
			genhtml(t, tracefile)
		})
	}
}

// pendingEdge allows, in counts taken from a paused guest that has not
// ended, one branch whose derived outcome is one ahead of the recorded
// one: the plugin records an edge when the block after the branch runs,
// so the branch the guest was paused after is still pending. (A polling
// AVR guest is always in its loop's branch.)
func pendingEdge(final bool, pending *int, got, want report.BranchCount) bool {
	if final || *pending > 0 || got.Taken+got.NotTaken != want.Taken+want.NotTaken+1 ||
		got.Taken < want.Taken || got.NotTaken < want.NotTaken {
		return false
	}
	*pending++
	return true
}
