package coverage

import (
	"cmp"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
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
	// ErrNoDebugInfo means the ELF has function symbols but no DWARF line
	// table, so there are no source lines to report: only functions.
	ErrNoDebugInfo = errors.New("coverage: the ELF has no debug info (no DWARF line table: built without -g, or stripped with --strip-debug): only function-level coverage from its symbols is available; upload the ELF built with -g for lines and branches")
	// ErrNoSymbols means the ELF has neither DWARF nor function symbols (it
	// was fully stripped): coverage is reported per block address only.
	ErrNoSymbols = errors.New("coverage: the ELF has no debug info and no function symbols (fully stripped, as by strip --strip-all or gcc -s): coverage is reported per block address only; an ELF stripped with --strip-debug keeps function-level coverage, one built with -g and not stripped gives lines and branches")
	// ErrAddressOnly means the program is a raw image (BIN or HEX): coverage
	// is reported per block address only.
	ErrAddressOnly = errors.New("coverage: the program is a BIN or HEX image, which has no symbols or debug info: coverage is reported per block address only; upload the ELF for functions, lines and branches")
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
	// Files are the source files with line info, sorted. A relative name in
	// the line table is joined to its unit's compilation directory.
	Files []string
	// Roots are the directories that hold the program's own sources (see
	// Own). Empty when unknown: then every file counts as the program's.
	Roots []string

	// elf is false for a raw image, whose address-only report says so.
	elf bool
	// ioRestart: counts come from QEMU's AVR translator, which abandons a
	// block at its first I/O access (see splitRestarts).
	ioRestart bool
	// stabs: the ELF has STABS debug info instead of DWARF (avr-gcc 5's
	// -g), which the report names as the reason for missing lines.
	stabs bool
	// decode decodes one instruction of the ELF's machine (nil for a raw
	// image, whose counts are not decoded).
	decode func(b []byte, addr uint64) (insn, bool)

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

// decoders are the instruction sets coverage decodes, by ELF machine.
var decoders = map[elf.Machine]func(b []byte, addr uint64) (insn, bool){
	elf.EM_ARM:   decodeThumb,
	elf.EM_RISCV: decodeRISCV,
	elf.EM_AVR:   decodeAVR,
}

// LoadELF reads a 32-bit ELF executable for ARM (Thumb), RISC-V (RV32IMAC)
// or AVR. An ELF without DWARF still loads, at LevelFunction (or
// LevelAddress without function symbols); the report then says so and
// WriteLCOV returns ErrNoDebugInfo.
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
	decode := decoders[f.Machine]
	if decode == nil || f.Class != elf.ELFCLASS32 {
		return nil, fmt.Errorf("coverage: ELF is %s %s, not 32-bit ARM, RISC-V or AVR", f.Class, f.Machine)
	}
	p = &Program{Level: LevelAddress, elf: true, decode: decode, ioRestart: f.Machine == elf.EM_AVR, entries: map[uint64]bool{}}
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
	p.loadSymbols(syms, f.Machine == elf.EM_ARM)
	if len(p.Functions) > 0 {
		p.Level = LevelFunction
	}
	p.stabs = f.Section(".stab") != nil
	d, err := f.DWARF()
	if err != nil || d == nil {
		return p, nil // no DWARF: the level says what is possible
	}
	if err := p.loadLines(d, p.anchor(f.Entry)); err != nil {
		return nil, err
	}
	if len(p.lines) > 0 {
		p.Level = LevelSource
	}
	return p, nil
}

