package coverage

import (
	"cmp"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"
)

// Tally is how many items exist and how many ran.
type Tally struct {
	Found int `json:"found"`
	Hit   int `json:"hit"`
}

// Totals are the summary numbers of a report or of one file.
type Totals struct {
	Lines     Tally `json:"lines"`
	Functions Tally `json:"functions"`
	Branches  Tally `json:"branches"`
}

// LineCount is a source line's count: the highest execution count of any of
// its instructions (each instruction's count being the sum of the counts of
// the blocks that contain it). A line is hit when any of its instructions ran.
type LineCount struct {
	Line  int    `json:"line"`
	Count uint64 `json:"count"`
}

// FunctionCount is a function's count: how many times the blocks starting at
// its entry address ran, i.e. its calls (plus the iterations of a loop whose
// head is the very first instruction, which -O0 code never has).
type FunctionCount struct {
	Name  string `json:"name"`
	Addr  uint64 `json:"addr"`
	File  string `json:"file,omitempty"`
	Line  int    `json:"line,omitempty"`
	Count uint64 `json:"count"`
	// Executed: any of its code ran. A function entered before the window
	// opened (main, an RTOS task's loop) has Count 0 and is still executed.
	Executed bool `json:"executed"`
}

// BranchCount is one conditional branch instruction (Thumb B<cond>, CBZ,
// CBNZ, not branches made conditional by IT; RISC-V BEQ..BGEU, C.BEQZ,
// C.BNEZ; AVR BRxx and the skips CPSE, SBRC, SBRS, SBIC, SBIS) and its two
// outcomes: Taken is how often it jumped to its target (for a skip: skipped
// the next instruction), NotTaken how often it fell through. Which of the
// two is the source's "true" depends on the compiler.
type BranchCount struct {
	Line int    `json:"line"`
	Addr uint64 `json:"addr"`
	// Block numbers the branch instructions of one line in address order (LCOV's block).
	Block    int    `json:"block"`
	Executed bool   `json:"executed"`
	Taken    uint64 `json:"taken"`
	NotTaken uint64 `json:"not_taken"`
	// Undetermined: it ran, but its outcomes could not be derived from the
	// block counts (see Report.Edges); LCOV shows it as not executed.
	Undetermined bool `json:"undetermined,omitempty"`
}

// FileReport is the coverage of one source file.
type FileReport struct {
	Path      string          `json:"path"`
	Totals    Totals          `json:"totals"`
	Functions []FunctionCount `json:"functions"`
	Lines     []LineCount     `json:"lines"`
	Branches  []BranchCount   `json:"branches"`
}

// Report is the coverage of one program by one set of counts.
type Report struct {
	Level Level `json:"level"`
	// Notes say what the report cannot show and why, for people.
	Notes    []string `json:"notes,omitempty"`
	Snapshot Snapshot `json:"snapshot"`
	// Final is false for a snapshot taken while the program ran, or left by
	// an emulator that did not exit normally: later counts are missing.
	Final bool `json:"final"`
	// Edges is how branch outcomes were obtained: "exact" (recorded) or
	// "derived" (solved from block counts and the code's control flow).
	Edges  string `json:"edges"`
	Totals Totals `json:"totals"`
	// BranchesUndetermined counts branches that ran but whose outcomes could
	// not be derived.
	BranchesUndetermined int `json:"branches_undetermined"`
	// Files are the program's own source files (all files for AnalyzeAll);
	// Totals add them up.
	Files []FileReport `json:"files,omitempty"`
	// OtherFiles are the files outside the program's sources (toolchain and
	// library code, see Program.Own), out of Totals and the LCOV.
	OtherFiles []FileReport `json:"other_files,omitempty"`
	// Functions are all function symbols, with or without source (LevelSource
	// and LevelFunction).
	Functions []FunctionCount `json:"functions,omitempty"`
	// Blocks are the raw counts (LevelAddress only).
	Blocks []Block `json:"blocks,omitempty"`

	// unmapped is why a report has no source lines (ErrNoDebugInfo,
	// ErrNoSymbols or ErrAddressOnly), nil if it has them.
	unmapped error
}

// Analyze maps counts onto the program's own sources: files outside them
// (toolchain and library code, see Program.Own) go to OtherFiles, out of
// Totals and the LCOV, so that the LCOV opens in genhtml where the
// program's sources are, which has no copy of the toolchain's build tree.
func Analyze(p *Program, c Counts) *Report { return analyze(p, c, false) }

// AnalyzeAll is Analyze with every file in Files and Totals.
func AnalyzeAll(p *Program, c Counts) *Report { return analyze(p, c, true) }

