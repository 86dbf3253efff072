/*
 * SiFive E (HiFive1) as QEMU models it: UART0 at 0x10013000 on PLIC
 * source 3, the CLINT's mtime as the tick, semihosting for exit.
 */
#include <stdint.h>

#include "port.h"

#define UART0 0x10013000u
#define UART(off) (*(volatile uint32_t *)(UART0 + (off)))
#define UART_TXDATA 0x00 /* bit 31: FIFO full */
#define UART_RXDATA 0x04 /* bit 31: FIFO empty */
#define UART_TXCTRL 0x08
#define UART_RXCTRL 0x0C
#define UART_IE 0x10
#define UART_IP 0x14
#define UART_RXWM (1u << 1)
#define UART_IRQ 3u

#define PLIC 0x0C000000u
#define PLIC_PRIORITY(irq) (*(volatile uint32_t *)(PLIC + 4u * (irq)))
#define PLIC_ENABLE (*(volatile uint32_t *)(PLIC + 0x2000u))
#define PLIC_THRESHOLD (*(volatile uint32_t *)(PLIC + 0x200000u))
#define PLIC_CLAIM (*(volatile uint32_t *)(PLIC + 0x200004u))

#define MTIMECMP_LO (*(volatile uint32_t *)0x02004000u)
#define MTIMECMP_HI (*(volatile uint32_t *)0x02004004u)
#define MTIME_LO (*(volatile uint32_t *)0x0200BFF8u)
#define MTIME_HI (*(volatile uint32_t *)0x0200BFFCu)
#define MTIME_HZ 10000000u /* QEMU's ACLINT default timebase */
#define TICK (MTIME_HZ / 10u)

#define MIE_MTIE (1u << 7)
#define MIE_MEIE (1u << 11)

const char board_name[] = "sifive_e";

static uint64_t mtime(void)
{
	uint32_t hi, lo;

	do {
		hi = MTIME_HI;
		lo = MTIME_LO;
	} while (hi != MTIME_HI);
	return ((uint64_t)hi << 32) | lo;
}

void port_init(void)
{
	UART(UART_TXCTRL) = 1;
	UART(UART_RXCTRL) = 1; /* rxcnt 0: watermark pending with one byte */
	UART(UART_IE) = UART_RXWM;
	PLIC_PRIORITY(UART_IRQ) = 1;
	PLIC_ENABLE = 1u << UART_IRQ;
	PLIC_THRESHOLD = 0;
	/*
	 * Interrupts stay globally off (mstatus.MIE): WFI still wakes on a
	 * pending enabled source, and no trap handler is needed.
	 */
	__asm__ volatile(".option push\n.option arch, +zicsr\ncsrs mie, %0\n.option pop" ::"r"(MIE_MTIE | MIE_MEIE));
}

void uart_putc(char c)
{
	while (UART(UART_TXDATA) & 0x80000000u) {
	}
	UART(UART_TXDATA) = (uint8_t)c;
}

int uart_getc(void)
{
	uint32_t v = UART(UART_RXDATA);

	return (v & 0x80000000u) ? -1 : (int)(v & 0xFF);
}

uint32_t port_ticks(void)
{
	return (uint32_t)(mtime() / TICK);
}

void port_wait(void)
{
	uint32_t claimed = PLIC_CLAIM;
	uint64_t next = ((uint64_t)port_ticks() + 1) * TICK;

	if (claimed) {
		PLIC_CLAIM = claimed;
	}
	MTIMECMP_HI = 0xFFFFFFFFu;
	MTIMECMP_LO = (uint32_t)next;
	MTIMECMP_HI = (uint32_t)(next >> 32);
	if (!(UART(UART_IP) & UART_RXWM)) {
		__asm__ volatile("wfi");
	}
}

/* RISC-V semihosting SYS_EXIT_EXTENDED: QEMU exits with status code. */
void port_exit(uint32_t code)
{
	uint32_t block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, code};
	register uint32_t a0 __asm__("a0") = 0x20;
	register uint32_t *a1 __asm__("a1") = block;

	__asm__ volatile(".option push\n.option norvc\n"
			 ".balign 16\n"
			 "slli x0, x0, 0x1f\n"
			 "ebreak\n"
			 "srai x0, x0, 7\n"
			 ".option pop"
			 : "+r"(a0)
			 : "r"(a1)
			 : "memory");
}
