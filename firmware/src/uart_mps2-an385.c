/*
 * mps2-an385: CMSDK APB UART0 at 0x40004000, RX IRQ 0; UART1 at
 * 0x40005000, RX IRQ 2, the second UART main.c echoes on.
 */
#include "board.h"

#define UART0_DATA (*(volatile uint32_t *)0x40004000)
#define UART0_STATE (*(volatile uint32_t *)0x40004004)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008)
#define UART0_INTCLEAR (*(volatile uint32_t *)0x4000400C)
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010)
#define STATE_TXFULL (1u << 0)
#define STATE_RXFULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INTEN (1u << 3)
#define INT_RX (1u << 1)

const char board_name[] = "mps2-an385";
/* QEMU's MPS2 boards clock the CPU at 25 MHz. */
const uint32_t board_cpu_hz = 25000000;
const uint32_t board_uart_irq = 0;
const uint32_t board_fill_base = 0x21000000u;
const uint32_t board_fill_size = (16u << 20) /* PSRAM */;

void uart_init(void)
{
	/* 16 is the smallest divider the CMSDK UART accepts. */
	UART0_BAUDDIV = 16;
	/* Without TX_EN output is silently dropped. */
	UART0_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INTEN;
}

void uart_putc(char c)
{
	while (UART0_STATE & STATE_TXFULL) {
	}
	UART0_DATA = (uint8_t)c;
}

int uart_rx_ready(void)
{
	return (UART0_STATE & STATE_RXFULL) != 0;
}

int uart_getc(void)
{
	int c;

	if (!uart_rx_ready()) {
		return -1;
	}
	c = (int)(UART0_DATA & 0xFF);
	/* Reading DATA does not clear the RX interrupt; only INTCLEAR does. */
	UART0_INTCLEAR = INT_RX;
	return c;
}

/* UART1 has UART0's register layout, 0x1000 further on. */
#define UART1_DATA (*(volatile uint32_t *)0x40005000)
#define UART1_STATE (*(volatile uint32_t *)0x40005004)
#define UART1_CTRL (*(volatile uint32_t *)0x40005008)
#define UART1_INTCLEAR (*(volatile uint32_t *)0x4000500C)
#define UART1_BAUDDIV (*(volatile uint32_t *)0x40005010)

uint32_t uart1_irq(void)
{
	return 2;
}

void uart1_init(void)
{
	UART1_BAUDDIV = 16;
	UART1_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INTEN;
}

void uart1_putc(char c)
{
	while (UART1_STATE & STATE_TXFULL) {
	}
	UART1_DATA = (uint8_t)c;
}

int uart1_rx_ready(void)
{
	return (UART1_STATE & STATE_RXFULL) != 0;
}

int uart1_getc(void)
{
	int c;

	if (!uart1_rx_ready()) {
		return -1;
	}
	c = (int)(UART1_DATA & 0xFF);
	UART1_INTCLEAR = INT_RX;
	return c;
}
