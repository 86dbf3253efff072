/*
 * Test firmware for mps2-an385 machines joined by an Ethernet link (the
 * runner's link.Switch or a direct QEMU socket netdev): a minimal polled
 * driver for the board's LAN9118 (0x40200000, IRQ 13) and a ping-pong of
 * raw frames by MAC address. One source, built twice with ROLE picking
 * the side, as uartlink.c is: the role must be known before the first
 * frame (the boot broadcast carries it), so a console command would race
 * the boot.
 *
 * Every frame is 60 bytes (the Ethernet minimum without FCS) of EtherType
 * 0x88B5 (IEEE local experimental): destination, source, type, then
 * payload[0] the kind ('H' hello, 'R' hello reply, 'P' ping, 'O' pong,
 * 'F' flood), payload[1] the sender's role ('i' ping, 'o' pong),
 * payload[2..5] a big-endian sequence number, then "ethlink" and zeros.
 *
 * At boot both sides broadcast a hello, so a learning switch knows them
 * and the ping side learns its peers: ethping.elf (ROLE_PING) takes every
 * pong that says hello as a peer (up to MAX_PEERS, "peer <mac>"), and a
 * pong answers the ping's hello with a unicast reply, so it does not
 * matter who booted first. Without a peer, ethping repeats its hello every
 * PERIOD_MS.
 *
 * ethping sends a ping every PERIOD_MS of guest time to its peers in
 * turn, one at a time, and waits up to TIMEOUT_MS for the pong with the
 * same number from that peer; it prints "rtt <n> <us> <mac>" per round
 * trip (guest microseconds from the ping's hand-over to the NIC to the
 * pong's arrival) or "timeout <n> <mac>" when none came, and moves on to
 * n+1 either way. ethpong.elf (ROLE_PONG) answers each ping addressed to
 * it with a pong to the sender's MAC and prints "pong <n> <mac>".
 *
 * The MAC address is the NIC's own (QEMU loads it from the emulated
 * EEPROM: -net nic,...,macaddr=), printed as "mac <mac>" before the
 * banner. Console commands on UART0: "mac <N>" sets 02:00:00:00:00:<N>
 * (a locally administered address, 1 to 254) and says hello again;
 * "stats" prints "stats tx=<frames> rx=<frames>" (frames of this
 * EtherType sent and received since boot, so a test can measure what a
 * lossy link let through); ethping also takes "flood <n>", which sends n
 * flood frames to its first peer FLOOD_GAP_US apart (no pings meanwhile)
 * and prints "flood sent"; ethpong counts them in rx and answers none.
 * Floods are paced because the LAN9118 drops what does not fit its RX
 * FIFO (176 frames) and a flood sent back to back could outrun the
 * receiving guest's polling; a lossy link's loss is then the link's alone.
 *
 * Guest time is SysTick's, as in uartlink.c. The CPU sleeps in WFI between
 * ticks, console bytes and received frames (the LAN9118's RX status level
 * interrupt).
 */
#include <stdint.h>

#include "board.h"

#define ROLE_PING 1
#define ROLE_PONG 2
#if !defined(ROLE) || (ROLE != ROLE_PING && ROLE != ROLE_PONG)
#error "build with -DROLE=ROLE_PING or -DROLE=ROLE_PONG"
#endif

/* LAN9118 (SMSC datasheet names), 32-bit access. */
#define ETH_BASE 0x40200000u
#define ETH_REG(off) (*(volatile uint32_t *)(ETH_BASE + (off)))
#define ETH_RX_DATA ETH_REG(0x00)
#define ETH_TX_DATA ETH_REG(0x20)
#define ETH_RX_STATUS ETH_REG(0x40)
#define ETH_TX_STATUS ETH_REG(0x48)
#define ETH_IRQ_CFG ETH_REG(0x54)
#define ETH_INT_STS ETH_REG(0x58)
#define ETH_INT_EN ETH_REG(0x5C)
#define ETH_BYTE_TEST ETH_REG(0x64)
#define ETH_TX_CFG ETH_REG(0x70)
#define ETH_HW_CFG ETH_REG(0x74)
#define ETH_RX_FIFO_INF ETH_REG(0x7C)
#define ETH_TX_FIFO_INF ETH_REG(0x80)
#define ETH_PMT_CTRL ETH_REG(0x84)
#define ETH_MAC_CSR_CMD ETH_REG(0xA4)
#define ETH_MAC_CSR_DATA ETH_REG(0xA8)
#define ETH_IRQ 13u

