package coverage

import (
	"cmp"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Level is how far counts can be mapped back to the program.
type Level string

const (
	// LevelSource: files, lines, functions and branches (ELF with DWARF).
	LevelSource Level = "source"
	// LevelFunction: functions from ELF symbols only (an ELF without DWARF).
	LevelFunction Level = "function"
	// LevelAddress: raw block addresses (BIN or HEX images, or an ELF with
	// neither DWARF nor function symbols).
	LevelAddress Level = "address"
)

var (
	// ErrNoDebugInfo means the ELF has no DWARF line table, so there are no
	// source lines to report: only functions (from symbols) and addresses.
	ErrNoDebugInfo = errors.New("coverage: the ELF has no debug info (no DWARF line table): build it with -g; only function-level coverage from its symbols is available")
	// ErrAddressOnly means the program is a raw image (BIN or HEX) or an ELF
	// without symbols: coverage is reported per block address only.
	ErrAddressOnly = errors.New("coverage: the program has no symbols or debug info (a BIN or HEX image): coverage is reported per block address only")
)

// Function is a function symbol of the program.
type Function struct {
	Name string
	Addr uint64 // entry address (Thumb bit cleared)
	Size uint64
	File string // "" without DWARF
	Line int
}

// lineRange is a run of instructions [lo, hi) attributed to one source line.
type lineRange struct {
	lo, hi uint64
	file   string
	line   int
}

// codeRange is program text [lo, hi) known to hold instructions.
type codeRange struct{ lo, hi uint64 }

// segment is loaded bytes at an address.
type segment struct {
	addr uint64
	data []byte
}

// Program is what coverage maps counts onto: code bytes, functions, line
// table. It is immutable once loaded and safe for concurrent use.
type Program struct {
	Level     Level
	Functions []Function // sorted by Addr
	// Files are the source files with line info, sorted.
	Files []string

	lines    []lineRange // sorted by lo
	code     []codeRange // sorted, from function symbols minus $d data
	segments []segment
	// entries are addresses reachable other than by a direct branch or a
	// fall-through: function entries (calls through pointers, vectors).
	entries map[uint64]bool
}

// RawProgram is a program known only as bytes (BIN or HEX): counts map to
// block addresses.
func RawProgram() *Program { return &Program{Level: LevelAddress} }

// LoadELF reads a 32-bit ARM ELF executable. An ELF without DWARF still
// loads, at LevelFunction (or LevelAddress without function symbols); the
// report then says so and WriteLCOV returns ErrNoDebugInfo.
func LoadELF(r io.ReaderAt) (p *Program, err error) {
	// Images are uploaded by users; a malformed one must fail this call,
	// not take the process down with a panic deep in debug/dwarf.
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("coverage: malformed ELF or DWARF: %v", v)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("coverage: reading ELF: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_ARM || f.Class != elf.ELFCLASS32 {
		return nil, fmt.Errorf("coverage: ELF is %s %s, not 32-bit ARM", f.Class, f.Machine)
	}
	p = &Program{Level: LevelAddress, entries: map[uint64]bool{}}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&elf.SHF_EXECINSTR == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("coverage: reading section %s: %w", s.Name, err)
		}
		p.segments = append(p.segments, segment{addr: s.Addr, data: data})
	}
	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, fmt.Errorf("coverage: reading ELF symbols: %w", err)
	}
	p.loadSymbols(syms)
	if len(p.Functions) > 0 {
		p.Level = LevelFunction
	}
	d, err := f.DWARF()
	if err != nil || d == nil {
		return p, nil // no DWARF: the level says what is possible
	}
	if err := p.loadLines(d); err != nil {
		return nil, err
	}
	if len(p.lines) > 0 {
		p.Level = LevelSource
	}
	return p, nil
}

