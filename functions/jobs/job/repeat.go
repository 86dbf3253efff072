package job

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	report "github.com/machineserver/machineserver/shared/coverage"
	"github.com/machineserver/machineserver/shared/model"
)

// MaxRepeat bounds JobSpec.Repeat.
const MaxRepeat = 10

// Run is what the comparison of a repeated job's runs looks at.
type Run struct {
	Verdict  model.JobState
	ExitCode *int
	Console  []byte
	// Ended: the emulator ended by itself before the verdict, so Console
	// and Counts are complete.
	Ended bool
	// Counts are the run's coverage counts; nil without coverage.
	Counts *report.Counts
}

// diffContext is how many bytes on each side of a console difference
// JobDifference quotes.
const diffContext = 16

// Compare says where run n first differs from run 1 (first), nil if it
// agrees: its console, then its coverage counts, then its verdict. A run
// judged while its guest still ran stops at an arbitrary host instant, so
// consoles are compared as far as both go, and coverage counts only when
// both runs ended by themselves (a running guest's counts keep growing).
func Compare(first, run Run, n int) *model.JobDifference {
	final := first.Ended && run.Ended
	if off, ok := consoleDiff(first.Console, run.Console, final); ok {
		return &model.JobDifference{Run: n, What: "console", Offset: &off,
			Expected: around(first.Console, off), Got: around(run.Console, off)}
	}
	if final && first.Counts != nil && run.Counts != nil {
		if d := countsDiff(*first.Counts, *run.Counts); d != nil {
			d.Run = n
			return d
		}
	}
	if first.Verdict != run.Verdict || !equalCode(first.ExitCode, run.ExitCode) {
		return &model.JobDifference{Run: n, What: "verdict", Expected: verdictText(first), Got: verdictText(run)}
	}
	return nil
}

// CountsCompared says whether Compare compares the counts of these runs.
func CountsCompared(runs []Run) bool {
	for _, r := range runs {
		if !r.Ended || r.Counts == nil {
			return false
		}
	}
	return len(runs) > 0
}

// Outcome is a repeated job's verdict from its runs (in order, at least
// one) and the first difference Compare found: run 1's state and reason
// when every run agreed, flaky otherwise.
func Outcome(runs []model.JobRun, diff *model.JobDifference, countsCompared bool) (model.JobState, string) {
	if diff != nil {
		return model.JobFlaky, fmt.Sprintf("the %d runs disagree: run %d's %s differs from run 1's%s", len(runs), diff.Run, diff.What, describe(diff))
	}
	what := "console output"
	if countsCompared {
		what += " and coverage counts"
	}
	return runs[0].Verdict, fmt.Sprintf("%s; all %d runs agreed (verdict, exit code, %s)", runs[0].Reason, len(runs), what)
}

func describe(d *model.JobDifference) string {
	at := ""
	if d.Offset != nil {
		at = " at byte " + strconv.Itoa(*d.Offset)
	}
	return fmt.Sprintf("%s: expected %s, got %s", at, d.Expected, d.Got)
}

// consoleDiff is the offset of the first byte where a and b differ; a
// console that is a prefix of the other differs at its end only when both
// are final.
func consoleDiff(a, b []byte, final bool) (int, bool) {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i, true
		}
	}
	return n, final && len(a) != len(b)
}

// around quotes the bytes of c within diffContext of off.
func around(c []byte, off int) string {
	return strconv.Quote(string(c[max(0, off-diffContext):min(len(c), off+diffContext)]))
}

// countsDiff compares how many times each address ran, not the blocks
// themselves: an emulator may split the same code into blocks differently
// from run to run without running anything more or less often.
func countsDiff(a, b report.Counts) *model.JobDifference {
	sa, sb := addressCounts(a.Blocks), addressCounts(b.Blocks)
	for i, j := 0, 0; i < len(sa) || j < len(sb); {
		var x, y span
		if i < len(sa) {
			x = sa[i]
		}
		if j < len(sb) {
			y = sb[j]
		}
		switch {
		case j == len(sb) || (i < len(sa) && x.from < y.from):
			return ranDiff(x.from, x.count, 0)
		case i == len(sa) || y.from < x.from:
			return ranDiff(y.from, 0, y.count)
		case x.count != y.count:
			return ranDiff(x.from, x.count, y.count)
		}
		// Spans that start together but end apart go on as one: the
		// longer one's rest is compared with what follows the shorter.
		switch {
		case x.to == y.to:
			i, j = i+1, j+1
		case x.to < y.to:
			sb[j].from = x.to
			i++
		default:
			sa[i].from = y.to
			j++
		}
	}
	for i := range max(len(a.Edges), len(b.Edges)) {
		var x, y report.Edge
		if i < len(a.Edges) {
			x = a.Edges[i]
		}
		if i < len(b.Edges) {
			y = b.Edges[i]
		}
		if x != y {
			return edgeDiff(x, y)
		}
	}
	return nil
}

func ranDiff(addr, want, got uint64) *model.JobDifference {
	return &model.JobDifference{What: "coverage", Expected: fmt.Sprintf("code at 0x%08x ran %d times", addr, want),
		Got: fmt.Sprintf("code at 0x%08x ran %d times", addr, got)}
}

func edgeDiff(want, got report.Edge) *model.JobDifference {
	edge := func(e report.Edge) string {
		if e == (report.Edge{}) {
			return "no branch"
		}
		return fmt.Sprintf("branch 0x%08x->0x%08x taken %d times", e.From, e.To, e.Count)
	}
	return &model.JobDifference{What: "coverage", Expected: edge(want), Got: edge(got)}
}

// span is an address range [from, to) that ran count times.
type span struct {
	from, to, count uint64
}

// addressCounts sums the blocks' counts per address range, in address
// order, leaving out what never ran.
func addressCounts(blocks []report.Block) []span {
	type step struct {
		at    uint64
		delta int64
	}
	var steps []step
	for _, b := range blocks {
		if b.Count > 0 && b.Bytes > 0 {
			steps = append(steps, step{b.Start, int64(b.Count)}, step{b.End(), -int64(b.Count)})
		}
	}
	slices.SortFunc(steps, func(x, y step) int { return cmp.Compare(x.at, y.at) })
	var out []span
	var level int64
	for i, s := range steps {
		level += s.delta
		if i+1 < len(steps) && steps[i+1].at == s.at {
			continue
		}
		if level > 0 && i+1 < len(steps) {
			n := uint64(level)
			if k := len(out) - 1; k >= 0 && out[k].to == s.at && out[k].count == n {
				out[k].to = steps[i+1].at
				continue
			}
			out = append(out, span{s.at, steps[i+1].at, n})
		}
	}
	return out
}

func equalCode(a, b *int) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func verdictText(r Run) string {
	if r.ExitCode != nil {
		return fmt.Sprintf("%s (exit code %d)", r.Verdict, *r.ExitCode)
	}
	return string(r.Verdict)
}
