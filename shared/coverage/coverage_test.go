package coverage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDecodeThumb checks the decoder against what GNU as assembled (the
// encodings and targets are from arm-none-eabi-objdump).
func TestDecodeThumb(t *testing.T) {
	for _, c := range []struct {
		addr   uint64
		hw     []uint16
		flow   flow
		target uint64
		asm    string
	}{
		{0x100, []uint16{0xb10b}, flowCond, 0x106, "cbz r3"},
		{0x102, []uint16{0xb900}, flowCond, 0x106, "cbnz r0"},
		{0x104, []uint16{0xbf00}, flowNext, 0, "nop"},
		{0x106, []uint16{0xf041, 0x877b}, flowCond, 0x2000, "bne.w"},
		{0x10a, []uint16{0xd0f9}, flowCond, 0x100, "beq.n back"},
		{0x244, []uint16{0xd803}, flowCond, 0x24e, "bhi.n"},
		{0x10c, []uint16{0xf000, 0xb81a}, flowJump, 0x144, "b.w"},
		{0x24c, []uint16{0xe003}, flowJump, 0x256, "b.n"},
		{0x3c0, []uint16{0xe7e1}, flowJump, 0x386, "b.n back"},
		{0x110, []uint16{0xf001, 0xff76}, flowCall, 0x2000, "bl"},
		{0x2002, []uint16{0xf7fe, 0xf87d}, flowCall, 0x100, "bl back"},
		{0x2006, []uint16{0xf43e, 0xa87e}, flowCond, 0x106, "beq.w back"},
		{0x200a, []uint16{0xf7fe, 0xb879}, flowJump, 0x100, "b.w back"},
		{0x114, []uint16{0x4798}, flowCallReg, 0, "blx r3"},
		{0x116, []uint16{0x4770}, flowIndirect, 0, "bx lr"},
		{0x118, []uint16{0xbd10}, flowIndirect, 0, "pop {r4, pc}"},
		{0x25c, []uint16{0xbc80}, flowNext, 0, "pop {r7}"},
		{0x11a, []uint16{0xe8bd, 0x8ff0}, flowIndirect, 0, "ldmia.w sp!, {..., pc}"},
		{0x11e, []uint16{0xf85d, 0xfb04}, flowIndirect, 0, "ldr.w pc, [sp], #4"},
		{0x122, []uint16{0xf8d0, 0xf008}, flowIndirect, 0, "ldr.w pc, [r0, #8]"},
		{0x126, []uint16{0xe8df, 0xf001}, flowIndirect, 0, "tbb"},
		{0x12a, []uint16{0xe8df, 0xf011}, flowIndirect, 0, "tbh"},
		{0x12e, []uint16{0x4697}, flowIndirect, 0, "mov pc, r2"},
		{0x25a, []uint16{0x46bd}, flowNext, 0, "mov sp, r7"},
		{0x130, []uint16{0xbf08}, flowIT, 0, "it eq"},
		{0x13a, []uint16{0xbf30}, flowNext, 0, "wfi"},
		{0x13c, []uint16{0xbeab}, flowNext, 0, "bkpt 0xab"},
		{0x13e, []uint16{0xdf00}, flowNext, 0, "svc 0"},
		{0x142, []uint16{0xde00}, flowNext, 0, "udf"},
	} {
		b := make([]byte, 2*len(c.hw))
		for i, h := range c.hw {
			binary.LittleEndian.PutUint16(b[2*i:], h)
		}
		in, ok := decodeThumb(b, c.addr)
		if !ok || in.flow != c.flow || in.target != c.target || in.size != uint64(len(b)) {
			t.Errorf("%s at 0x%x: got %+v ok=%v, want flow %d target 0x%x", c.asm, c.addr, in, ok, c.flow, c.target)
		}
	}
	if _, ok := decodeThumb([]byte{0x41, 0xf0}, 0); ok {
		t.Error("half of a 32-bit instruction decoded")
	}
}

func TestITLength(t *testing.T) {
	for hw, n := range map[uint16]int{0xbf08: 1, 0xbf1c: 2, 0xbf0e: 3, 0xbf01: 4} {
		b := binary.LittleEndian.AppendUint16(nil, hw)
		if got := itLength(b); got != n {
			t.Errorf("IT 0x%04x covers %d, want %d", hw, got, n)
		}
	}
}

const sample = `mscov 1 reason=interval seq=3 time_ms=1700000000123 edges=exact future=1
B 0x100 3 8 5
B 0x100 3 8 2
B 0x108 1 2 1
Z whatever comes later
E 0x106 0x2000 4
E 0x106 0x2000 1

E 0x106 0x10a 2
`

func TestParseAndWrite(t *testing.T) {
	c, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{
		Snapshot:   Snapshot{Reason: "interval", Seq: 3, Time: time.UnixMilli(1700000000123).UTC()},
		ExactEdges: true,
		Blocks:     []Block{{0x100, 3, 8, 7}, {0x108, 1, 2, 1}},
		Edges:      []Edge{{0x106, 0x10a, 2}, {0x106, 0x2000, 5}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("parsed %+v\nwant %+v", c, want)
	}
	if c.Snapshot.Final() {
		t.Error("an interval snapshot is final")
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := Parse(&buf)
	if err != nil || !reflect.DeepEqual(again, c) {
		t.Fatalf("round trip: %+v %v", again, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"gcov 1\n",
		"mscov 2 reason=exit\n",
		"mscov 1\nB 0x100 3 8\n",
		"mscov 1\nB 0x100 three 8 1\n",
		"mscov 1\nE 0x100 0x104 -1\n",
	} {
		if _, err := Parse(strings.NewReader(in)); !errors.Is(err, ErrFormat) {
			t.Errorf("%q: %v, want ErrFormat", in, err)
		}
	}
}

func TestMerge(t *testing.T) {
	a := Counts{Snapshot: Snapshot{Reason: "exit", Time: time.UnixMilli(1000)}, ExactEdges: true,
		Blocks: []Block{{0x100, 3, 8, 5}}, Edges: []Edge{{0x106, 0x10a, 5}}}
	b := Counts{Snapshot: Snapshot{Reason: "exit", Time: time.UnixMilli(2000)}, ExactEdges: true,
		Blocks: []Block{{0x100, 3, 8, 1}, {0x200, 1, 2, 4}}, Edges: []Edge{{0x106, 0x10a, 1}}}
	m := Merge(a, b)
	want := Counts{Snapshot: Snapshot{Reason: "merge", Time: time.UnixMilli(2000)}, ExactEdges: true,
		Blocks: []Block{{0x100, 3, 8, 6}, {0x200, 1, 2, 4}}, Edges: []Edge{{0x106, 0x10a, 6}}}
	if !reflect.DeepEqual(m, want) || !m.Snapshot.Final() {
		t.Fatalf("merged %+v\nwant %+v", m, want)
	}
	b.Snapshot.Reason, b.ExactEdges = "request", false
	m = Merge(a, b)
	if m.Snapshot.Final() || m.ExactEdges || len(m.Edges) != 0 {
		t.Fatalf("merge with a partial, derived snapshot: %+v", m)
	}
}

func TestSubtract(t *testing.T) {
	before := Counts{Blocks: []Block{{0x100, 3, 8, 5}, {0x200, 1, 2, 4}}, Edges: []Edge{{0x106, 0x10a, 5}}}
	after := Counts{Snapshot: Snapshot{Reason: "request", Seq: 9}, Blocks: []Block{{0x100, 3, 8, 7}, {0x200, 1, 2, 4}, {0x300, 2, 4, 1}},
		Edges: []Edge{{0x106, 0x10a, 6}}}
	want := Counts{Snapshot: after.Snapshot, Blocks: []Block{{0x100, 3, 8, 2}, {0x300, 2, 4, 1}}, Edges: []Edge{{0x106, 0x10a, 1}}}
	if got := Subtract(after, before); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// TestSweep: an instruction's count is the sum over the blocks holding it,
// a range's count the highest of its instructions.
func TestSweep(t *testing.T) {
	a := &analysis{}
	a.sweep([]Block{{0x100, 4, 10, 1}, {0x104, 2, 6, 10}, {0x200, 1, 2, 0}})
	for _, c := range []struct {
		lo, hi uint64
		want   uint64
	}{
		{0x100, 0x104, 1}, {0x104, 0x10a, 11}, {0x100, 0x10a, 11}, {0x108, 0x110, 11}, {0x10a, 0x110, 0}, {0x200, 0x202, 0},
	} {
		if got := a.maxCount(c.lo, c.hi); got != c.want {
			t.Errorf("[0x%x, 0x%x): %d, want %d", c.lo, c.hi, got, c.want)
		}
	}
}

// TestOwnSources: the program's sources are found from the unit holding
// main, for the layouts builds produce, and the toolchain's files are not.
func TestOwnSources(t *testing.T) {
	for _, c := range []struct {
		name, compDir, mainFile string
		roots                   []string
		own, other              []string
	}{
		{"make at the top", "/home/u/proj", "/home/u/proj/src/main.c", []string{"/home/u/proj"},
			[]string{"/home/u/proj/drivers/uart.c", "/home/u/proj/startup.s"},
			[]string{"/home/u/projx/a.c", "/build/newlib-Hs9v/newlib/libc/stdlib/malloc.c", "/usr/lib/gcc/arm-none-eabi/12.2.1/include/arm_acle.h", "src/memcpy.S"}},
		{"cmake build dir", "/home/u/proj/build/app", "/home/u/proj/app/main.c", []string{"/home/u/proj"},
			[]string{"/home/u/proj/lib/x.c", "/home/u/proj/build/gen.c"}, []string{"/home/tcwg/build/sbrk.c"}},
		{"nothing in common", "/tmp/build", "/proj/src/main.c", []string{"/tmp/build", "/proj/src"},
			[]string{"/tmp/build/gen.c", "/proj/src/x/y.c"}, []string{"/proj/lib/z.c", "/tmp/buildx/a.c"}},
		{"prefix-mapped to .", ".", "src/main.c", []string{"."},
			[]string{"src/a.c", "lib/b.c"}, []string{"../outside.c", "/opt/tc/newlib/memcpy.S"}},
		{"windows", `C:\Users\u\proj\Debug`, "C:/Users/u/proj/Core/Src/main.c", []string{"C:/Users/u/proj"},
			[]string{`C:\Users\u\proj\Drivers\hal.c`}, []string{"C:/ST/toolchain/newlib/sbrk.c", "/build/newlib/sbrk.c"}},
		{"windows drives only", `D:\build`, "C:/proj/main.c", []string{"D:/build", "C:/proj"},
			[]string{"C:/proj/a.c", "D:/build/b.c"}, []string{"C:/other/c.c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &Program{Roots: sourceRoots(c.compDir, path.Dir(cleanPath(c.mainFile)))}
			if !slices.Equal(p.Roots, c.roots) {
				t.Fatalf("roots %q, want %q", p.Roots, c.roots)
			}
			for _, f := range c.own {
				if !p.Own(f) {
					t.Errorf("%s is not the program's", f)
				}
			}
			for _, f := range c.other {
				if p.Own(f) {
					t.Errorf("%s is the program's", f)
				}
			}
		})
	}
	if !(&Program{}).Own("/anything.c") {
		t.Error("without roots, a file is not the program's")
	}
}