// loadSymbols collects functions and, from the ARM mapping symbols ($t, $d),
// which parts of them are instructions rather than literal pools.
func (p *Program) loadSymbols(syms []elf.Symbol) {
	type mark struct {
		addr uint64
		code bool
	}
	var marks []mark
	for _, s := range syms {
		switch {
		case elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0:
			addr := s.Value &^ 1
			p.Functions = append(p.Functions, Function{Name: s.Name, Addr: addr, Size: s.Size})
			p.entries[addr] = true
		case s.Name == "$t" || strings.HasPrefix(s.Name, "$t."):
			marks = append(marks, mark{s.Value, true})
		case s.Name == "$d" || strings.HasPrefix(s.Name, "$d.") || s.Name == "$a":
			marks = append(marks, mark{s.Value, false})
		}
	}
	slices.SortFunc(p.Functions, func(a, b Function) int { return cmp.Compare(a.Addr, b.Addr) })
	p.Functions = slices.CompactFunc(p.Functions, func(a, b Function) bool { return a.Addr == b.Addr && a.Name == b.Name })
	if len(marks) == 0 {
		return // no mapping symbols: only executed blocks are known to be code
	}
	slices.SortStableFunc(marks, func(a, b mark) int { return cmp.Compare(a.addr, b.addr) })
	for _, fn := range p.Functions {
		lo, hi := fn.Addr, fn.Addr+fn.Size
		// The mapping state at lo is the last mark at or before it.
		i := sort.Search(len(marks), func(i int) bool { return marks[i].addr > lo })
		code := i > 0 && marks[i-1].code
		start := lo
		for ; i < len(marks) && marks[i].addr < hi; i++ {
			if code && !marks[i].code {
				p.code = append(p.code, codeRange{start, marks[i].addr})
			}
			if !code && marks[i].code {
				start = marks[i].addr
			}
			code = marks[i].code
		}
		if code {
			p.code = append(p.code, codeRange{start, hi})
		}
	}
}

// loadLines reads every line-table sequence that lies in a function: a
// sequence of a function the linker discarded (--gc-sections) is left at
// address 0 and would otherwise claim whatever really is there.
func (p *Program) loadLines(d *dwarf.Data) error {
	files := map[string]bool{}
	rd := d.Reader()
	for {
		e, err := rd.Next()
		if err != nil {
			return fmt.Errorf("coverage: reading DWARF: %w", err)
		}
		if e == nil {
			break
		}
		rd.SkipChildren() // only compile units matter, not what they hold
		if e.Tag != dwarf.TagCompileUnit {
			continue
		}
		lr, err := d.LineReader(e)
		if err != nil {
			return fmt.Errorf("coverage: reading the DWARF line table: %w", err)
		}
		if lr == nil {
			continue
		}
		var seq []dwarf.LineEntry
		var le dwarf.LineEntry
		for {
			if err := lr.Next(&le); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("coverage: reading the DWARF line table: %w", err)
			}
			seq = append(seq, le)
			if le.EndSequence {
				p.addSequence(seq, files)
				seq = seq[:0]
			}
		}
	}
	for f := range files {
		p.Files = append(p.Files, f)
	}
	slices.Sort(p.Files)
	slices.SortFunc(p.lines, func(a, b lineRange) int { return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi)) })
	for i := range p.Functions {
		fn := &p.Functions[i]
		if r, ok := p.lineAt(fn.Addr); ok {
			fn.File, fn.Line = r.file, r.line
		}
	}
	return nil
}

func (p *Program) addSequence(seq []dwarf.LineEntry, files map[string]bool) {
	if len(seq) < 2 || p.functionAt(seq[0].Address) == nil {
		return
	}
	for i := 0; i+1 < len(seq); i++ {
		e := seq[i]
		if e.Line == 0 || e.File == nil || seq[i+1].Address <= e.Address {
			continue
		}
		name := filepath.Clean(e.File.Name)
		files[name] = true
		p.lines = append(p.lines, lineRange{lo: e.Address, hi: seq[i+1].Address, file: name, line: e.Line})
	}
}

// functionAt is the function containing addr, or nil.
func (p *Program) functionAt(addr uint64) *Function {
	i := sort.Search(len(p.Functions), func(i int) bool { return p.Functions[i].Addr > addr })
	if i == 0 {
		return nil
	}
	fn := &p.Functions[i-1]
	if addr >= fn.Addr+fn.Size {
		return nil
	}
	return fn
}

// lineAt is the line-table range holding addr.
func (p *Program) lineAt(addr uint64) (lineRange, bool) {
	i := sort.Search(len(p.lines), func(i int) bool { return p.lines[i].lo > addr })
	for j := i - 1; j >= 0 && j >= i-4; j-- {
		if addr >= p.lines[j].lo && addr < p.lines[j].hi {
			return p.lines[j], true
		}
	}
	return lineRange{}, false
}

// bytesAt is the loaded code from addr to the end of its section.
func (p *Program) bytesAt(addr uint64) []byte {
	for _, s := range p.segments {
		if addr >= s.addr && addr < s.addr+uint64(len(s.data)) {
			return s.data[addr-s.addr:]
		}
	}
	return nil
}

// decodeRange decodes [lo, hi) linearly; ok is false if it does not decode
// into whole instructions.
func (p *Program) decodeRange(lo, hi uint64) (ins []insn, ok bool) {
	b := p.bytesAt(lo)
	for a := lo; a < hi; {
		in, ok := decodeThumb(b[a-lo:], a)
		if !ok {
			return ins, false
		}
		ins = append(ins, in)
		a += in.size
	}
	return ins, len(ins) > 0 && ins[len(ins)-1].next() == hi
}