// loadSymbols collects functions and which parts of them are instructions:
// on ARM from the mapping symbols ($t, $d), since functions end in literal
// pools; elsewhere (RISC-V, AVR: gcc keeps constants and jump tables out of
// functions) all of each function.
func (p *Program) loadSymbols(syms []elf.Symbol, arm bool) {
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
	if !arm {
		for _, fn := range p.Functions {
			p.code = append(p.code, codeRange{fn.Addr, fn.Addr + fn.Size})
		}
		return
	}
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

// anchor is the address whose compile unit tells where the program's own
// sources are: main, or the entry point of a program without one.
func (p *Program) anchor(entry uint64) uint64 {
	for _, fn := range p.Functions {
		if fn.Name == "main" {
			return fn.Addr
		}
	}
	return entry &^ 1
}

// loadLines reads every line-table sequence that lies in a function: a
// sequence of a function the linker discarded (--gc-sections) is left at
// address 0 and would otherwise claim whatever really is there. The unit
// holding anchor sets Roots.
func (p *Program) loadLines(d *dwarf.Data, anchor uint64) error {
	files := map[string]bool{}
	anchorDir, anchored := "", false
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
		compDir, _ := e.Val(dwarf.AttrCompDir).(string)
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
				if p.addSequence(seq, compDir, files) && !anchored && anchor >= seq[0].Address && anchor < le.Address {
					anchorDir, anchored = compDir, true
				}
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
	if r, ok := p.lineAt(anchor); ok && anchored {
		p.Roots = sourceRoots(anchorDir, path.Dir(slashed(r.file)))
	}
	return nil
}

// addSequence adds one line-table sequence; it reports whether it was kept.
// Go's reader joins a relative name to the compilation directory for DWARF
// 4, but in DWARF 5 (GNU as, GCC 11 and later) it keeps a relative
// directory as it is, so a name like ../../newlib/libc/machine/arm/memcpy.S
// is joined here: a relative path names no file on the user's machine.
func (p *Program) addSequence(seq []dwarf.LineEntry, compDir string, files map[string]bool) bool {
	if len(seq) < 2 || p.functionAt(seq[0].Address) == nil {
		return false
	}
	for i := 0; i+1 < len(seq); i++ {
		e := seq[i]
		if e.Line == 0 || e.File == nil || seq[i+1].Address <= e.Address {
			continue
		}
		name := e.File.Name
		if !isAbs(slashed(name)) && compDir != "" {
			name = compDir + "/" + name
		}
		name = cleanPath(name)
		files[name] = true
		p.lines = append(p.lines, lineRange{lo: e.Address, hi: seq[i+1].Address, file: name, line: e.Line})
	}
	return true
}

// sourceRoots are the directories of the program's own sources, from the
// unit that holds main: the deepest directory common to its compilation
// directory and its source file's directory (a CMake build directory and
// the source tree beside it share the project's directory). When they share
// nothing but the file system's root, each of the two is a root.
func sourceRoots(compDir, srcDir string) []string {
	compDir = cleanPath(compDir)
	if isAbs(compDir) != isAbs(srcDir) {
		return []string{srcDir} // a relative compilation directory says nothing
	}
	a, b := components(compDir), components(srcDir)
	n := 0
	for n < min(len(a), len(b)) && a[n] == b[n] {
		n++
	}
	switch {
	case !isAbs(srcDir) && n == 0:
		return []string{"."}
	case !isAbs(srcDir) || n > 1: // more than "" (the root of /x) or a drive (C:)
		return []string{strings.Join(a[:n], "/")}
	}
	return []string{compDir, srcDir}
}

// components splits a slashed clean path; "." has none.
func components(p string) []string {
	if p == "." {
		return nil
	}
	return strings.Split(p, "/")
}

// Own reports whether file is one of the program's own sources: it lies
// under one of Roots. Files elsewhere are toolchain and library code
// (newlib, libgcc, the toolchain's headers) built on another machine.
func (p *Program) Own(file string) bool {
	if len(p.Roots) == 0 {
		return true
	}
	f := slashed(file)
	for _, r := range p.Roots {
		if isAbs(r) != isAbs(f) {
			continue
		}
		if r == "." && f != ".." && !strings.HasPrefix(f, "../") || f == r || strings.HasPrefix(f, strings.TrimSuffix(r, "/")+"/") {
			return true
		}
	}
	return false
}

// cleanPath cleans a file name of the build machine: a Windows one
// (C:\x\..\y) with slashes, since Clean here knows only slashes.
func cleanPath(p string) string {
	if s := slashed(p); len(s) >= 2 && s[1] == ':' {
		return path.Clean(s)
	}
	return filepath.Clean(p)
}

// slashed is a path with a Windows build's separators as slashes, so paths
// of an ELF built on any system compare alike.
func slashed(p string) string { return strings.ReplaceAll(p, `\`, "/") }

// isAbs reports whether a slashed path is absolute on its build machine
// (/x, or C:/x from Windows).
func isAbs(p string) bool {
	return strings.HasPrefix(p, "/") || len(p) >= 3 && p[1] == ':' && p[2] == '/'
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
		in, ok := p.decode(b[a-lo:], a)
		if !ok {
			return ins, false
		}
		ins = append(ins, in)
		a += in.size
	}
	return ins, len(ins) > 0 && ins[len(ins)-1].next() == hi
}
