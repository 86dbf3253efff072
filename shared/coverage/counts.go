package coverage

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrFormat means a counts file is not in the mscov text format.
var ErrFormat = errors.New("coverage: not an mscov counts file")

// Block is a run of guest code executed as a unit (a QEMU translation block):
// Count executions of Insns instructions spanning Bytes bytes from Start.
type Block struct {
	Start uint64 `json:"start"`
	Insns uint32 `json:"insns"`
	Bytes uint32 `json:"bytes"`
	Count uint64 `json:"count"`
}

// End is the address just past the block.
func (b Block) End() uint64 { return b.Start + uint64(b.Bytes) }

// Edge is an observed transfer from the conditional branch instruction at
// From to the block starting at To.
type Edge struct {
	From  uint64 `json:"from"`
	To    uint64 `json:"to"`
	Count uint64 `json:"count"`
}

// Snapshot says when and why counts were written.
type Snapshot struct {
	// Reason is start, interval, request, exit, or merge.
	Reason string    `json:"reason"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
}

// Final reports whether the counts were written at a normal exit, so nothing
// that ran is missing from them.
func (s Snapshot) Final() bool { return s.Reason == "exit" || s.Reason == "merge" }

// Counts are the raw execution counts of one program.
type Counts struct {
	Snapshot Snapshot
	// ExactEdges says Edges were recorded for every conditional branch;
	// otherwise Edges is empty and branch edges are derived from the blocks.
	ExactEdges bool
	Blocks     []Block // sorted by Start, then Insns
	Edges      []Edge  // sorted by From, then To
}

// Parse reads counts in the mscov text format, version 1 (see the plugin's
// cov.c for the authoritative description):
//
//	mscov 1 reason=<r> seq=<n> time_ms=<unix ms> edges=<derived|exact>
//	B <start> <insns> <bytes> <count>
//	E <branch> <to> <count>
//
// Addresses are hex with 0x, counts decimal. Duplicate B (same start, insns,
// bytes) and E (same branch, to) lines are added up; unknown line types and
// header keys are ignored, so the format can grow.
func Parse(r io.Reader) (Counts, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return Counts{}, fmt.Errorf("coverage: reading counts: %w", err)
		}
		return Counts{}, fmt.Errorf("%w: empty", ErrFormat)
	}
	var c Counts
	head := strings.Fields(sc.Text())
	if len(head) < 2 || head[0] != "mscov" {
		return Counts{}, fmt.Errorf("%w: first line %q", ErrFormat, sc.Text())
	}
	if head[1] != "1" {
		return Counts{}, fmt.Errorf("%w: version %q, want 1", ErrFormat, head[1])
	}
	for _, kv := range head[2:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "reason":
			c.Snapshot.Reason = v
		case "seq":
			c.Snapshot.Seq, _ = strconv.ParseUint(v, 10, 64)
		case "time_ms":
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				c.Snapshot.Time = time.UnixMilli(ms).UTC()
			}
		case "edges":
			c.ExactEdges = v == "exact"
		}
	}
	blocks := map[Block]uint64{}
	edges := map[Edge]uint64{}
	for n := 2; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		switch f[0] {
		case "B":
			var b Block
			var v [4]uint64
			if v, err = numbers(f, 4); err == nil {
				if v[1] > 1<<32-1 || v[2] > 1<<32-1 {
					err = errors.New("size out of range")
				}
				b = Block{Start: v[0], Insns: uint32(v[1]), Bytes: uint32(v[2])}
				blocks[b] += v[3]
			}
		case "E":
			var v [4]uint64
			if v, err = numbers(f, 3); err == nil {
				edges[Edge{From: v[0], To: v[1]}] += v[2]
			}
		}
		if err != nil {
			return Counts{}, fmt.Errorf("%w: line %d %q: %v", ErrFormat, n, sc.Text(), err)
		}
	}
	if err := sc.Err(); err != nil {
		return Counts{}, fmt.Errorf("coverage: reading counts: %w", err)
	}
	for b, n := range blocks {
		b.Count = n
		c.Blocks = append(c.Blocks, b)
	}
	for e, n := range edges {
		e.Count = n
		c.Edges = append(c.Edges, e)
	}
	c.sort()
	return c, nil
}

// numbers parses the n fields after the line type: addresses (0x...) or
// decimal counts.
func numbers(f []string, n int) ([4]uint64, error) {
	var v [4]uint64
	if len(f) != n+1 {
		return v, fmt.Errorf("want %d fields, got %d", n, len(f)-1)
	}
	for i, s := range f[1:] {
		var err error
		if h, ok := strings.CutPrefix(s, "0x"); ok {
			v[i], err = strconv.ParseUint(h, 16, 64)
		} else {
			v[i], err = strconv.ParseUint(s, 10, 64)
		}
		if err != nil {
			return v, err
		}
	}
	return v, nil
}

func (c *Counts) sort() {
	slices.SortFunc(c.Blocks, func(a, b Block) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Insns, b.Insns), cmp.Compare(a.Bytes, b.Bytes))
	})
	slices.SortFunc(c.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
}

// WriteTo writes the counts in the format Parse reads, so merged counts can
// be stored and merged again.
func (c Counts) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	edges := "derived"
	if c.ExactEdges {
		edges = "exact"
	}
	fmt.Fprintf(bw, "mscov 1 reason=%s seq=%d time_ms=%d edges=%s\n", c.Snapshot.Reason, c.Snapshot.Seq, c.Snapshot.Time.UnixMilli(), edges)
	for _, b := range c.Blocks {
		fmt.Fprintf(bw, "B 0x%x %d %d %d\n", b.Start, b.Insns, b.Bytes, b.Count)
	}
	for _, e := range c.Edges {
		fmt.Fprintf(bw, "E 0x%x 0x%x %d\n", e.From, e.To, e.Count)
	}
	n := int64(bw.Buffered())
	return n, bw.Flush()
}

// Merge adds up counts of the same program (several runs, shards or
// sessions). The result is final only if every input is, and has exact edges
// only if every input has: derived edges are recomputed from the summed
// blocks, which is as good as deriving them per run.
func Merge(cs ...Counts) Counts {
	out := Counts{Snapshot: Snapshot{Reason: "merge"}, ExactEdges: len(cs) > 0}
	blocks := map[Block]uint64{}
	edges := map[Edge]uint64{}
	for _, c := range cs {
		if !c.Snapshot.Final() {
			out.Snapshot.Reason = "merge-partial"
		}
		if c.Snapshot.Time.After(out.Snapshot.Time) {
			out.Snapshot.Time = c.Snapshot.Time
		}
		out.ExactEdges = out.ExactEdges && c.ExactEdges
		for _, b := range c.Blocks {
			n := b.Count
			b.Count = 0
			blocks[b] += n
		}
		for _, e := range c.Edges {
			n := e.Count
			e.Count = 0
			edges[e] += n
		}
	}
	for b, n := range blocks {
		b.Count = n
		out.Blocks = append(out.Blocks, b)
	}
	if out.ExactEdges {
		for e, n := range edges {
			e.Count = n
			out.Edges = append(out.Edges, e)
		}
	}
	out.sort()
	return out
}

// Subtract returns what ran between two snapshots of the same emulator:
// after minus before, block by block. It gives start/stop windows on an
// emulator that collects all the time. The result keeps after's snapshot.
func Subtract(after, before Counts) Counts {
	out := Counts{Snapshot: after.Snapshot, ExactEdges: after.ExactEdges}
	blocks := map[Block]uint64{}
	for _, b := range before.Blocks {
		n := b.Count
		b.Count = 0
		blocks[b] += n
	}
	for _, b := range after.Blocks {
		n := b.Count
		b.Count = 0
		if n > blocks[b] {
			b.Count = n - blocks[b]
			out.Blocks = append(out.Blocks, b)
		}
	}
	edges := map[Edge]uint64{}
	for _, e := range before.Edges {
		n := e.Count
		e.Count = 0
		edges[e] += n
	}
	for _, e := range after.Edges {
		n := e.Count
		e.Count = 0
		if n > edges[e] {
			e.Count = n - edges[e]
			out.Edges = append(out.Edges, e)
		}
	}
	out.sort()
	return out
}