func analyze(p *Program, c Counts, all bool) *Report {
	r := &Report{Level: p.Level, Snapshot: c.Snapshot, Final: c.Snapshot.Final(), Edges: "derived"}
	if c.ExactEdges {
		r.Edges = "exact"
	}
	if !r.Final {
		at := "its start"
		if !c.Snapshot.Time.IsZero() {
			at = c.Snapshot.Time.Format(time.RFC3339)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("snapshot (%s) from %s: the program was still running or the emulator did not exit normally, so anything that ran later is missing", c.Snapshot.Reason, at))
	}
	switch {
	case p.Level == LevelAddress && p.elf:
		r.unmapped = ErrNoSymbols
	case p.Level == LevelAddress:
		r.unmapped = ErrAddressOnly
	case p.Level == LevelFunction:
		r.unmapped = ErrNoDebugInfo
	}
	if r.unmapped != nil {
		r.Notes = append(r.Notes, r.unmapped.Error())
	}
	if r.unmapped != nil && p.stabs {
		r.Notes = append(r.Notes, "the ELF has STABS debug info (what avr-gcc 5 writes for -g), which coverage does not read: build with -gdwarf-4 for lines and branches")
	}
	if p.Level == LevelAddress {
		r.Blocks = c.Blocks
		return r
	}

	a := newAnalysis(p, c)
	files := map[string]*FileReport{}
	file := func(path string) *FileReport {
		if files[path] == nil {
			files[path] = &FileReport{Path: path}
		}
		return files[path]
	}
	unmapped := 0
	var running []string
	for _, fn := range p.Functions {
		fc := FunctionCount{Name: fn.Name, Addr: fn.Addr, File: fn.File, Line: fn.Line, Count: a.entries[fn.Addr],
			Executed: a.maxCount(fn.Addr, fn.Addr+fn.Size) > 0}
		r.Functions = append(r.Functions, fc)
		if fc.Executed && fc.Count == 0 {
			running = append(running, fn.Name)
		}
		if p.Level == LevelFunction {
			tally(&r.Totals.Functions, fc.Count)
			continue
		}
		if fn.File == "" {
			unmapped++
			continue
		}
		f := file(fn.File)
		f.Functions = append(f.Functions, fc)
		tally(&f.Totals.Functions, fc.Count)
	}
	if len(running) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d functions ran without being entered in this window (%s): they were entered before it opened, like main or a task's loop, so their calls count 0 and executed is true", len(running), examples(running)))
	}
	if p.Level == LevelFunction {
		return r
	}
	if unmapped > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d functions have no line info (e.g. from libgcc): they are listed in functions but in no file or total", unmapped))
	}

	type key struct {
		file string
		line int
	}
	lines := map[key]uint64{}
	for _, lr := range p.lines {
		k := key{lr.file, lr.line}
		lines[k] = max(lines[k], a.maxCount(lr.lo, lr.hi))
	}
	for k, n := range lines {
		f := file(k.file)
		f.Lines = append(f.Lines, LineCount{Line: k.line, Count: n})
	}

	branchesOnLine := map[key]int{}
	for _, x := range a.branches {
		lr, ok := p.lineAt(x.addr)
		if !ok {
			continue
		}
		k := key{lr.file, lr.line}
		b := BranchCount{Line: lr.line, Addr: x.addr, Block: branchesOnLine[k]}
		branchesOnLine[k]++
		if o := a.outcomes[x.addr]; o.executed {
			b.Executed = true
			b.Undetermined = !o.known
			b.Taken, b.NotTaken = o.taken, o.notTaken
			if b.Undetermined {
				r.BranchesUndetermined++
			}
		}
		f := file(k.file)
		f.Branches = append(f.Branches, b)
	}

	var outside []string
	for _, f := range files {
		slices.SortFunc(f.Lines, func(a, b LineCount) int { return cmp.Compare(a.Line, b.Line) })
		slices.SortFunc(f.Functions, func(a, b FunctionCount) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Name, b.Name)) })
		slices.SortFunc(f.Branches, func(a, b BranchCount) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Block, b.Block)) })
		for _, l := range f.Lines {
			tally(&f.Totals.Lines, l.Count)
		}
		for _, b := range f.Branches {
			f.Totals.Branches.Found += 2
			if b.Executed && !b.Undetermined {
				f.Totals.Branches.Hit += int(min(b.Taken, 1) + min(b.NotTaken, 1))
			}
		}
		if !p.Own(f.Path) {
			outside = append(outside, f.Path)
			if !all {
				r.OtherFiles = append(r.OtherFiles, *f)
				continue
			}
		}
		// Totals add up the files, as lcov --summary does with the LCOV.
		r.Totals.Lines.Found += f.Totals.Lines.Found
		r.Totals.Lines.Hit += f.Totals.Lines.Hit
		r.Totals.Functions.Found += f.Totals.Functions.Found
		r.Totals.Functions.Hit += f.Totals.Functions.Hit
		r.Totals.Branches.Found += f.Totals.Branches.Found
		r.Totals.Branches.Hit += f.Totals.Branches.Hit
		r.Files = append(r.Files, *f)
	}
	byPath := func(a, b FileReport) int { return cmp.Compare(a.Path, b.Path) }
	slices.SortFunc(r.Files, byPath)
	slices.SortFunc(r.OtherFiles, byPath)
	slices.Sort(outside)
	switch {
	case len(outside) > 0 && all:
		r.Notes = append(r.Notes, fmt.Sprintf("files include %d outside the program's sources (under %s): toolchain and library code, e.g. %s; genhtml stops at the first it cannot read unless given --ignore-errors source", len(outside), strings.Join(p.Roots, " and "), examples(outside)))
	case len(outside) > 0:
		r.Notes = append(r.Notes, fmt.Sprintf("%d files outside the program's sources (under %s) are in other_files, not in files, totals or LCOV: toolchain and library code, e.g. %s (include=all keeps them)", len(outside), strings.Join(p.Roots, " and "), examples(outside)))
	}
	if r.BranchesUndetermined > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d branches ran but their outcomes could not be derived from block counts (shown as not executed); collect with exact edges for them", r.BranchesUndetermined))
	}
	return r
}

