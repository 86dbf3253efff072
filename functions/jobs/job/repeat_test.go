package job

import (
	"strings"
	"testing"

	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/model"
)

func code(n int) *int { return &n }

func TestCompareConsoles(t *testing.T) {
	one := []byte("jitter ready\r\ncvr=16721213 polls=17826\r\njitter done\r\n")
	other := []byte("jitter ready\r\ncvr=16770817 polls=5147\r\njitter done\r\n")
	run := func(c []byte, ended bool) Run {
		return Run{Verdict: model.JobPassed, ExitCode: code(0), Console: c, Ended: ended}
	}
	if d := Compare(run(one, true), run(append([]byte{}, one...), true), 2); d != nil {
		t.Errorf("identical runs differ: %+v", d)
	}
	d := Compare(run(one, true), run(other, true), 3)
	if d == nil || d.Run != 3 || d.What != "console" || d.Offset == nil || *d.Offset != 21 {
		t.Fatalf("first difference: %+v", d)
	}
	// 16 bytes on each side of the first differing byte, Go-quoted.
	if d.Expected != `"r ready\r\ncvr=16721213 polls=1782"` || d.Got != `"r ready\r\ncvr=16770817 polls=5147"` {
		t.Errorf("context: expected %s, got %s", d.Expected, d.Got)
	}

	// A run judged while its guest ran was read up to an arbitrary
	// instant: only as far as both consoles go counts.
	running := []byte("MS-TEST-FW ready\r\ntick 10\r\ntick 20\r\n")
	if d := Compare(run(running, false), run(running[:25], false), 2); d != nil {
		t.Errorf("a shorter console of a running guest differs: %+v", d)
	}
	if d := Compare(run(running, true), run(running[:25], false), 2); d != nil {
		t.Errorf("a running guest's shorter console differs: %+v", d)
	}
	// Two complete consoles must be equally long.
	d = Compare(run(running, true), run(running[:25], true), 2)
	if d == nil || *d.Offset != 25 || d.Got != `"W ready\r\ntick 10"` {
		t.Errorf("a complete console that stops early: %+v", d)
	}
	// At the very start, the context has nothing before it.
	d = Compare(run([]byte("ab"), true), run([]byte("xb"), true), 2)
	if d == nil || *d.Offset != 0 || d.Expected != `"ab"` || d.Got != `"xb"` {
		t.Errorf("first byte: %+v", d)
	}
}

func TestCompareVerdicts(t *testing.T) {
	c := []byte("same")
	d := Compare(Run{Verdict: model.JobPassed, ExitCode: code(0), Console: c, Ended: true},
		Run{Verdict: model.JobFailed, ExitCode: code(3), Console: c, Ended: true}, 2)
	if d == nil || d.What != "verdict" || d.Expected != "passed (exit code 0)" || d.Got != "failed (exit code 3)" || d.Offset != nil {
		t.Errorf("%+v", d)
	}
	d = Compare(Run{Verdict: model.JobPassed, Console: c}, Run{Verdict: model.JobTimedOut, Console: c}, 4)
	if d == nil || d.Run != 4 || d.Expected != "passed" || d.Got != "timed_out" {
		t.Errorf("%+v", d)
	}
}

func blocks(bs ...report.Block) *report.Counts { return &report.Counts{Blocks: bs} }

