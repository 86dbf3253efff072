/*
 * Console text helpers for the test firmware, included by each firmware's
 * main file (main.c, shell.c): static, so each image keeps its own copy,
 * laid out where it is included, as if written there.
 */
#ifndef TEXT_H
#define TEXT_H

#include <stdint.h>

/* Provided by the board. */
void uart_putc(char c);

/*
 * How the helpers are defined: static, inlined where the compiler likes;
 * a firmware whose tests count calls to them defines TEXT_FN as static
 * noinline before including this.
 */
#ifndef TEXT_FN
#define TEXT_FN static
#endif

TEXT_FN void puts_raw(const char *s)
{
	while (*s) {
		uart_putc(*s++);
	}
}

/* uint_text writes v in decimal at the end of buf and returns its start. */
#define UINT_TEXT 11
TEXT_FN const char *uint_text(char buf[UINT_TEXT], uint32_t v)
{
	int i = UINT_TEXT;

	buf[--i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return &buf[i];
}

TEXT_FN void put_uint(uint32_t v)
{
	char buf[UINT_TEXT];

	puts_raw(uint_text(buf, v));
}

/* Parses a decimal number; returns 0 when s is not one. */
TEXT_FN int parse_uint(const char *s, uint32_t *out)
{
	uint32_t v = 0;

	if (!*s) {
		return 0;
	}
	for (; *s; s++) {
		if (*s < '0' || *s > '9') {
			return 0;
		}
		v = v * 10 + (uint32_t)(*s - '0');
	}
	*out = v;
	return 1;
}

TEXT_FN int has_prefix(const char *s, const char *prefix)
{
	while (*prefix) {
		if (*s++ != *prefix++) {
			return 0;
		}
	}
	return 1;
}

TEXT_FN int equal(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

#endif