#define BYTE_TEST_VALUE 0x87654321u
#define HW_CFG_SRST (1u << 0)
#define PMT_CTRL_READY (1u << 0)
#define IRQ_CFG_EN (1u << 8)
#define IRQ_CFG_POL (1u << 4)  /* active high */
#define IRQ_CFG_TYPE (1u << 0) /* push-pull */
#define INT_RSFL (1u << 3)     /* RX status FIFO above its level (0) */
#define TX_CFG_ON (1u << 1)
#define MAC_CSR_BUSY (1u << 31)
#define MAC_CSR_READ (1u << 30)
#define MAC_CR 1u
#define MAC_ADDRH 2u
#define MAC_ADDRL 3u
#define MAC_CR_FDPX (1u << 20)
#define MAC_CR_TXEN (1u << 3)
#define MAC_CR_RXEN (1u << 2)
#define TX_CMD_A_FIRST (1u << 13)
#define TX_CMD_A_LAST (1u << 12)
#define RX_STS_ERROR (1u << 15)

#define ETHERTYPE 0x88B5u
#define FRAME_LEN 60u
#define FRAME_WORDS (FRAME_LEN / 4u)
#define HDR_LEN 14u

#define KIND_HELLO 'H'
#define KIND_REPLY 'R'
#define KIND_PING 'P'
#define KIND_PONG 'O'
#define KIND_FLOOD 'F'
#define ROLE_CHAR_PING 'i'
#define ROLE_CHAR_PONG 'o'

/* 10 ms ticks: coarse enough that an idle QEMU barely wakes. */
#define TICK_MS 10u
#define PERIOD_MS 100u
#define TIMEOUT_MS 300u
#define FLOOD_GAP_US 200u
#define MAX_PEERS 4u
#define LINE_MAX 32u

/* The console helpers: static, only those used here are kept. */
#define TEXT_FN static __attribute__((unused))
#include "text.h"
#include "linkfw.h"

/* Helpers only one role uses. */
#define ROLE_FN static __attribute__((unused))

static uint32_t tx_frames, rx_frames;
static uint8_t mac[6];
static int have_nic;
static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/*
 * Every external interrupt lands here (startup.c's table). The UART's RX
 * line and the NIC's stay high until the main loop has drained them, so
 * both are masked here and unmasked by wait_for_event().
 */
void uart_irq_handler(void)
{
	irq_disable(board_uart_irq);
	irq_disable(ETH_IRQ);
}

static int eth_rx_ready(void)
{
	/* RX_FIFO_INF bits 23:16: status words waiting, one per frame. */
	return have_nic && ((ETH_RX_FIFO_INF >> 16) & 0xFFu) != 0;
}

/*
 * Sleeps until a tick, a console byte or a frame. PRIMASK is set across
 * the check and the WFI so an event in between still ends the WFI. The
 * NIC's interrupt is sticky: it is cleared before the check, so a frame
 * arriving after the check raises it again.
 */
static void wait_for_event(void)
{
	__asm__ volatile("cpsid i" ::: "memory");
	if (have_nic) {
		ETH_INT_STS = INT_RSFL;
		irq_enable(ETH_IRQ);
	}
	irq_enable(board_uart_irq);
	if (!uart_rx_ready() && !eth_rx_ready()) {
		__asm__ volatile("wfi");
	}
	__asm__ volatile("cpsie i" ::: "memory");
}

static void put_hex2(uint8_t v)
{
	static const char digits[] = "0123456789abcdef";

	uart_putc(digits[v >> 4]);
	uart_putc(digits[v & 15u]);
}