// examples names up to three of a list for a note.
func examples(names []string) string {
	if len(names) > 3 {
		return strings.Join(names[:3], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}

func tally(t *Tally, n uint64) {
	t.Found++
	if n > 0 {
		t.Hit++
	}
}

// outcome is what one conditional branch did.
type outcome struct {
	executed, known bool
	taken, notTaken uint64
}

// span is an address range [lo, hi) whose instructions ran count times.
type span struct {
	lo, hi uint64
	count  uint64
}

type analysis struct {
	spans    []span
	entries  map[uint64]uint64 // block start -> executions
	branches []insn            // every conditional branch known, by address
	outcomes map[uint64]outcome
}

func newAnalysis(p *Program, c Counts) *analysis {
	a := &analysis{entries: map[uint64]uint64{}, outcomes: map[uint64]outcome{}}
	if p.ioRestart {
		c.Blocks = p.splitRestarts(c.Blocks)
	}
	for _, b := range c.Blocks {
		a.entries[b.Start] += b.Count
	}
	a.sweep(c.Blocks)
	a.flows(p, c)
	return a
}

// sweep turns possibly overlapping blocks into disjoint spans whose count is
// the sum of the counts of the blocks covering them.
func (a *analysis) sweep(blocks []Block) {
	type ev struct {
		at    uint64
		delta int64
	}
	var evs []ev
	for _, b := range blocks {
		if b.Count == 0 || b.Bytes == 0 {
			continue
		}
		evs = append(evs, ev{b.Start, int64(b.Count)}, ev{b.End(), -int64(b.Count)})
	}
	slices.SortFunc(evs, func(x, y ev) int { return cmp.Compare(x.at, y.at) })
	var level int64
	for i, e := range evs {
		level += e.delta
		if i+1 < len(evs) && evs[i+1].at > e.at && level > 0 {
			a.spans = append(a.spans, span{e.at, evs[i+1].at, uint64(level)})
		}
	}
}

// maxCount is the highest count of the instructions in [lo, hi).
func (a *analysis) maxCount(lo, hi uint64) uint64 {
	i := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].hi > lo })
	var m uint64
	for ; i < len(a.spans) && a.spans[i].lo < hi; i++ {
		m = max(m, a.spans[i].count)
	}
	return m
}

