package coverage

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteLCOV writes the report as an LCOV tracefile (geninfo(1) format), one
// record per source file, with test name tn (may be empty). Branches are
// BRDA:<line>,<block>,<branch>,<count> with branch 0 = jumped to the target
// and 1 = fell through; a branch that never ran (or whose outcomes are
// undetermined) is "-". Only Files are written, not OtherFiles. It needs
// source lines: ErrNoDebugInfo for an ELF without DWARF, ErrNoSymbols for
// one without symbols either, ErrAddressOnly for BIN/HEX.
func (r *Report) WriteLCOV(w io.Writer, tn string) error {
	if r.unmapped != nil {
		return r.unmapped
	}
	bw := bufio.NewWriter(w)
	// LCOV test names are letters, digits and underscores.
	tn = strings.Map(func(c rune) rune {
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			return c
		}
		return '_'
	}, tn)
	for _, f := range r.Files {
		fmt.Fprintf(bw, "TN:%s\nSF:%s\n", tn, f.Path)
		for _, fn := range f.Functions {
			fmt.Fprintf(bw, "FN:%d,%s\n", fn.Line, fn.Name)
		}
		for _, fn := range f.Functions {
			fmt.Fprintf(bw, "FNDA:%d,%s\n", fn.Count, fn.Name)
		}
		fmt.Fprintf(bw, "FNF:%d\nFNH:%d\n", f.Totals.Functions.Found, f.Totals.Functions.Hit)
		for _, b := range f.Branches {
			if !b.Executed || b.Undetermined {
				fmt.Fprintf(bw, "BRDA:%d,%d,0,-\nBRDA:%d,%d,1,-\n", b.Line, b.Block, b.Line, b.Block)
				continue
			}
			fmt.Fprintf(bw, "BRDA:%d,%d,0,%d\nBRDA:%d,%d,1,%d\n", b.Line, b.Block, b.Taken, b.Line, b.Block, b.NotTaken)
		}
		fmt.Fprintf(bw, "BRF:%d\nBRH:%d\n", f.Totals.Branches.Found, f.Totals.Branches.Hit)
		for _, l := range f.Lines {
			fmt.Fprintf(bw, "DA:%d,%d\n", l.Line, l.Count)
		}
		fmt.Fprintf(bw, "LF:%d\nLH:%d\nend_of_record\n", f.Totals.Lines.Found, f.Totals.Lines.Hit)
	}
	return bw.Flush()
}

// WriteJSON writes the report as indented JSON: level, notes, snapshot,
// totals, per-file totals, functions, line counts and branches.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