static void put_mac(const uint8_t *m)
{
	for (int i = 0; i < 6; i++) {
		if (i) {
			uart_putc(':');
		}
		put_hex2(m[i]);
	}
}

ROLE_FN int mac_equal(const uint8_t *a, const uint8_t *b)
{
	for (int i = 0; i < 6; i++) {
		if (a[i] != b[i]) {
			return 0;
		}
	}
	return 1;
}

static void mac_copy(uint8_t *dst, const uint8_t *src)
{
	for (int i = 0; i < 6; i++) {
		dst[i] = src[i];
	}
}

/* QEMU completes a MAC CSR access at once; the BUSY wait is for silicon. */
static void mac_csr_write(uint32_t reg, uint32_t val)
{
	while (ETH_MAC_CSR_CMD & MAC_CSR_BUSY) {
	}
	ETH_MAC_CSR_DATA = val;
	ETH_MAC_CSR_CMD = MAC_CSR_BUSY | reg;
	while (ETH_MAC_CSR_CMD & MAC_CSR_BUSY) {
	}
}

static uint32_t mac_csr_read(uint32_t reg)
{
	while (ETH_MAC_CSR_CMD & MAC_CSR_BUSY) {
	}
	ETH_MAC_CSR_CMD = MAC_CSR_BUSY | MAC_CSR_READ | reg;
	while (ETH_MAC_CSR_CMD & MAC_CSR_BUSY) {
	}
	return ETH_MAC_CSR_DATA;
}

static void set_mac(void)
{
	mac_csr_write(MAC_ADDRL, (uint32_t)mac[0] | (uint32_t)mac[1] << 8 |
					 (uint32_t)mac[2] << 16 | (uint32_t)mac[3] << 24);
	mac_csr_write(MAC_ADDRH, (uint32_t)mac[4] | (uint32_t)mac[5] << 8);
}

/*
 * Soft reset, the MAC address the reset loaded from the EEPROM, then TX
 * and RX on. MAC_CR without PRMS: the NIC takes only frames to its own
 * address and broadcasts, as a real one would, so frames a switch floods
 * to every port reach only the node they are for.
 */
static int eth_init(void)
{
	uint32_t lo, hi;

	if (ETH_BYTE_TEST != BYTE_TEST_VALUE) {
		return 0;
	}
	ETH_HW_CFG = HW_CFG_SRST;
	while (ETH_HW_CFG & HW_CFG_SRST) {
	}
	while (!(ETH_PMT_CTRL & PMT_CTRL_READY)) {
	}
	lo = mac_csr_read(MAC_ADDRL);
	hi = mac_csr_read(MAC_ADDRH);
	for (int i = 0; i < 4; i++) {
		mac[i] = (uint8_t)(lo >> (8 * i));
	}
	mac[4] = (uint8_t)hi;
	mac[5] = (uint8_t)(hi >> 8);
	mac_csr_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN);
	ETH_TX_CFG = TX_CFG_ON;
	/* The RX status level interrupt, active high, push-pull. */
	ETH_IRQ_CFG = IRQ_CFG_EN | IRQ_CFG_POL | IRQ_CFG_TYPE;
	ETH_INT_EN = INT_RSFL;
	return 1;
}

