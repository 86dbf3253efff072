package coverage

import (
	"encoding/binary"
	"testing"
)

// TestDecodeRISCV checks the decoder against what GNU as assembled for
// rv32imac (encodings and targets from riscv64-unknown-elf-objdump).
func TestDecodeRISCV(t *testing.T) {
	for _, c := range []struct {
		addr   uint64
		word   uint32 // a 16-bit instruction when size is 2
		size   uint64
		flow   flow
		target uint64
		asm    string
	}{
		{0x0, 0x074000ef, 4, flowCall, 0x74, "jal ra, far"},
		{0x4, 0xffdff06f, 4, flowJump, 0x0, "j _s"},
		{0x8, 0x00008067, 4, flowIndirect, 0, "ret"},
		{0xc, 0x008280e7, 4, flowCallReg, 0, "jalr 8(t0)"},
		{0x10, 0x30200073, 4, flowIndirect, 0, "mret"},
		{0x14, 0x00000073, 4, flowNext, 0, "ecall"},
		{0x18, 0x00100073, 4, flowNext, 0, "ebreak"},
		{0x1c, 0xfeb542e3, 4, flowCond, 0x0, "blt a0, a1, back"},
		{0x20, 0x04b55a63, 4, flowCond, 0x74, "bge a0, a1, far"},
		{0x20400028, 0x00c5f963, 4, flowCond, 0x2040003a, "bgeu a1, a2"},
		{0x204000f8, 0x08f49e63, 4, flowCond, 0x20400194, "bne s1, a5"},
		{0x20400196, 0xf287e0e3, 4, flowCond, 0x204000b6, "bltu a5, s0, back"},
		{0x24, 0x8282, 2, flowIndirect, 0, "c.jr t0"},
		{0x26, 0x9782, 2, flowCallReg, 0, "c.jalr a5"},
		{0x28, 0x3fe1, 2, flowCall, 0x0, "c.jal back"},
		{0x2a, 0xa0a9, 2, flowJump, 0x74, "c.j far"},
		{0x20400056, 0x2021, 2, flowCall, 0x2040005e, "c.jal main"},
		{0x20400038, 0xbfc5, 2, flowJump, 0x20400028, "c.j back"},
		{0x2c, 0xd971, 2, flowCond, 0x0, "c.beqz a0, back"},
		{0x2e, 0xf8e9, 2, flowCond, 0x0, "c.bnez s1, back"},
		{0x2040011a, 0xc50d, 2, flowCond, 0x20400144, "c.beqz a0"},
		{0x204001ba, 0xe509, 2, flowCond, 0x204001c4, "c.bnez a0"},
		{0x30, 0x9002, 2, flowNext, 0, "c.ebreak"},
		{0x32, 0x0001, 2, flowNext, 0, "c.nop"},
		{0x204001c2, 0x8082, 2, flowIndirect, 0, "ret (c.jr ra)"},
		{0x20400058, 0x10500073, 4, flowNext, 0, "wfi"},
	} {
		b := binary.LittleEndian.AppendUint32(nil, c.word)[:c.size]
		in, ok := decodeRISCV(b, c.addr)
		if !ok || in.flow != c.flow || in.target != c.target || in.size != c.size {
			t.Errorf("%s at 0x%x: got %+v ok=%v, want flow %d target 0x%x size %d", c.asm, c.addr, in, ok, c.flow, c.target, c.size)
		}
	}
	if _, ok := decodeRISCV([]byte{0x63, 0x09}, 0); ok {
		t.Error("half of a 32-bit instruction decoded")
	}
}

