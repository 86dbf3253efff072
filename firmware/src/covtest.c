/*
 * Coverage test firmware: code paths whose execution counts are known, so
 * the coverage tests can assert exact numbers. Lines the tests look up carry
 * a COV:<name> marker comment; keep each marker on the line whose count it
 * names.
 *
 * Built twice from this file (see the Makefile), both at -O0 so every
 * statement keeps its own instructions and line:
 *   cov.elf       prints "COV ready", then serves single-byte UART commands:
 *                 'b' takes the input-driven branch, 'q' exits through
 *                 semihosting with status 0; every byte but 'q' is echoed
 *                 once it has been handled.
 *   covbench.elf  (COV_BENCH) runs a fixed CPU-bound workload at boot and
 *                 exits with status 0: the coverage overhead benchmark.
 * Both link the stand-in C library (covlib.h) and the program's own
 * assembly (covasm.S), and call each once at boot.
 */
#include <stdint.h>

#include "board.h"
#include "covlib.h"

/* In covasm.S: returns 2 * v. */
uint32_t asm_twice(uint32_t v);

#define LOOP_ITERATIONS 7u   /* the tests expect exactly this count */
#define NEVER_MAGIC 0x5AFEC0DEu

static volatile uint32_t sink;
static volatile uint32_t b_count;

/* ARM semihosting SYS_EXIT_EXTENDED: QEMU exits with status code. */
static void semihosting_exit(uint32_t code)
{
	uint32_t block[2] = {0x20026 /* ADP_Stopped_ApplicationExit */, code};
	register uint32_t r0 __asm__("r0") = 0x20;
	register uint32_t *r1 __asm__("r1") = block;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

static void puts_raw(const char *s)
{
	while (*s) {
		uart_putc(*s++);
	}
}

/*
 * Never runs. It is called behind a condition that is false at run time, so
 * the linker keeps it (--gc-sections would drop an unreferenced function).
 */
void never_called(void)
{
	sink = 0xDEAD; /* COV:never-body */
}

/* Always called with v < 100: the else never runs. */
static void classify(uint32_t v)
{
	if (v < 100) { /* COV:classify-if */
		sink = v; /* COV:classify-then */
	} else {
		sink = v * 2; /* COV:classify-else */
	}
}

static uint32_t loop_known(void)
{
	uint32_t acc = 0;

	for (uint32_t i = 0; i < LOOP_ITERATIONS; i++) {
		acc += i; /* COV:loop-body */
	}
	return acc;
}

/* sink never holds NEVER_MAGIC, so the call never happens. */
static void maybe_never(void)
{
	if (sink == NEVER_MAGIC) { /* COV:never-if */
		never_called(); /* COV:never-call */
	}
}

#ifdef COV_BENCH
/*
 * CPU-bound work with a realistic mix of loads, stores and conditional
 * branches: a bitwise CRC-32 over a buffer that an LCG refills each round,
 * and an insertion sort of a small array. BENCH_ROUNDS sets the run time.
 */
#ifndef BENCH_ROUNDS
#define BENCH_ROUNDS 25000u /* about 1 s in QEMU 7.2 without coverage */
#endif
#define BENCH_BYTES 256u
#define SORT_LEN 32u

static uint8_t buf[BENCH_BYTES];
static uint32_t arr[SORT_LEN];

static uint32_t crc32(const uint8_t *p, uint32_t n, uint32_t crc)
{
	crc = ~crc;
	for (uint32_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (uint32_t k = 0; k < 8; k++) {
			if (crc & 1) {
				crc = (crc >> 1) ^ 0xEDB88320u;
			} else {
				crc >>= 1;
			}
		}
	}
	return ~crc;
}

static void insertion_sort(uint32_t *a, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		uint32_t v = a[i];
		uint32_t j = i;

		while (j > 0 && a[j - 1] > v) {
			a[j] = a[j - 1];
			j--;
		}
		a[j] = v;
	}
}

static void bench(void)
{
	uint32_t seed = 1;
	uint32_t crc = 0;

	for (uint32_t r = 0; r < BENCH_ROUNDS; r++) {
		for (uint32_t i = 0; i < BENCH_BYTES; i++) {
			seed = seed * 1664525u + 1013904223u;
			buf[i] = (uint8_t)(seed >> 24);
		}
		crc = crc32(buf, BENCH_BYTES, crc);
		for (uint32_t i = 0; i < SORT_LEN; i++) {
			seed = seed * 1664525u + 1013904223u;
			arr[i] = seed >> 8;
		}
		insertion_sort(arr, SORT_LEN);
	}
	sink = crc;
}
#endif

void systick_handler(void)
{
}

/* Masked here and unmasked by wait_for_rx, as in main.c. */
void uart_irq_handler(void)
{
	volatile uint32_t *icer = (volatile uint32_t *)0xE000E180;

	icer[board_uart_irq / 32] = 1u << (board_uart_irq % 32);
}

/* Sleeps until a byte arrives (see main.c's wait_for_event for why PRIMASK). */
static void wait_for_rx(void)
{
	volatile uint32_t *iser = (volatile uint32_t *)0xE000E100;
	volatile uint32_t *icpr = (volatile uint32_t *)0xE000E280;
	uint32_t bit = 1u << (board_uart_irq % 32);

	__asm__ volatile("cpsid i" ::: "memory");
	icpr[board_uart_irq / 32] = bit;
	iser[board_uart_irq / 32] = bit;
	if (!uart_rx_ready()) {
		__asm__ volatile("wfi");
	}
	__asm__ volatile("cpsie i" ::: "memory");
}

int main(void)
{
	char word[4];

	uart_init();
	classify(3);
	classify(42);
	sink = loop_known();
	maybe_never();
	lib_memcpy(word, "COV", 4);
	sink = lib_strlen(word) + asm_twice(2);
#ifdef COV_BENCH
	bench();
	semihosting_exit(0);
#endif
	puts_raw("COV ready\r\n");
	for (;;) {
		int c = uart_getc();

		if (c < 0) {
			wait_for_rx();
			continue;
		}
		if (c == 'b') { /* COV:on-b-if */
			b_count++; /* COV:on-b */
		} else if (c == 'q') {
			semihosting_exit(0); /* COV:quit */
		}
		/* Echo after the work, so seeing it means the branch has run. */
		uart_putc((char)c);
	}
}
