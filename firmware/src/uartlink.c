/*
 * Test firmware for two mps2-an385 machines joined by a UART link (the
 * runner's link.UART or a direct socket): one source, built twice with
 * ROLE picking the side.
 *
 * uartping.elf (ROLE_PING) sends "PING <n>\n" on UART1 every PERIOD_MS of
 * guest time, one at a time, and waits up to TIMEOUT_MS for "PONG <n>\n";
 * it prints "rtt <n> <us>" on UART0 per round trip (guest microseconds
 * from the PING's last byte to the PONG's) or "timeout <n>" when none
 * came, and moves on to n+1 either way.
 *
 * uartpong.elf (ROLE_PONG) answers each "PING <n>\n" with "PONG <n>\n"
 * and prints "pong <n>".
 *
 * Both print a banner and answer console commands on UART0: "stats"
 * prints "stats tx=<bytes> rx=<bytes>" (UART1 bytes sent and received
 * since boot, so a test can measure what a lossy link let through);
 * uartping also takes "flood <n>", which sends "FLOOD <n>\n" and n bytes
 * of payload back to back (no PINGs meanwhile), and uartpong counts that
 * payload and prints "flooded <n>" once it has all of it (throughput).
 *
 * Guest time is SysTick's: a tick every TICK_MS plus the current count
 * for microseconds, so periods and timeouts follow guest time on either
 * QEMU clock. The CPU sleeps in WFI between ticks and received bytes.
 */
#include <stdint.h>

#include "board.h"

#define ROLE_PING 1
#define ROLE_PONG 2
#if !defined(ROLE) || (ROLE != ROLE_PING && ROLE != ROLE_PONG)
#error "build with -DROLE=ROLE_PING or -DROLE=ROLE_PONG"
#endif

/* 10 ms ticks: coarse enough that an idle QEMU barely wakes. */
#define TICK_MS 10u
#define PERIOD_MS 100u
#define TIMEOUT_MS 300u
#define LINE_MAX 32u

/* The console helpers: static, only those used here are kept. */
#define TEXT_FN static __attribute__((unused))
#include "text.h"
#include "linkfw.h"

static uint32_t tx_bytes, rx_bytes;

/*
 * Every external interrupt lands here (startup.c's table). The RX lines
 * stay high until the main loop drains the UARTs, so they are masked here
 * and unmasked by wait_for_uarts().
 */
void uart_irq_handler(void)
{
	irq_disable(board_uart_irq);
	irq_disable(uart1_irq());
}

static void link_puts(const char *s)
{
	while (*s) {
		uart1_putc(*s++);
		tx_bytes++;
	}
}

static void link_put_uint(uint32_t v)
{
	char buf[UINT_TEXT];

	link_puts(uint_text(buf, v));
}

/* Parses "<prefix><decimal>" into n. */
static int parse_msg(const char *s, const char *prefix, uint32_t *n)
{
	uint32_t k = 0;

	if (!has_prefix(s, prefix)) {
		return 0;
	}
	while (prefix[k]) {
		k++;
	}
	return parse_uint(s + k, n);
}

static void print_stats(void)
{
	puts_raw("stats tx=");
	put_uint(tx_bytes);
	puts_raw(" rx=");
	put_uint(rx_bytes);
	puts_raw("\r\n");
}

#if ROLE == ROLE_PING

static uint32_t seq;
static int waiting;
static uint32_t sent_us, next_send_ms;

static void send_ping(void)
{
	link_puts("PING ");
	link_put_uint(seq);
	link_puts("\n");
	sent_us = now_us();
	/* The period runs from send to send, whatever the answer. */
	next_send_ms = now_ms() + PERIOD_MS;
	waiting = 1;
}

static void finish(void)
{
	waiting = 0;
	seq++;
}

static void on_link_line(const char *s)
{
	uint32_t n;

	if (waiting && parse_msg(s, "PONG ", &n) && n == seq) {
		uint32_t rtt = now_us() - sent_us;

		puts_raw("rtt ");
		put_uint(n);
		puts_raw(" ");
		put_uint(rtt);
		puts_raw("\r\n");
		finish();
	}
}

static void flood(uint32_t n)
{
	link_puts("FLOOD ");
	link_put_uint(n);
	link_puts("\n");
	while (n--) {
		uart1_putc('x');
		tx_bytes++;
	}
	puts_raw("flood sent\r\n");
}

static void on_console_line(const char *s)
{
	uint32_t n;

	if (equal(s, "stats")) {
		print_stats();
	} else if (parse_msg(s, "flood ", &n)) {
		flood(n);
	}
}

static void role_tick(void)
{
	if (waiting && (int32_t)(now_us() - sent_us) >= (int32_t)(TIMEOUT_MS * 1000u)) {
		puts_raw("timeout ");
		put_uint(seq);
		puts_raw("\r\n");
		finish();
	}
	if (!waiting && (int32_t)(now_ms() - next_send_ms) >= 0) {
		send_ping();
	}
}

static int link_byte(char c)
{
	(void)c;
	return 0;
}

#define BANNER "uartping mps2-an385 ready\r\n"

#else /* ROLE_PONG */

static uint32_t flood_left, flood_size;

static void on_link_line(const char *s)
{
	uint32_t n;

	if (parse_msg(s, "PING ", &n)) {
		link_puts("PONG ");
		link_put_uint(n);
		link_puts("\n");
		puts_raw("pong ");
		put_uint(n);
		puts_raw("\r\n");
	} else if (parse_msg(s, "FLOOD ", &n)) {
		flood_left = flood_size = n;
		if (n == 0) {
			puts_raw("flooded 0\r\n");
		}
	}
}

/* Takes a flood's payload byte; returns 0 for a byte of a line. */
static int link_byte(char c)
{
	(void)c;
	if (flood_left == 0) {
		return 0;
	}
	if (--flood_left == 0) {
		puts_raw("flooded ");
		put_uint(flood_size);
		puts_raw("\r\n");
	}
	return 1;
}

static void on_console_line(const char *s)
{
	if (equal(s, "stats")) {
		print_stats();
	}
}

static void role_tick(void)
{
}

#define BANNER "uartpong mps2-an385 ready\r\n"

#endif

int main(void)
{
	static struct line console, link;
	int c;

	uart_init();
	uart1_init();
	SYST_RVR = reload();
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
	puts_raw(BANNER);
	for (;;) {
		while ((c = uart_getc()) >= 0) {
			if (line_add(&console, (char)c)) {
				on_console_line(console.buf);
			}
		}
		while ((c = uart1_getc()) >= 0) {
			rx_bytes++;
			if (!link_byte((char)c) && line_add(&link, (char)c)) {
				on_link_line(link.buf);
			}
		}
		role_tick();
		wait_for_uarts();
	}
}