// TestDecodeAVR checks the decoder against what avr-as assembled and
// avr-gcc linked for the atmega2560 (avr-objdump's encodings and targets).
func TestDecodeAVR(t *testing.T) {
	for _, c := range []struct {
		addr   uint64
		words  []uint16
		flow   flow
		target uint64
		asm    string
	}{
		{0x0, []uint16{0xf3f9}, flowCond, 0x0, "breq .-2"},
		{0x2, []uint16{0xf539}, flowCond, 0x52, "brne far"},
		{0x200, []uint16{0xf408}, flowCond, 0x204, "brcc .+2"},
		{0x4ae, []uint16{0xf020}, flowCond, 0x4b8, "brcs .+8"},
		{0x4, []uint16{0xc026}, flowJump, 0x52, "rjmp far"},
		{0x26c, []uint16{0xcf3e}, flowJump, 0xea, "rjmp .-388"},
		{0x6, []uint16{0xdffc}, flowCall, 0x0, "rcall back"},
		{0x8, []uint16{0x940c, 0x0029}, flowJump, 0x52, "jmp 0x52"},
		{0xc, []uint16{0x940e, 0xffff}, flowCall, 0x1fffe, "call 0x1fffe"},
		{0x0, []uint16{0x940d, 0x0000}, flowJump, 0x20000, "jmp 0x20000"},
		{0x4, []uint16{0x940f, 0xffff}, flowCall, 0x3fffe, "call 0x3fffe"},
		{0x10, []uint16{0x9409}, flowIndirect, 0, "ijmp"},
		{0x12, []uint16{0x9419}, flowIndirect, 0, "eijmp"},
		{0x14, []uint16{0x9509}, flowCallReg, 0, "icall"},
		{0x16, []uint16{0x9519}, flowCallReg, 0, "eicall"},
		{0x18, []uint16{0x9508}, flowIndirect, 0, "ret"},
		{0x1a, []uint16{0x9518}, flowIndirect, 0, "reti"},
		{0x1c, []uint16{0x121e, 0xfd87}, flowSkip, 0x20, "cpse r1, r30 (then sbrc)"},
		{0x1e, []uint16{0xfd87, 0xff95}, flowSkip, 0x22, "sbrc r24, 7"},
		{0x20, []uint16{0xff95, 0x99fb}, flowSkip, 0x24, "sbrs r25, 5"},
		{0x22, []uint16{0x99fb, 0x9b28}, flowSkip, 0x26, "sbic 0x1f, 3"},
		{0x24, []uint16{0x9b28, 0x9180, 0x0100}, flowSkip, 0x2a, "sbis 0x05, 0 (then lds)"},
		{0xf0, []uint16{0xfd97, 0xc091}, flowSkip, 0xf4, "sbrc r25, 7 (then rjmp)"},
		{0x24, []uint16{0x9b28, 0x940c, 0x0029}, flowSkip, 0x2a, "sbis (then jmp)"},
		{0x26, []uint16{0x9180, 0x0100}, flowNext, 0, "lds r24, 0x0100"},
		{0x2a, []uint16{0x9380, 0x0100}, flowNext, 0, "sts 0x0100, r24"},
		{0x2e, []uint16{0x9588}, flowNext, 0, "sleep"},
		{0x30, []uint16{0x0000}, flowNext, 0, "nop"},
	} {
		b := make([]byte, 2*len(c.words))
		for i, w := range c.words {
			binary.LittleEndian.PutUint16(b[2*i:], w)
		}
		in, ok := decodeAVR(b, c.addr)
		size := avrSize(c.words[0])
		if !ok || in.flow != c.flow || in.target != c.target || in.size != size {
			t.Errorf("%s at 0x%x: got %+v ok=%v, want flow %d target 0x%x", c.asm, c.addr, in, ok, c.flow, c.target)
		}
	}
	if _, ok := decodeAVR([]byte{0x0c, 0x94}, 0); ok {
		t.Error("half of a JMP decoded")
	}
}

// avrProgram is a program of AVR code at 0, a function entry, for the flow
// tests.
func avrProgram(words ...uint16) *Program {
	b := make([]byte, 2*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint16(b[2*i:], w)
	}
	return &Program{Level: LevelSource, elf: true, decode: decodeAVR, ioRestart: true, entries: map[uint64]bool{0: true},
		segments: []segment{{0, b}}, code: []codeRange{{0, uint64(len(b))}}}
}

