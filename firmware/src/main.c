/*
 * Test firmware behaviour shared by every board: banner, echo, line
 * commands ("exit N", "count", "stream", "poke", "peek") and a SysTick-driven counter; on
 * boards with a second UART, a plain echo there.
 *
 * The CPU sleeps in WFI until SysTick (every 100 ms) or the UART's RX
 * interrupt wakes it, so an idle QEMU uses almost no host CPU and echo is
 * immediate. All UART I/O happens in the main loop; the RX interrupt only
 * wakes it.
 */
#include <stdint.h>

#include "board.h"
#include "cortexm.h"

#define COUNTER_HZ 10u      /* counter advances every 100 ms */
#define COUNTS_PER_LINE 10u /* "tick N" once per second */

static volatile uint32_t counter;
/* Set by the RX interrupt, for loops that must not touch the UART. */
static volatile uint32_t rx_seen;

/* Stand-ins for boards without a second UART (see board.h). */
__attribute__((weak)) uint32_t uart1_irq(void)
{
	return NO_IRQ;
}
__attribute__((weak)) void uart1_init(void) {}
__attribute__((weak)) void uart1_putc(char c)
{
	(void)c;
}
__attribute__((weak)) int uart1_rx_ready(void)
{
	return 0;
}
__attribute__((weak)) int uart1_getc(void)
{
	return -1;
}

void systick_handler(void)
{
	counter++;
}

/*
 * The RX line stays high until the main loop drains the UART, so mask it
 * here or it would re-enter at once; wait_for_uarts() unmasks it.
 */
void uart_irq_handler(void)
{
	irq_disable(board_uart_irq);
	irq_disable(uart1_irq());
	rx_seen = 1;
}

/* The console helpers, here where they were written before they were shared. */
#include "text.h"

#include "semihost.h"

/*
 * "stream" prints seq=N lines back to back until any byte arrives, so tests
 * and benchmarks see output at every instant (snapshot continuity, time to
 * first byte after a restore). It keeps the CPU busy while it runs.
 */
static volatile uint32_t seq;

static void stream(void)
{
	while (!uart_rx_ready()) {
		puts_raw("seq=");
		put_uint(seq++);
		puts_raw("\r\n");
	}
}

/*
 * "spin" busy-loops without output or device access until any byte
 * arrives (the RX interrupt ends it): the worst case for the host, a guest
 * that never sleeps pins a host core. For the CPU limit tests.
 */
static void spin(void)
{
	puts_raw("spinning\r\n");
	rx_seen = 0;
	irq_enable(board_uart_irq);
	while (!rx_seen) {
		seq++;
	}
}

/*
 * "fill" writes one word per 4 KiB page of the board's spare RAM, so the
 * emulator's host memory grows by that much (the memory limit tests).
 */
static void fill(void)
{
	volatile uint32_t *p = (volatile uint32_t *)board_fill_base;
	uint32_t i;

	for (i = 0; i < board_fill_size / 4; i += 1024) {
		p[i] = i;
	}
	puts_raw("filled ");
	put_uint(board_fill_size >> 10);
	puts_raw(" KiB\r\n");
}

/*
 * "poke" stores 7 in a global through a function of its own, so a
 * debugger replaying a recording can find, going backwards, the line that
 * last wrote it; "peek" prints it.
 */
volatile uint32_t victim = 42;

__attribute__((noinline)) static void poke(uint32_t n)
{
	victim = n; /* POKE-LINE */
}

static void run_line(const char *line)
{
	uint32_t n;

	if (has_prefix(line, "exit ") && parse_uint(line + 5, &n)) {
		semihosting_exit(n);
	} else if (equal(line, "count")) {
		puts_raw("count=");
		put_uint(counter);
		puts_raw("\r\n");
	} else if (equal(line, "stream")) {
		stream();
	} else if (equal(line, "spin")) {
		spin();
	} else if (equal(line, "fill")) {
		fill();
	} else if (equal(line, "poke")) {
		poke(7);
	} else if (equal(line, "peek")) {
		puts_raw("victim=");
		put_uint(victim);
		puts_raw("\r\n");
	}
}

int main(void)
{
	char line[32];
	uint32_t len = 0;
	uint32_t printed = 0;

	uart_init();
	uart1_init();
	puts_raw("MS-TEST-FW ");
	puts_raw(board_name);
	puts_raw(" ready\r\n");

	SYST_RVR = board_cpu_hz / COUNTER_HZ - 1;
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;

	for (;;) {
		int c;

		while ((c = uart_getc()) >= 0) {
			uart_putc((char)c);
			if (c == '\r' || c == '\n') {
				line[len] = '\0';
				run_line(line);
				len = 0;
			} else if (len < sizeof(line) - 1) {
				line[len++] = (char)c;
			}
		}
		while ((c = uart1_getc()) >= 0) {
			uart1_putc((char)c);
		}

		uint32_t now = counter;
		if (now / COUNTS_PER_LINE != printed / COUNTS_PER_LINE) {
			printed = now;
			puts_raw("tick ");
			put_uint(now);
			puts_raw("\r\n");
		}

		wait_for_uarts();
	}
}
