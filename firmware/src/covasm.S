/*
 * The coverage firmware's own assembly, as a startup file often is. GNU as
 * names it in its DWARF 5 line table relative to the compilation directory
 * (directory "src"), which a report must resolve to find the file.
 */
	.syntax unified
	.thumb
	.text
	.global asm_twice
	.type asm_twice, %function
asm_twice:
	lsls r0, r0, #1
	bx lr
	.size asm_twice, . - asm_twice
