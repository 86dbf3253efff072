package coverage

import "encoding/binary"

// decodeRISCV decodes the RV32IMAC instruction at addr from b (which starts
// at addr): 16-bit compressed (C extension) or 32-bit. Only what moves the
// program counter is told apart. A jump that links (rd not x0) is a call,
// since the callee returns to the next instruction whatever link register
// it used; JALR is a return or a jump through a register when it does not
// link. ECALL and EBREAK are flowNext: a semihosting call or a trap handler
// comes back to the next instruction, like Thumb's SVC and BKPT. MRET is an
// indirect jump (to mepc). ok is false when b is too short.
func decodeRISCV(b []byte, addr uint64) (in insn, ok bool) {
	if len(b) < 2 {
		return insn{}, false
	}
	h := binary.LittleEndian.Uint16(b)
	in = insn{addr: addr, size: 2}
	if h&3 != 3 {
		decodeRVC(&in, h)
		return in, true
	}
	if len(b) < 4 {
		return insn{}, false
	}
	in.size = 4
	w := binary.LittleEndian.Uint32(b)
	rd := w >> 7 & 0x1F
	switch w & 0x7F {
	case 0x63: // BEQ, BNE, BLT, BGE, BLTU, BGEU (funct3 2 and 3 are reserved)
		if f3 := w >> 12 & 7; f3 != 2 && f3 != 3 {
			imm := w>>31<<12 | w>>7&1<<11 | w>>25&0x3F<<5 | w>>8&0xF<<1
			in.flow, in.target = flowCond, addr+uint64(signExtend(imm, 13))
		}
	case 0x6F: // JAL
		imm := w>>31<<20 | w>>12&0xFF<<12 | w>>20&1<<11 | w>>21&0x3FF<<1
		in.flow, in.target = flowJump, addr+uint64(signExtend(imm, 21))
		if rd != 0 {
			in.flow = flowCall
		}
	case 0x67: // JALR
		in.flow = flowIndirect
		if rd != 0 {
			in.flow = flowCallReg
		}
	case 0x73: // SYSTEM
		if w == 0x30200073 { // MRET
			in.flow = flowIndirect
		}
	}
	return in, true
}

// decodeRVC decodes a compressed instruction (RV32C).
func decodeRVC(in *insn, h uint16) {
	f3 := h >> 13
	switch h & 3 {
	case 1:
		switch f3 {
		case 1, 5: // C.JAL (RV32 only; links ra), C.J
			x := uint32(h)
			imm := x>>12&1<<11 | x>>11&1<<4 | x>>9&3<<8 | x>>8&1<<10 | x>>7&1<<6 | x>>6&1<<7 | x>>3&7<<1 | x>>2&1<<5
			in.target = in.addr + uint64(signExtend(imm, 12))
			in.flow = flowJump
			if f3 == 1 {
				in.flow = flowCall
			}
		case 6, 7: // C.BEQZ, C.BNEZ
			x := uint32(h)
			imm := x>>12&1<<8 | x>>10&3<<3 | x>>5&3<<6 | x>>3&3<<1 | x>>2&1<<5
			in.flow, in.target = flowCond, in.addr+uint64(signExtend(imm, 9))
		}
	case 2:
		// C.JR (bit 12 clear) and C.JALR (set): rs1 not x0, rs2 x0. With
		// rs1 x0 they are reserved and C.EBREAK.
		if f3 == 4 && h>>7&0x1F != 0 && h>>2&0x1F == 0 {
			in.flow = flowIndirect
			if h>>12&1 != 0 {
				in.flow = flowCallReg
			}
		}
	}
}
