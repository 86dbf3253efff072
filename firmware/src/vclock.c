/*
 * Virtual-time test firmware (vclock.elf, mps2-an385), for the tests and
 * the benchmark of virtual time (runner/host): it shows on its console
 * how its guest clock moves, so a test can set two machines' clocks side
 * by side at the same host instants.
 *
 * It prints "t <guest_ms>" on UART0 every PERIOD_MS of guest time, busy
 * or not, and takes one console command: "busy <n>" runs a CPU-bound loop
 * of n million iterations (printing its "t" lines meanwhile) and then
 * prints "busy done <guest_ms_taken>"; a second "busy" waits for the
 * first to end.
 *
 * Guest time is SysTick's (linkfw.h): a tick every TICK_MS plus the
 * current count, so it follows whichever clock QEMU runs the guest on:
 * the host's, or the instruction counter's. The CPU sleeps in WFI between
 * ticks and received bytes, so an idle machine lets its clock follow the
 * host's.
 */
#include <stdint.h>

#include "board.h"

#define TICK_MS 10u
#define PERIOD_MS 100u
#define LINE_MAX 32u

/* The console helpers: static, only those used here are kept. */
#define TEXT_FN static __attribute__((unused))
#include "text.h"
#include "linkfw.h"

static uint32_t next_print_ms;

/*
 * Every external interrupt lands here (startup.c's table): the RX lines
 * stay high until the main loop drains the UART, so they are masked here
 * and unmasked by wait_for_uarts().
 */
void uart_irq_handler(void)
{
	irq_disable(board_uart_irq);
	irq_disable(uart1_irq());
}

/* Prints "t <ms>" once per PERIOD_MS boundary the clock has passed. */
static void service(void)
{
	uint32_t now = now_ms();

	if ((int32_t)(now - next_print_ms) < 0) {
		return;
	}
	puts_raw("t ");
	put_uint(now);
	puts_raw("\r\n");
	next_print_ms = now - now % PERIOD_MS + PERIOD_MS;
}

/*
 * n million iterations of a loop the compiler keeps (the counter is
 * volatile), looking at the clock once per iteration so the "t" lines
 * keep coming while it runs.
 */
static void busy(uint32_t n)
{
	volatile uint32_t i;
	uint32_t from = now_us(), last = ticks;

	for (i = 0; i < n * 1000000u; i++) {
		if (ticks != last) {
			last = ticks;
			service();
		}
	}
	puts_raw("busy done ");
	put_uint((now_us() - from) / 1000u);
	puts_raw("\r\n");
}

int main(void)
{
	static struct line console;
	uint32_t n;
	int c;

	uart_init();
	SYST_RVR = reload();
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
	puts_raw("vclock mps2-an385 ready\r\n");
	for (;;) {
		while ((c = uart_getc()) >= 0) {
			if (line_add(&console, (char)c) && has_prefix(console.buf, "busy ") &&
			    parse_uint(console.buf + 5, &n)) {
				busy(n);
			}
		}
		service();
		wait_for_uarts();
	}
}
