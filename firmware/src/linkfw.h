/*
 * What the linked-machine test firmwares (uartlink.c, ethlink.c) share:
 * guest time from SysTick, interrupt masking and a console line
 * assembler. Included once, by one .c file per image; everything is
 * static. Needs board.h, text.h (for TEXT_FN), TICK_MS and LINE_MAX.
 */
#ifndef LINKFW_H
#define LINKFW_H

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

/* Helpers one role of an image does not use. */
#define LINKFW_FN static __attribute__((unused))

static volatile uint32_t ticks;

void systick_handler(void)
{
	ticks++;
}

static void irq_disable(uint32_t irq)
{
	NVIC_ICER[irq / 32] = 1u << (irq % 32);
}

/* Clears a stale pending bit first, so only a line that is high now fires. */
static void irq_enable(uint32_t irq)
{
	NVIC_ICPR[irq / 32] = 1u << (irq % 32);
	NVIC_ISER[irq / 32] = 1u << (irq % 32);
}

static uint32_t reload(void)
{
	return board_cpu_hz / 1000u * TICK_MS - 1u;
}

LINKFW_FN uint32_t now_ms(void)
{
	return ticks * TICK_MS;
}

/* Guest microseconds since boot; wraps after about 71 minutes. */
LINKFW_FN uint32_t now_us(void)
{
	uint32_t t, c;

	/* A tick between the two reads shows as a changed count: read again. */
	do {
		t = ticks;
		c = SYST_CVR;
	} while (t != ticks);
	return t * TICK_MS * 1000u + (reload() - c) / (board_cpu_hz / 1000000u);
}

/* A line assembler: a byte at a time; '\r' or '\n' ends a line. */
struct line {
	char buf[LINE_MAX];
	uint32_t len;
};

/*
 * Returns 1 when c ends a non-empty line, now in l->buf; an overlong line
 * is cut.
 */
static int line_add(struct line *l, char c)
{
	if (c == '\r' || c == '\n') {
		l->buf[l->len] = '\0';
		if (l->len == 0) {
			return 0;
		}
		l->len = 0;
		return 1;
	}
	if (l->len < LINE_MAX - 1) {
		l->buf[l->len++] = c;
	}
	return 0;
}

#endif
