package coverage

import "encoding/binary"

// decodeAVR decodes the AVR instruction at addr (a byte address in program
// memory, as avr-gcc's ELF and DWARF and QEMU's plugin give them) from b.
// Only what moves the program counter is told apart. The skip instructions
// (CPSE, SBRC, SBRS, SBIC, SBIS) are flowSkip: conditional branches whose
// target is after the next instruction, one or two words long. ok is false
// when b is too short.
func decodeAVR(b []byte, addr uint64) (in insn, ok bool) {
	if len(b) < 2 {
		return insn{}, false
	}
	w := binary.LittleEndian.Uint16(b)
	in = insn{addr: addr, size: avrSize(w)}
	if uint64(len(b)) < in.size {
		return insn{}, false
	}
	switch {
	case w&0xF800 == 0xF000: // BRBS, BRBC (BREQ, BRNE, BRCS, ...)
		in.flow, in.target = flowCond, addr+2+uint64(signExtend(uint32(w>>3&0x7F), 7)*2)
	case w&0xE000 == 0xC000: // RJMP, RCALL
		in.flow, in.target = flowJump, addr+2+uint64(signExtend(uint32(w&0xFFF), 12)*2)
		if w&0x1000 != 0 {
			in.flow = flowCall
		}
	case w&0xFE0C == 0x940C: // JMP, CALL: a 22-bit word address
		k := uint64(w>>4&0x1F)<<17 | uint64(w&1)<<16 | uint64(binary.LittleEndian.Uint16(b[2:]))
		in.flow, in.target = flowJump, k*2
		if w&2 != 0 {
			in.flow = flowCall
		}
	case w == 0x9409 || w == 0x9419: // IJMP, EIJMP
		in.flow = flowIndirect
	case w == 0x9509 || w == 0x9519: // ICALL, EICALL
		in.flow = flowCallReg
	case w == 0x9508 || w == 0x9518: // RET, RETI
		in.flow = flowIndirect
	case w&0xFC00 == 0x1000 || w&0xFC08 == 0xFC00 || w&0xFD00 == 0x9900: // CPSE; SBRC, SBRS; SBIC, SBIS
		in.flow, in.target = flowSkip, in.next()+2
		if len(b) >= 4 {
			in.target = in.next() + avrSize(binary.LittleEndian.Uint16(b[2:]))
		}
	}
	return in, true
}

// avrSize is the size of the instruction whose first word is w: JMP, CALL,
// LDS and STS take a second word.
func avrSize(w uint16) uint64 {
	if w&0xFE0C == 0x940C || w&0xFC0F == 0x9000 {
		return 4
	}
	return 2
}
