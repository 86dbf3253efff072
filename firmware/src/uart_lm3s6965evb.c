/* lm3s6965evb: PL011 UART0 at 0x4000C000, IRQ 5. */
#include "board.h"

#define UART0_DR (*(volatile uint32_t *)0x4000C000)
#define UART0_FR (*(volatile uint32_t *)0x4000C018)
#define UART0_IBRD (*(volatile uint32_t *)0x4000C024)
#define UART0_FBRD (*(volatile uint32_t *)0x4000C028)
#define UART0_LCRH (*(volatile uint32_t *)0x4000C02C)
#define UART0_CR (*(volatile uint32_t *)0x4000C030)
#define UART0_IMSC (*(volatile uint32_t *)0x4000C038)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define LCRH_FEN (1u << 4)
#define LCRH_WLEN8 (3u << 5)
#define CR_UARTEN (1u << 0)
#define CR_TXE (1u << 8)
#define CR_RXE (1u << 9)
#define IMSC_RXIM (1u << 4)
#define IMSC_RTIM (1u << 6)

const char board_name[] = "lm3s6965evb";
/*
 * QEMU derives the Stellaris system clock from the reset value of RCC:
 * 200 MHz PLL / (SYSDIV 15 + 1) = 12.5 MHz.
 */
const uint32_t board_cpu_hz = 12500000;
const uint32_t board_uart_irq = 5;
const uint32_t board_fill_base = 0;
const uint32_t board_fill_size = 0;

void uart_init(void)
{
	UART0_CR = 0;
	UART0_IBRD = 6; /* 115200 baud at 12.5 MHz; QEMU ignores it */
	UART0_FBRD = 50;
	/* The FIFO lets a burst queue while the main loop is busy. */
	UART0_LCRH = LCRH_WLEN8 | LCRH_FEN;
	/* Real PL011s raise RX only at the FIFO trigger level; RTIM covers the rest. */
	UART0_IMSC = IMSC_RXIM | IMSC_RTIM;
	UART0_CR = CR_UARTEN | CR_TXE | CR_RXE;
}

void uart_putc(char c)
{
	while (UART0_FR & FR_TXFF) {
	}
	UART0_DR = (uint8_t)c;
}

int uart_rx_ready(void)
{
	return !(UART0_FR & FR_RXFE);
}

int uart_getc(void)
{
	if (!uart_rx_ready()) {
		return -1;
	}
	return (int)(UART0_DR & 0xFF);
}