// flows finds every conditional branch and what it did: from exact edges
// when they were recorded, otherwise by solving the flow equations below.
//
// Each block start S is entered entries[S] times. Every entry comes from the
// instruction that ended the previous block: a fall-through, a direct jump or
// call (whose counts are those of the blocks ending in them), a return (one
// per call made by the BL before S), or a conditional branch X, which sends
// notTaken[X] to its next instruction and exec[X]-notTaken[X] to its target.
// An interrupt does not break this: QEMU takes it between blocks, and its
// return enters the block that would have run. So for every S that some X
// targets or falls to,
//
//	entries[S] - known[S] = sum of X's flows into S
//
// and an equation with one unsolved X solves it. Equations are skipped where
// unknown flows may arrive: function entries (calls through pointers,
// vectors), and the successors of blocks that end conditionally inside an IT
// block or do not decode. Return addresses are used only in a second round,
// for branches the others left open: their count assumes every call returned,
// which is false for a call that never returns or is still running.
func (a *analysis) flows(p *Program, c Counts) {
	exec := map[uint64]uint64{}
	byAddr := map[uint64]insn{}
	for _, x := range p.condBranches() {
		byAddr[x.addr] = x
	}
	known := map[uint64]int64{}
	unknownIn := map[uint64]bool{}
	returnTo := map[uint64]bool{}
	inside := map[uint64]bool{} // branches that ran inside blocks: outcomes unknown
	for _, b := range c.Blocks {
		last, inner, ok := p.lastInsn(b)
		if !ok {
			unknownIn[b.End()] = true
			continue
		}
		for _, x := range inner {
			exec[x.addr] += b.Count
			inside[x.addr] = true
			if _, ok := byAddr[x.addr]; !ok {
				byAddr[x.addr] = x
			}
		}
		n := int64(b.Count)
		switch last.flow {
		case flowCond:
			exec[last.addr] += b.Count
			byAddr[last.addr] = last
		case flowIT: // conditional by IT or an AVR skip: either way, unknown split
			unknownIn[last.next()] = true
			if last.target != 0 {
				unknownIn[last.target] = true
			}
		case flowNext:
			known[last.next()] += n
		case flowJump:
			known[last.target] += n
		case flowCall:
			known[last.target] += n
			known[last.next()] += n
			returnTo[last.next()] = true
		case flowCallReg:
			known[last.next()] += n
			returnTo[last.next()] = true
		}
	}
	for _, x := range byAddr {
		a.branches = append(a.branches, x)
	}
	slices.SortFunc(a.branches, func(x, y insn) int { return cmp.Compare(x.addr, y.addr) })

	if c.ExactEdges {
		for _, e := range c.Edges {
			x, ok := byAddr[e.From]
			if !ok {
				continue
			}
			o := a.outcomes[e.From]
			o.executed, o.known = true, true
			if e.To == x.target {
				o.taken += e.Count
			} else if e.To == x.fallTo() {
				o.notTaken += e.Count
			}
			a.outcomes[e.From] = o
		}
		for addr := range exec {
			o := a.outcomes[addr]
			o.executed, o.known = true, !inside[addr]
			a.outcomes[addr] = o
		}
		return
	}

	// into[S]: the branches flowing into S; equations solved greedily.
	into := map[uint64][]term{}
	solved := map[uint64]uint64{} // branch -> notTaken
	for addr, n := range exec {
		x := byAddr[addr]
		switch {
		case inside[addr]:
		case x.target == x.fallTo():
			solved[addr] = n // both outcomes go to the same place
		default:
			into[x.target] = append(into[x.target], term{x, true})
			into[x.fallTo()] = append(into[x.fallTo()], term{x, false})
		}
	}
	targets := slices.Sorted(maps.Keys(into)) // a fixed order gives the same answer every time
	for round := 0; round < 2; round++ {
		for progress := true; progress; {
			progress = false
			for _, s := range targets {
				if unknownIn[s] || p.entries[s] || round == 0 && returnTo[s] {
					continue
				}
				progress = a.solve(s, into[s], exec, solved, int64(a.entries[s])-known[s]) || progress
			}
		}
	}
	for addr, n := range exec {
		o := outcome{executed: true}
		if nt, ok := solved[addr]; ok {
			o.known, o.notTaken, o.taken = true, nt, n-nt
		}
		a.outcomes[addr] = o
	}
}

// term is a conditional branch flowing into an address: by jumping to it
// (taken) or by falling through to it.
type term struct {
	x     insn
	taken bool
}

// solve applies the equation of one address: rest is its entries minus its
// known inflow, terms the branches flowing into it. It reports whether it
// solved a branch.
func (a *analysis) solve(s uint64, terms []term, exec, solved map[uint64]uint64, rest int64) bool {
	var free *term
	for i, t := range terms {
		nt, ok := solved[t.x.addr]
		switch {
		case !ok && free != nil:
			return false // two unknowns
		case !ok:
			free = &terms[i]
		case t.taken:
			rest -= int64(exec[t.x.addr] - nt)
		default:
			rest -= int64(nt)
		}
	}
	if free == nil {
		return false
	}
	n := int64(exec[free.x.addr])
	nt := rest
	if free.taken {
		nt = n - rest
	}
	solved[free.x.addr] = uint64(min(max(nt, 0), n)) // a snapshot mid-block can be one off
	return true
}

