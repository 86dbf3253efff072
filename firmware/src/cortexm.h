/*
 * Cortex-M registers and interrupt masking the ARM test firmwares share
 * (main.c, jitter.c, uartlink.c, ethlink.c). Everything is static inline,
 * so an image keeps only what it uses.
 */
#ifndef CORTEXM_H
#define CORTEXM_H

#include <stdint.h>

#include "board.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2)

#define NVIC_ISER ((volatile uint32_t *)0xE000E100)
#define NVIC_ICER ((volatile uint32_t *)0xE000E180)
#define NVIC_ICPR ((volatile uint32_t *)0xE000E280)

static inline void irq_disable(uint32_t irq)
{
	if (irq != NO_IRQ) {
		NVIC_ICER[irq / 32] = 1u << (irq % 32);
	}
}

/* Clears a stale pending bit first, so only a line that is high now fires. */
static inline void irq_enable(uint32_t irq)
{
	if (irq != NO_IRQ) {
		NVIC_ICPR[irq / 32] = 1u << (irq % 32);
		NVIC_ISER[irq / 32] = 1u << (irq % 32);
	}
}

/*
 * Sleeps until an interrupt (SysTick's, say) or received data on the
 * console or UART1. PRIMASK is set across the check and the WFI so a byte
 * arriving in between still ends the WFI (a pending interrupt wakes WFI
 * even while PRIMASK holds it off) instead of being noticed only on the
 * next tick. The UART interrupt handler masks the RX lines (they stay high
 * until the main loop drains the UARTs); this unmasks them.
 */
static inline void wait_for_uarts(void)
{
	__asm__ volatile("cpsid i" ::: "memory");
	irq_enable(board_uart_irq);
	irq_enable(uart1_irq());
	if (!uart_rx_ready() && !uart1_rx_ready()) {
		__asm__ volatile("wfi");
	}
	__asm__ volatile("cpsie i" ::: "memory");
}

#endif
