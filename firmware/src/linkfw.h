/*
 * What the linked-machine test firmwares (uartlink.c, ethlink.c) share:
 * guest time from SysTick and a console line assembler (cortexm.h has
 * the registers and interrupt masking). Included once, by one .c file per image; everything is
 * static. Needs board.h, text.h (for TEXT_FN), TICK_MS and LINE_MAX.
 */
#ifndef LINKFW_H
#define LINKFW_H

#include <stdint.h>

#include "board.h"
#include "cortexm.h"

/* Helpers one role of an image does not use. */
#define LINKFW_FN static __attribute__((unused))

static volatile uint32_t ticks;

void systick_handler(void)
{
	ticks++;
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
