/* Text helpers for the test firmware's console, on any architecture. */
#ifndef TEXT_H
#define TEXT_H

#include <stdint.h>

/* Provided by the board. */
void uart_putc(char c);

void puts_raw(const char *s);
void put_uint(uint32_t v);
/* Parses a decimal number; returns 0 when s is not one. */
int parse_uint(const char *s, uint32_t *out);
int has_prefix(const char *s, const char *prefix);
int equal(const char *a, const char *b);

#endif
