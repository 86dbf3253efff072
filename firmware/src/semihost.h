/*
 * ARM semihosting exit for the test firmware, included by each firmware
 * file that ends its emulator with a status: static, laid out where it is
 * included, as if written there.
 */
#ifndef SEMIHOST_H
#define SEMIHOST_H

#include <stdint.h>

/* ARM semihosting SYS_EXIT_EXTENDED: QEMU exits with status code. */
static void semihosting_exit(uint32_t code)
{
	uint32_t block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, code};
	register uint32_t r0 __asm__("r0") = 0x20;
	register uint32_t *r1 __asm__("r1") = block;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

#endif
