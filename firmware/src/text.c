#include "text.h"

void puts_raw(const char *s)
{
	while (*s) {
		uart_putc(*s++);
	}
}

void put_uint(uint32_t v)
{
	char buf[11];
	int i = sizeof(buf);

	buf[--i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts_raw(&buf[i]);
}

int parse_uint(const char *s, uint32_t *out)
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

int has_prefix(const char *s, const char *prefix)
{
	while (*prefix) {
		if (*s++ != *prefix++) {
			return 0;
		}
	}
	return 1;
}

int equal(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}
