/* Interface each board file (uart_<board>.c) implements for main.c. */
#ifndef BOARD_H
#define BOARD_H

#include <stdint.h>

/* Name printed in the banner, e.g. "netduino2". */
extern const char board_name[];

/* Frequency of the clock SysTick counts with CLKSOURCE=1, as QEMU models it. */
extern const uint32_t board_cpu_hz;

/* NVIC interrupt number of the UART's receive interrupt. */
extern const uint32_t board_uart_irq;

/*
 * RAM the firmware never uses, which "fill" writes to make the emulator's
 * host memory grow (0 size: the board has none to spare).
 */
extern const uint32_t board_fill_base;
extern const uint32_t board_fill_size;

/* Enables TX, RX and the RX interrupt at the peripheral (not in the NVIC). */
void uart_init(void);
void uart_putc(char c);
/* Reports whether a received byte is waiting, without taking it. */
int uart_rx_ready(void);
/*
 * Returns the next received byte, or -1 when none is waiting. Once it
 * returns -1 the UART's RX interrupt line is low.
 */
int uart_getc(void);

/*
 * Optional second UART, which main.c serves with a plain echo so tests can
 * reach an emulator's extra serial ports. A board with one defines all of
 * these; main.c has weak stand-ins for the others (no IRQ, nothing ever
 * received). Same contracts as above.
 */
#define NO_IRQ 0xFFFFFFFFu
/* A function, not a constant: GCC folds a weak constant's default. */
uint32_t uart1_irq(void);
void uart1_init(void);
void uart1_putc(char c);
int uart1_rx_ready(void);
int uart1_getc(void);

#endif
