/*
 * What a board of another architecture (RISC-V, AVR) gives shell.c: a
 * UART, a 10 Hz tick and a way to sleep until either wakes the core.
 */
#ifndef PORT_H
#define PORT_H

#include <stdint.h>

extern const char board_name[];

void port_init(void);
void uart_putc(char c);
/* Returns the next received byte, or -1 when none is waiting. */
int uart_getc(void);
/* Ticks of 100 ms since port_init. */
uint32_t port_ticks(void);
/*
 * Sleeps until a byte is received or the next tick is due; returns at
 * once if a byte is already waiting.
 */
void port_wait(void);
/* Ends the emulator with status code, where the board can (semihosting). */
void port_exit(uint32_t code);
#endif