func TestCompareCounts(t *testing.T) {
	run := func(c *report.Counts, ended bool) Run {
		return Run{Verdict: model.JobPassed, Console: []byte("x"), Ended: ended, Counts: c}
	}
	base := blocks(report.Block{Start: 0x100, Insns: 4, Bytes: 8, Count: 1}, report.Block{Start: 0x108, Insns: 2, Bytes: 4, Count: 7},
		report.Block{Start: 0x200, Insns: 1, Bytes: 2, Count: 3})
	// The same code split into other blocks ran the same.
	split := blocks(report.Block{Start: 0x100, Insns: 2, Bytes: 4, Count: 1}, report.Block{Start: 0x104, Insns: 2, Bytes: 4, Count: 1},
		report.Block{Start: 0x108, Insns: 2, Bytes: 4, Count: 7}, report.Block{Start: 0x200, Insns: 1, Bytes: 2, Count: 3},
		report.Block{Start: 0x300, Insns: 1, Bytes: 2, Count: 0})
	if d := Compare(run(base, true), run(split, true), 2); d != nil {
		t.Errorf("the same counts in other blocks differ: %+v", d)
	}
	// Overlapping blocks (a block entered in its middle) add up.
	overlap := blocks(report.Block{Start: 0x100, Insns: 6, Bytes: 12, Count: 1}, report.Block{Start: 0x108, Insns: 2, Bytes: 4, Count: 6},
		report.Block{Start: 0x200, Insns: 1, Bytes: 2, Count: 3})
	if d := Compare(run(base, true), run(overlap, true), 2); d != nil {
		t.Errorf("overlapping blocks with the same sums differ: %+v", d)
	}
	more := blocks(report.Block{Start: 0x100, Insns: 4, Bytes: 8, Count: 1}, report.Block{Start: 0x108, Insns: 2, Bytes: 4, Count: 9},
		report.Block{Start: 0x200, Insns: 1, Bytes: 2, Count: 3})
	d := Compare(run(base, true), run(more, true), 5)
	if d == nil || d.Run != 5 || d.What != "coverage" || d.Expected != "code at 0x00000108 ran 7 times" || d.Got != "code at 0x00000108 ran 9 times" {
		t.Errorf("%+v", d)
	}
	extra := blocks(report.Block{Start: 0x100, Insns: 4, Bytes: 8, Count: 1}, report.Block{Start: 0x108, Insns: 2, Bytes: 4, Count: 7},
		report.Block{Start: 0x180, Insns: 1, Bytes: 2, Count: 1}, report.Block{Start: 0x200, Insns: 1, Bytes: 2, Count: 3})
	if d := Compare(run(base, true), run(extra, true), 2); d == nil || d.Got != "code at 0x00000180 ran 1 times" || d.Expected != "code at 0x00000180 ran 0 times" {
		t.Errorf("%+v", d)
	}
	// Counts of a guest that was still running keep growing: not compared.
	if d := Compare(run(base, true), run(more, false), 2); d != nil {
		t.Errorf("counts of a running guest compared: %+v", d)
	}
	edges := func(n uint64) *report.Counts {
		c := *base
		c.ExactEdges, c.Edges = true, []report.Edge{{From: 0x10a, To: 0x108, Count: n}}
		return &c
	}
	if d := Compare(run(edges(6), true), run(edges(5), true), 2); d == nil || d.Expected != "branch 0x0000010a->0x00000108 taken 6 times" {
		t.Errorf("%+v", d)
	}
	if !CountsCompared([]Run{run(base, true), run(more, true)}) || CountsCompared([]Run{run(base, true), run(more, false)}) ||
		CountsCompared([]Run{run(nil, true)}) {
		t.Error("CountsCompared")
	}
}

func TestOutcome(t *testing.T) {
	runs := []model.JobRun{{Verdict: model.JobPassed, Reason: "firmware exited with status 0 as expected"}, {Verdict: model.JobPassed}}
	st, why := Outcome(runs, nil, true)
	if st != model.JobPassed || why != "firmware exited with status 0 as expected; all 2 runs agreed (verdict, exit code, console output and coverage counts)" {
		t.Errorf("%s: %s", st, why)
	}
	off := 22
	st, why = Outcome(runs, &model.JobDifference{Run: 2, What: "console", Offset: &off, Expected: `"a"`, Got: `"b"`}, false)
	if st != model.JobFlaky || !strings.Contains(why, `run 2's console differs from run 1's at byte 22: expected "a", got "b"`) {
		t.Errorf("%s: %s", st, why)
	}
}
