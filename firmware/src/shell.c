/*
 * Test firmware for boards of other architectures than ARM (RISC-V, AVR),
 * speaking the same console protocol as main.c: the banner
 * "MS-TEST-FW <board> ready", echo, "tick N" once a second, and the line
 * commands "count", "exit N" (where the board can end its emulator),
 * "stream" and "work N" (N rounds of CPU-bound work, then "done": what the
 * coverage benchmark times). The core sleeps between events, so an idle QEMU costs no CPU.
 */
#include <stdint.h>

#include "port.h"
/* Real functions: the coverage tests count calls to them. */
#define TEXT_FN static __attribute__((noinline))
#include "text.h"

#define COUNTS_PER_LINE 10u /* "tick N" once per second */

/* Bumped on each received line: a variable for debugger tests. */
volatile uint32_t lines_seen;

static void stream(void)
{
	uint32_t seq = 0;
	int c;

	while ((c = uart_getc()) < 0) {
		puts_raw("seq=");
		put_uint(seq++);
		puts_raw("\r\n");
	}
	uart_putc((char)c);
}

/* Branchy arithmetic on a volatile, so no compiler folds the loop away. */
static void work(uint32_t n)
{
	volatile uint32_t acc = 1;

	for (uint32_t i = 0; i < n; i++) {
		if (acc & 1) {
			acc = acc * 3 + i;
		} else {
			acc >>= 1;
		}
	}
	puts_raw("done\r\n");
}

/* Not inlined, so debugger tests can break on it. */
static __attribute__((noinline)) void run_line(const char *line)
{
	uint32_t n;

	lines_seen++;
	if (has_prefix(line, "exit ") && parse_uint(line + 5, &n)) {
		port_exit(n);
		puts_raw("exit is not supported on ");
		puts_raw(board_name);
		puts_raw("\r\n");
	} else if (equal(line, "count")) {
		puts_raw("count=");
		put_uint(port_ticks());
		puts_raw("\r\n");
	} else if (equal(line, "stream")) {
		stream();
	} else if (has_prefix(line, "work ") && parse_uint(line + 5, &n)) {
		work(n);
	}
}

int main(void)
{
	char line[32];
	uint8_t len = 0;
	uint32_t printed = 0;

	port_init();
	puts_raw("MS-TEST-FW ");
	puts_raw(board_name);
	puts_raw(" ready\r\n");

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

		uint32_t now = port_ticks();
		if (now / COUNTS_PER_LINE != printed / COUNTS_PER_LINE) {
			printed = now;
			puts_raw("tick ");
			put_uint(now);
			puts_raw("\r\n");
		}

		port_wait();
	}
}
