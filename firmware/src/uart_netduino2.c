/* netduino2 (STM32F205): USART1 at 0x40011000, IRQ 37. */
#include "board.h"

#define USART1_SR (*(volatile uint32_t *)0x40011000)
#define USART1_DR (*(volatile uint32_t *)0x40011004)
#define USART1_CR1 (*(volatile uint32_t *)0x4001100C)
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_UE (1u << 13)
#define CR1_RXNEIE (1u << 5)
#define CR1_TE (1u << 3)
#define CR1_RE (1u << 2)

const char board_name[] = "netduino2";
/* QEMU's STM32F205 SoC runs SYSCLK at a fixed 120 MHz. */
const uint32_t board_cpu_hz = 120000000;
const uint32_t board_uart_irq = 37;
const uint32_t board_fill_base = 0;
const uint32_t board_fill_size = 0;

void uart_init(void)
{
	/* QEMU drops received bytes unless both UE and RE are set. */
	USART1_CR1 = CR1_UE | CR1_RXNEIE | CR1_TE | CR1_RE;
}

void uart_putc(char c)
{
	while (!(USART1_SR & SR_TXE)) {
	}
	USART1_DR = (uint8_t)c;
}

int uart_rx_ready(void)
{
	return (USART1_SR & SR_RXNE) != 0;
}

int uart_getc(void)
{
	if (!uart_rx_ready()) {
		return -1;
	}
	return (int)(USART1_DR & 0xFF);
}