// lastInsn decodes a block and returns its last instruction. A block that
// does not decode into exactly its instruction count is refused. A last
// instruction that an IT block makes conditional comes back as flowIT (with
// its target, if direct), since it may or may not have branched.
//
// AVR skips: QEMU translates the instruction a skip may skip into the same
// block, behind a branch of its own, so a block holding a skip leaves no
// trace of the skip's outcome, and the skip comes back in inner (ran, outcome
// unknown). One exception is common (avr-gcc's "sbrs r24, 7; rjmp L"): a
// block ending in a skip and a jump leaves either to after the jump
// (skipped) or to the jump's target, so it comes back as the last
// instruction: a flowCond at the skip, taken to after the jump, not taken
// (fall) to the jump's target. A skip before any other transfer makes that
// transfer flowIT.
func (p *Program) lastInsn(b Block) (last insn, inner []insn, ok bool) {
	ins, ok := p.decodeRange(b.Start, b.End())
	if !ok || len(ins) != int(b.Insns) {
		return insn{}, nil, false
	}
	itLeft := 0
	for i, in := range ins {
		if in.flow == flowSkip && i < len(ins)-2 {
			inner = append(inner, in)
		}
		if i == len(ins)-1 {
			if itLeft > 0 && in.flow != flowNext {
				in.flow = flowIT
			}
			if in.flow == flowSkip { // QEMU ended the block between skip and skipped
				inner = append(inner, in)
				in.flow = flowIT
			}
			if i > 0 && ins[i-1].flow == flowSkip {
				s := ins[i-1]
				switch in.flow {
				case flowJump:
					s.flow, s.target, s.fall, s.hasFall = flowCond, in.next(), in.target, true
					return s, inner, true
				case flowNext:
				default:
					in.flow = flowIT
				}
				inner = append(inner, s)
			}
			return in, inner, true
		}
		if in.flow == flowIT {
			itLeft = itLength(p.bytesAt(in.addr))
		} else if itLeft > 0 {
			itLeft--
		}
	}
	return insn{}, nil, false
}

// itLength is how many instructions the IT instruction at b covers.
func itLength(b []byte) int {
	mask := b[0] & 0xF
	return 4 - bits.TrailingZeros8(mask)
}

// condBranches decodes the program's code (function symbols, on ARM minus
// literal pools by the $t/$d mapping symbols) and returns its conditional
// branches, AVR skips included.
func (p *Program) condBranches() []insn {
	var out []insn
	for _, r := range p.code {
		ins, _ := p.decodeRange(r.lo, r.hi)
		for _, in := range ins {
			if in.flow == flowCond || in.flow == flowSkip {
				out = append(out, in)
			}
		}
	}
	return out
}

// splitRestarts corrects the counts of QEMU 7.2's AVR translator for data
// accesses to I/O registers (LDS, STS, LD, ST below 0x100 or 0x200). Such an
// access in a block faults the first time (the I/O page is never mapped for
// plain loads and stores), so the block is abandoned there after its inline
// counter counted it; QEMU then runs the access alone in a one-instruction
// block with full access, and the rest of the block as a new block. A block
// holding the start m of such a one-instruction block (whose instruction
// does not branch) therefore ran up to m as often as its count says, but
// past m only as often as it was not abandoned there: as many times fewer
// as the one-instruction block ran. It is split into the runs that went
// through and those that stopped at m, which fall through to m.
func (p *Program) splitRestarts(blocks []Block) []Block {
	restarts := map[uint64]uint64{}
	for _, b := range blocks {
		if b.Insns != 1 || b.Count == 0 {
			continue
		}
		if in, ok := p.decode(p.bytesAt(b.Start), b.Start); ok && in.flow == flowNext {
			restarts[b.Start] += b.Count
		}
	}
	if len(restarts) == 0 {
		return blocks
	}
	out := make([]Block, 0, len(blocks))
	for _, b := range blocks {
		if b.Insns == 1 {
			out = append(out, b)
			continue
		}
		ins, ok := p.decodeRange(b.Start, b.End())
		if !ok || len(ins) != int(b.Insns) {
			out = append(out, b)
			continue
		}
		for i, in := range ins {
			left := restarts[in.addr]
			if left == 0 {
				continue
			}
			n := min(left, b.Count)
			restarts[in.addr] -= n
			if i > 0 {
				out = append(out, Block{Start: b.Start, Insns: uint32(i), Bytes: uint32(in.addr - b.Start), Count: n})
			}
			b.Count -= n
			break
		}
		if b.Count > 0 {
			out = append(out, b)
		}
	}
	return out
}