/* Sends one FRAME_LEN frame of ours: kind, our role and seq to dst. */
static void eth_send(const uint8_t *dst, char kind, uint32_t seq)
{
	static const char tag[] = "ethlink";
	union {
		uint8_t b[FRAME_LEN];
		uint32_t w[FRAME_WORDS];
	} f;
	uint8_t *p = f.b + HDR_LEN;

	if (!have_nic) {
		return;
	}
	/* A loop, not an initializer: there is no memset to call. */
	for (uint32_t i = 0; i < FRAME_WORDS; i++) {
		f.w[i] = 0;
	}
	mac_copy(f.b, dst);
	mac_copy(f.b + 6, mac);
	f.b[12] = (uint8_t)(ETHERTYPE >> 8);
	f.b[13] = (uint8_t)ETHERTYPE;
	p[0] = (uint8_t)kind;
	p[1] = ROLE == ROLE_PING ? ROLE_CHAR_PING : ROLE_CHAR_PONG;
	p[2] = (uint8_t)(seq >> 24);
	p[3] = (uint8_t)(seq >> 16);
	p[4] = (uint8_t)(seq >> 8);
	p[5] = (uint8_t)seq;
	for (uint32_t i = 0; tag[i]; i++) {
		p[6 + i] = (uint8_t)tag[i];
	}
	/* TX_FIFO_INF bits 15:0: free bytes in the TX data FIFO. */
	while ((ETH_TX_FIFO_INF & 0xFFFFu) < FRAME_LEN + 8u) {
	}
	ETH_TX_DATA = TX_CMD_A_FIRST | TX_CMD_A_LAST | FRAME_LEN;
	ETH_TX_DATA = (seq & 0xFFFFu) << 16 | FRAME_LEN; /* tag, length */
	/* The FIFO takes words little-endian, the byte order in memory here. */
	for (uint32_t i = 0; i < FRAME_WORDS; i++) {
		ETH_TX_DATA = f.w[i];
	}
	/* One status word per frame; taken so the status FIFO never fills. */
	while ((ETH_TX_FIFO_INF >> 16) & 0xFFu) {
		(void)ETH_TX_STATUS;
	}
	tx_frames++;
}

static void say_hello(void)
{
	eth_send(broadcast, KIND_HELLO, 0);
}

/* A received frame of ours, its header checked. */
struct frame {
	const uint8_t *src;
	char kind;
	char role;
	uint32_t seq;
};

static void on_frame(const struct frame *f);

/*
 * Takes every frame waiting in the NIC: the status word gives its length
 * (with the 4-byte FCS QEMU appends), the data FIFO its words; what does
 * not fit the buffer is read and thrown away.
 */
static void eth_poll(void)
{
	union {
		uint8_t b[64];
		uint32_t w[16];
	} buf;

	while (eth_rx_ready()) {
		uint32_t st = ETH_RX_STATUS;
		uint32_t len = (st >> 16) & 0x3FFFu;
		uint32_t words = (len + 3u) / 4u;
		struct frame f;

		for (uint32_t i = 0; i < words; i++) {
			uint32_t w = ETH_RX_DATA;

			if (i < 16u) {
				buf.w[i] = w;
			}
		}
		if ((st & RX_STS_ERROR) || len < FRAME_LEN ||
		    buf.b[12] != (uint8_t)(ETHERTYPE >> 8) || buf.b[13] != (uint8_t)ETHERTYPE) {
			continue;
		}
		rx_frames++;
		f.src = buf.b + 6;
		f.kind = (char)buf.b[HDR_LEN];
		f.role = (char)buf.b[HDR_LEN + 1];
		f.seq = (uint32_t)buf.b[HDR_LEN + 2] << 24 | (uint32_t)buf.b[HDR_LEN + 3] << 16 |
			(uint32_t)buf.b[HDR_LEN + 4] << 8 | buf.b[HDR_LEN + 5];
		on_frame(&f);
	}
}

static void print_mac_line(void)
{
	puts_raw("mac ");
	put_mac(mac);
	puts_raw("\r\n");
}

/* Handles the commands both roles take; returns 0 for another line. */
static int common_command(const char *s)
{
	uint32_t n;

	if (equal(s, "stats")) {
		puts_raw("stats tx=");
		put_uint(tx_frames);
		puts_raw(" rx=");
		put_uint(rx_frames);
		puts_raw("\r\n");
		return 1;
	}
	if (has_prefix(s, "mac ") && parse_uint(s + 4, &n) && n >= 1 && n <= 254) {
		static const uint8_t local[6] = {0x02, 0, 0, 0, 0, 0};

		mac_copy(mac, local);
		mac[5] = (uint8_t)n;
		if (have_nic) {
			set_mac();
		}
		print_mac_line();
		say_hello();
		return 1;
	}
	return 0;
}

