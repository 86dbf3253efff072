/*
 * Timing-dependent test firmware (jitter.elf, mps2-an385), for the
 * determinism tests: what it prints depends on how much guest time its
 * work took, so on the host clock it differs from run to run and on the
 * instruction counter (deterministic mode) it does not.
 *
 * SysTick runs free (no interrupt). Each of ROUNDS rounds does a busy loop
 * that grows with the round, prints SysTick's current value (SYST_CVR),
 * then polls SYST_CVR until a fixed span of guest time has passed and
 * prints how many polls that took: the poll loop's execution count, so the
 * coverage counts, depend on the timing too. Then it exits through
 * semihosting with status 0. No input, no output but "jitter ready", the
 * rounds' lines and "jitter done".
 */
#include <stdint.h>

#include "board.h"
#include "semihost.h"
/* Only puts_raw and put_uint are used here. */
#define TEXT_FN static __attribute__((unused))
#include "text.h"

#include "cortexm.h"

#define SYST_MAX 0x00FFFFFFu

#define ROUNDS 5u
#define BUSY_BASE 20000u
/* 2 ms of guest time at mps2-an385's 25 MHz. */
#define POLL_SPAN 50000u

/* startup.c's vector table names these; nothing here enables them. */
void systick_handler(void) {}
void uart_irq_handler(void) {}

static void busy(uint32_t n)
{
	volatile uint32_t i;

	for (i = 0; i < n; i++) {
	}
}

/* SysTick counts down and wraps at SYST_MAX. */
static uint32_t elapsed(uint32_t from)
{
	return (from - SYST_CVR) & SYST_MAX;
}

int main(void)
{
	uint32_t r;

	uart_init();
	puts_raw("jitter ready\r\n");
	SYST_RVR = SYST_MAX;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_CLKSOURCE;
	for (r = 0; r < ROUNDS; r++) {
		uint32_t from, polls = 0;

		busy(BUSY_BASE << r);
		from = SYST_CVR;
		puts_raw("cvr=");
		put_uint(from);
		while (elapsed(from) < POLL_SPAN) {
			polls++;
		}
		puts_raw(" polls=");
		put_uint(polls);
		puts_raw("\r\n");
	}
	puts_raw("jitter done\r\n");
	semihosting_exit(0);
	return 0;
}
