package coverage

import "encoding/binary"

// flow is how control leaves an instruction, as far as coverage cares.
type flow uint8

const (
	flowNext     flow = iota // falls through to the next instruction
	flowCond                 // B<cond>, CBZ/CBNZ, RISC-V and AVR branches: to target or to fallTo
	flowJump                 // unconditional direct branch to target
	flowCall                 // BL, JAL ra, CALL: to target, returning to the next instruction
	flowCallReg              // BLX Rm, JALR ra, ICALL: to an unknown target, returning to the next instruction
	flowIndirect             // BX, POP {pc}, LDR pc, LDM {pc}, TBB/TBH, MOV/ADD pc, JALR x0, RET: unknown target
	flowIT                   // IT: makes the next instructions conditional
	flowSkip                 // AVR CPSE, SBRC, SBRS, SBIC, SBIS: to target (after the next instruction) or next
)

// insn is one decoded instruction.
type insn struct {
	addr   uint64
	size   uint64
	flow   flow
	target uint64 // for flowCond, flowJump, flowCall, flowSkip
	// fall is where a flowCond goes when not taken if hasFall, rather than
	// to the next instruction: an AVR skip followed by a jump (see
	// lastInsn), which may jump to 0.
	fall    uint64
	hasFall bool
}

// next is the address of the following instruction.
func (i insn) next() uint64 { return i.addr + i.size }

// fallTo is where a conditional branch goes when not taken.
func (i insn) fallTo() uint64 {
	if i.hasFall {
		return i.fall
	}
	return i.next()
}

// decodeThumb decodes the Thumb/Thumb-2 instruction at addr from b (which
// starts at addr). Only what moves the program counter is told apart; every
// other instruction is flowNext. ok is false when b is too short.
func decodeThumb(b []byte, addr uint64) (in insn, ok bool) {
	if len(b) < 2 {
		return insn{}, false
	}
	h1 := binary.LittleEndian.Uint16(b)
	in = insn{addr: addr, size: 2}
	if h1>>11 >= 0b11101 {
		if len(b) < 4 {
			return insn{}, false
		}
		in.size = 4
		decode32(&in, h1, binary.LittleEndian.Uint16(b[2:]))
		return in, true
	}
	switch {
	case h1&0xF000 == 0xD000 && (h1>>8)&0xF < 0xE: // B<cond> T1
		in.flow, in.target = flowCond, addr+4+uint64(int64(int8(h1))*2)
	case h1&0xF800 == 0xE000: // B T2
		in.flow, in.target = flowJump, addr+4+uint64(signExtend(uint32(h1&0x7FF)<<1, 12))
	case h1&0xF500 == 0xB100: // CBZ, CBNZ
		in.flow, in.target = flowCond, addr+4+uint64((h1>>9&1)<<6|(h1>>3&0x1F)<<1)
	case h1&0xFF80 == 0x4780: // BLX Rm
		in.flow = flowCallReg
	case h1&0xFF80 == 0x4700: // BX Rm
		in.flow = flowIndirect
	case h1&0xFE00 == 0xBC00 && h1&0x100 != 0: // POP {..., pc}
		in.flow = flowIndirect
	case (h1&0xFF00 == 0x4600 || h1&0xFF00 == 0x4400) && h1&0x87 == 0x87: // MOV/ADD pc, Rm
		in.flow = flowIndirect
	case h1&0xFF00 == 0xBF00 && h1&0xF != 0: // IT
		in.flow = flowIT
	}
	return in, true
}

func decode32(in *insn, h1, h2 uint16) {
	switch {
	case h1&0xF800 == 0xF000 && h2&0xD000 == 0x8000 && (h1>>6)&0xF < 0xE: // B<cond> T3
		imm := uint32(h1>>10&1)<<20 | uint32(h2>>11&1)<<19 | uint32(h2>>13&1)<<18 | uint32(h1&0x3F)<<12 | uint32(h2&0x7FF)<<1
		in.flow, in.target = flowCond, in.addr+4+uint64(signExtend(imm, 21))
	case h1&0xF800 == 0xF000 && h2&0x9000 == 0x9000: // B T4 (0x9000) and BL (0xD000)
		s := uint32(h1 >> 10 & 1)
		i1 := ^(uint32(h2>>13&1) ^ s) & 1
		i2 := ^(uint32(h2>>11&1) ^ s) & 1
		imm := s<<24 | i1<<23 | i2<<22 | uint32(h1&0x3FF)<<12 | uint32(h2&0x7FF)<<1
		in.target = in.addr + 4 + uint64(signExtend(imm, 25))
		in.flow = flowJump
		if h2&0x4000 != 0 {
			in.flow = flowCall
		}
	case h1&0xFFF0 == 0xE8D0 && h2&0xFFE0 == 0xF000: // TBB, TBH
		in.flow = flowIndirect
	case h1&0xFF70 == 0xF850 && h2>>12 == 0xF: // LDR pc, [...] (T3, T4, literal)
		in.flow = flowIndirect
	case (h1&0xFFD0 == 0xE890 || h1&0xFFD0 == 0xE910) && h2&0x8000 != 0: // LDM/POP.W {..., pc}
		in.flow = flowIndirect
	}
}

// signExtend sign-extends the low bits of v.
func signExtend(v uint32, bits uint) int64 {
	shift := 32 - bits
	return int64(int32(v<<shift) >> shift)
}