#if ROLE == ROLE_PING

static uint8_t peers[MAX_PEERS][6];
static uint32_t npeers;
static uint32_t seq;
static int waiting;
static const uint8_t *target;
static uint32_t sent_us;
/* main() said hello at boot: the next one, or the first ping, is due later. */
static uint32_t next_send_ms = PERIOD_MS;

static void add_peer(const uint8_t *m)
{
	for (uint32_t i = 0; i < npeers; i++) {
		if (mac_equal(peers[i], m)) {
			return;
		}
	}
	if (npeers == MAX_PEERS) {
		return;
	}
	mac_copy(peers[npeers++], m);
	puts_raw("peer ");
	put_mac(m);
	puts_raw("\r\n");
}

static void on_frame(const struct frame *f)
{
	if ((f->kind == KIND_HELLO || f->kind == KIND_REPLY) && f->role == ROLE_CHAR_PONG) {
		add_peer(f->src);
		return;
	}
	if (f->kind == KIND_PONG && waiting && f->seq == seq && mac_equal(f->src, target)) {
		uint32_t rtt = now_us() - sent_us;

		puts_raw("rtt ");
		put_uint(seq);
		puts_raw(" ");
		put_uint(rtt);
		puts_raw(" ");
		put_mac(target);
		puts_raw("\r\n");
		waiting = 0;
		seq++;
	}
}

static void role_tick(void)
{
	if (waiting && (int32_t)(now_us() - sent_us) >= (int32_t)(TIMEOUT_MS * 1000u)) {
		puts_raw("timeout ");
		put_uint(seq);
		puts_raw(" ");
		put_mac(target);
		puts_raw("\r\n");
		waiting = 0;
		seq++;
	}
	if (waiting || (int32_t)(now_ms() - next_send_ms) < 0) {
		return;
	}
	/* The period runs from send to send, whatever the answer. */
	next_send_ms = now_ms() + PERIOD_MS;
	if (npeers == 0) {
		say_hello();
		return;
	}
	target = peers[seq % npeers];
	eth_send(target, KIND_PING, seq);
	sent_us = now_us();
	waiting = 1;
}

static void flood(uint32_t n)
{
	for (uint32_t i = 0; i < n && npeers > 0; i++) {
		uint32_t t0 = now_us();

		eth_send(peers[0], KIND_FLOOD, i);
		while (now_us() - t0 < FLOOD_GAP_US) {
		}
	}
	puts_raw("flood sent\r\n");
}

static void on_console_line(const char *s)
{
	uint32_t n;

	if (common_command(s)) {
		return;
	}
	if (has_prefix(s, "flood ") && parse_uint(s + 6, &n)) {
		flood(n);
	}
}

#define BANNER "ethping mps2-an385 ready\r\n"

#else /* ROLE_PONG */

static void on_frame(const struct frame *f)
{
	if (f->kind == KIND_HELLO && f->role == ROLE_CHAR_PING) {
		eth_send(f->src, KIND_REPLY, 0);
	} else if (f->kind == KIND_PING) {
		eth_send(f->src, KIND_PONG, f->seq);
		puts_raw("pong ");
		put_uint(f->seq);
		puts_raw(" ");
		put_mac(f->src);
		puts_raw("\r\n");
	}
}

static void on_console_line(const char *s)
{
	common_command(s);
}

static void role_tick(void)
{
}

#define BANNER "ethpong mps2-an385 ready\r\n"

#endif

int main(void)
{
	static struct line console;
	int c;

	uart_init();
	SYST_RVR = reload();
	SYST_CVR = 0;
	SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
	have_nic = eth_init();
	if (have_nic) {
		print_mac_line();
	} else {
		puts_raw("no lan9118\r\n");
	}
	puts_raw(BANNER);
	say_hello();
	for (;;) {
		while ((c = uart_getc()) >= 0) {
			if (line_add(&console, (char)c)) {
				on_console_line(console.buf);
			}
		}
		eth_poll();
		role_tick();
		wait_for_event();
	}
}
