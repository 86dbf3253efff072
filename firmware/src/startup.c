/* Vector table and reset handler shared by every board. */
#include <stdint.h>

#define NUM_IRQS 64 /* covers netduino2's USART1 (IRQ 37) */

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

int main(void);
void systick_handler(void);
void uart_irq_handler(void);

/*
 * A fault stops the core for good, as on silicon when the fault handler
 * itself faults: UDF inside HardFault is a lockup, which QEMU reports as
 * "qemu: fatal: Lockup: ..." and aborts. So an image run on the wrong
 * board (the crash tests load mps2-an385's on a netduino2, whose RAM ends
 * below its initial stack pointer) ends its emulator visibly instead of
 * idling unseen in a handler.
 */
static void fault_handler(void)
{
	__asm__ volatile("udf #0");
}

void reset_handler(void)
{
	uint32_t *src = _sidata;
	uint32_t *dst = _sdata;

	while (dst < _edata) {
		*dst++ = *src++;
	}
	for (dst = _sbss; dst < _ebss; dst++) {
		*dst = 0;
	}
	main();
	fault_handler();
}

/*
 * The UART is the only peripheral whose interrupt the firmware enables, so
 * every external interrupt slot points at its handler: that keeps this table
 * the same for all boards even though the UART's IRQ number differs.
 */
__attribute__((section(".vectors"), used))
static void (*const vectors[16 + NUM_IRQS])(void) = {
	(void (*)(void))_estack,
	reset_handler,
	fault_handler, /* NMI */
	fault_handler, /* HardFault */
	fault_handler, /* MemManage */
	fault_handler, /* BusFault */
	fault_handler, /* UsageFault */
	0, 0, 0, 0,
	fault_handler, /* SVCall */
	fault_handler, /* DebugMon */
	0,
	fault_handler, /* PendSV */
	systick_handler,
	[16 ... 16 + NUM_IRQS - 1] = uart_irq_handler,
};