// TestAVRSkips derives the outcome of a skip followed by a jump from block
// counts, and reports a skip resolved inside a block as run but unknown.
func TestAVRSkips(t *testing.T) {
	// 0x0: sbrs r24, 7   skip at 0x0: taken -> 0x4, not taken -> rjmp -> 0x8
	// 0x2: rjmp .+4      -> 0x8
	// 0x4: nop
	// 0x6: rjmp .-8      -> 0x0
	// 0x8: sbrc r25, 5   skip inside the block 0x8..0xc
	// 0xa: ldi r24, 1
	// 0xc: rjmp .-14     -> 0x0
	p := avrProgram(0xff87, 0xc002, 0x0000, 0xcffc, 0xfd95, 0xe081, 0xcff9)
	c := Counts{Blocks: []Block{
		{Start: 0x0, Insns: 2, Bytes: 4, Count: 10},
		{Start: 0x4, Insns: 2, Bytes: 4, Count: 7},
		{Start: 0x8, Insns: 3, Bytes: 6, Count: 3},
	}}
	a := newAnalysis(p, c)
	if o := a.outcomes[0x0]; !o.executed || !o.known || o.taken != 7 || o.notTaken != 3 {
		t.Errorf("skip before a jump: got %+v, want 7 skipped, 3 not", o)
	}
	if o := a.outcomes[0x8]; !o.executed || o.known {
		t.Errorf("skip inside a block: got %+v, want executed, unknown", o)
	}
	if len(a.branches) != 2 {
		t.Errorf("branches %+v, want the two skips", a.branches)
	}

	c.ExactEdges = true
	c.Edges = []Edge{{From: 0x0, To: 0x4, Count: 7}, {From: 0x0, To: 0x8, Count: 3}}
	a = newAnalysis(p, c)
	if o := a.outcomes[0x0]; !o.known || o.taken != 7 || o.notTaken != 3 {
		t.Errorf("exact edges of a skip before a jump: got %+v, want 7 skipped, 3 not", o)
	}
	if o := a.outcomes[0x8]; !o.executed || o.known {
		t.Errorf("exact edges, skip inside a block: got %+v, want executed, unknown", o)
	}
}

// TestAVRIORestarts: QEMU abandons a block at an I/O access after counting
// it and runs the access alone; the counts are those of the runs that went
// through, plus the runs up to the access.
func TestAVRIORestarts(t *testing.T) {
	// 0x0: ldi r24, 1
	// 0x2: lds r25, 0x00c0   I/O: every run of the block stops here
	// 0x6: sbrs r25, 5
	// 0x8: rjmp .-10         -> 0x0
	// 0xa: ret
	p := avrProgram(0xe081, 0x9190, 0x00c0, 0xff95, 0xcffb, 0x9508)
	c := Counts{Blocks: []Block{
		{Start: 0x0, Insns: 4, Bytes: 10, Count: 5}, // counted, stopped at 0x2
		{Start: 0x2, Insns: 1, Bytes: 4, Count: 5},  // the access alone
		{Start: 0x6, Insns: 2, Bytes: 4, Count: 5},  // the rest
		{Start: 0xa, Insns: 1, Bytes: 2, Count: 1},  // ret: not an access
	}}
	a := newAnalysis(p, c)
	for _, w := range []struct{ lo, hi, n uint64 }{{0x0, 0x2, 5}, {0x2, 0x6, 5}, {0x6, 0xa, 5}} {
		if got := a.maxCount(w.lo, w.hi); got != w.n {
			t.Errorf("[0x%x, 0x%x) ran %d times, want %d", w.lo, w.hi, got, w.n)
		}
	}
	if o := a.outcomes[0x6]; !o.known || o.taken != 1 || o.notTaken != 4 {
		t.Errorf("skip: got %+v, want skipped once, not 4 times", o)
	}
}
