/*
 * Arduino boards (ATmega328P, ATmega1280, ATmega2560) as QEMU models
 * them: USART0 and Timer1 in CTC mode as the 10 Hz tick. There is no semihosting on AVR, so exit is not offered.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <stdint.h>

#include "port.h"

#ifndef BOARD_NAME
#error "BOARD_NAME must name the board"
#endif

const char board_name[] = BOARD_NAME;

static volatile uint32_t ticks;

ISR(TIMER1_COMPA_vect)
{
	ticks++;
}

void port_init(void)
{
	UBRR0 = 8; /* 115200 baud at 16 MHz (QEMU does not pace the line) */
	UCSR0B = (1 << RXEN0) | (1 << TXEN0);
	OCR1A = F_CPU / 256 / 10 - 1;
	TCCR1B = (1 << WGM12) | (1 << CS12); /* CTC, clk/256 */
	TIMSK1 = 1 << OCIE1A;
	sei();
}

void uart_putc(char c)
{
	while (!(UCSR0A & (1 << UDRE0))) {
	}
	UDR0 = (uint8_t)c;
}

int uart_getc(void)
{
	if (!(UCSR0A & (1 << RXC0))) {
		return -1;
	}
	return UDR0;
}

uint32_t port_ticks(void)
{
	uint32_t t;

	cli();
	t = ticks;
	sei();
	return t;
}

/*
 * QEMU 7.2's AVR core never wakes from SLEEP (not on a timer interrupt,
 * not on a received byte: a loop of "sleep" with Timer1 running prints
 * nothing after it), so the core polls: an idle AVR guest keeps a host
 * core busy unless the session's CPU limit caps it.
 */
void port_wait(void)
{
}

void port_exit(uint32_t code)
{
	(void)code;
}
