/*
 * mscov: a QEMU TCG plugin that records execution coverage of the guest.
 *
 * Arguments (-plugin file=libmscov.so,out=PATH[,interval_ms=N][,ctl=PATH][,edges=MODE]):
 *   out=PATH        where the counts go (required). Written atomically:
 *                   PATH.tmp is written, then renamed over PATH. An empty
 *                   snapshot is written at once, so a bad path stops QEMU at
 *                   start instead of losing the counts at exit.
 *   interval_ms=N   also write every N ms of host time when any block ran
 *                   since the last write (0: never; the default).
 *   ctl=PATH        a unix stream socket the plugin listens on. A client that
 *                   connects and sends "flush\n" gets "ok <seq>\n" once the
 *                   file holds the counts up to that moment (or "error ...\n").
 *                   A socket rather than a signal (QEMU owns its signal
 *                   handlers) or a trigger file (polling, races): the answer
 *                   tells the client when the file is ready.
 *   edges=derived   (default) count blocks only; the reader derives branch
 *                   outcomes from the block counts and the program's code.
 *   edges=exact     also record every edge out of a block that ends in a
 *                   conditional branch, at the price of a call per block.
 * Guests: arm (Thumb), riscv32 (RV32IMAC) and avr; edges=exact recognises
 * each one's conditional branches (see block_exit). On avr, QEMU gives
 * instructions no bytes (its translator does not read code through the
 * helpers that record them), so they are read from the host page behind
 * the code; addresses are byte addresses in program memory, as in avr-gcc's
 * ELF and DWARF, so B lines need no conversion.
 * The file is written once more when QEMU exits normally (QMP quit,
 * semihosting exit, SIGTERM, SIGINT); SIGKILL loses what ran after the last
 * write.
 *
 * File format, version 1: text, one record per line, fields separated by one
 * space, addresses in hex with 0x, counts in decimal.
 *   mscov 1 reason=<start|interval|request|exit> seq=<n> time_ms=<unix ms> edges=<derived|exact>
 *   B <start> <insns> <bytes> <count>
 *   E <branch> <to> <count>
 * The first line names the format and the snapshot: seq grows with each
 * write, reason says what caused it (start: the empty file written when the
 * plugin loads), and only reason=exit marks final counts. A B line is one
 * translated block that ran (blocks that never ran are left out): its start
 * address, number of guest instructions and bytes, and how many times it ran.
 * QEMU may translate code at one start with different lengths; each is its
 * own B line. An E line (edges=exact only) counts transfers from a block
 * ending in a conditional branch (Thumb B<cond> T1/T3, CBZ, CBNZ, but not
 * branches made conditional by an IT block; RISC-V BEQ..BGEU, C.BEQZ,
 * C.BNEZ; AVR BRBS/BRBC, and a skip followed by RJMP or JMP, whose <branch>
 * is the skip), whose branch instruction is at <branch>, to the block that
 * ran next, which starts at <to>. The same pair can appear on several lines (one per translation):
 * readers add them up. Readers must ignore line types and header keys they
 * do not know.
 *
 * Cost: block counts are inline adds in the translated code (no call), a few
 * per cent of run time. Edges cannot be counted inline in plugin API 1 (an
 * inline op adds a constant to a fixed address, so it cannot tell which
 * block came before), so edges=exact gives every block an exec callback that
 * settles the pending edge, if any, and makes the block pending when it ends
 * in a conditional branch: measured 1.3-1.5x on branchy code, hence opt-in.
 *
 * Threads: the vCPU thread translates and runs blocks; a plugin thread serves
 * the control socket and the interval. The block table is guarded by a mutex;
 * counters are read without it while the guest runs, so a snapshot taken
 * mid-run is consistent per counter (aligned 64-bit loads) but not across
 * counters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

struct block {
	uint64_t count; /* inline counter: first, so it is 8-byte aligned */
	uint64_t taken; /* edges to target / to the next instruction */
	uint64_t fell;
	uint64_t pc;
	uint64_t branch; /* address of the conditional branch ending it, or 0 */
	uint64_t target;
	uint64_t next; /* the instruction after the branch */
	uint32_t insns;
	uint32_t bytes;
	int restart; /* AVR: a data access QEMU runs alone after abandoning a block */
	struct block *chain;
};

enum arch { ARCH_ARM, ARCH_RISCV32, ARCH_AVR };

static struct {
	enum arch arch;
	pthread_mutex_t lock;
	struct block **buckets;
	size_t nbuckets;
	size_t nblocks;
	struct block **pending; /* per vCPU: block whose branch is unresolved */
	int nvcpus;
	int exact; /* edges=exact: every block gets the exec callback */

	char *out;
	char *tmp;
	char *ctl;
	long interval_ms;
	uint64_t seq;           /* of the snapshot in the file */
	uint64_t written_total; /* total_count() when it was written */
	pthread_mutex_t write_lock;

	pthread_t thread;
	int thread_started;
	int wake[2]; /* self-pipe: atexit stops the thread */
	int listen_fd;
} g = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.write_lock = PTHREAD_MUTEX_INITIALIZER,
	.listen_fd = -1,
	.wake = {-1, -1},
};

static uint16_t half(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/*
 * Decodes a Thumb conditional branch (B<cond> T1/T3, CBZ/CBNZ) at pc from its
 * bytes; returns 1 and sets *target when it is one.
 */
static int thumb_cond_branch(uint64_t pc, const uint8_t *p, size_t size, uint64_t *target)
{
	if (size == 2) {
		uint16_t h = half(p);
		if ((h & 0xF000) == 0xD000 && ((h >> 8) & 0xF) < 0xE) {
			int32_t imm = (int8_t)(h & 0xFF);
			*target = pc + 4 + (int64_t)imm * 2;
			return 1;
		}
		if ((h & 0xF500) == 0xB100) {
			uint32_t imm = ((h >> 9) & 1) << 6 | ((h >> 3) & 0x1F) << 1;
			*target = pc + 4 + imm;
			return 1;
		}
		return 0;
	}
	if (size == 4) {
		uint16_t h1 = half(p), h2 = half(p + 2);
		if ((h1 & 0xF800) == 0xF000 && (h2 & 0xD000) == 0x8000 && ((h1 >> 6) & 0xF) < 0xE) {
			uint32_t s = (h1 >> 10) & 1, j1 = (h2 >> 13) & 1, j2 = (h2 >> 11) & 1;
			uint32_t imm = s << 20 | j2 << 19 | j1 << 18 | (h1 & 0x3F) << 12 | (h2 & 0x7FF) << 1;
			int32_t simm = (int32_t)(imm << 11) >> 11;
			*target = pc + 4 + (int64_t)simm;
			return 1;
		}
	}
	return 0;
}

/*
 * Decodes a RISC-V conditional branch (BEQ..BGEU, C.BEQZ, C.BNEZ) at pc;
 * returns 1 and sets *target when it is one.
 */
static int riscv_cond_branch(uint64_t pc, const uint8_t *p, size_t size, uint64_t *target)
{
	if (size == 2) {
		uint16_t h = half(p);
		if ((h & 3) == 1 && (h >> 14) == 3) { /* C.BEQZ 110, C.BNEZ 111 */
			uint32_t imm = ((h >> 12) & 1) << 8 | ((h >> 5) & 3) << 6 | ((h >> 2) & 1) << 5 |
				       ((h >> 10) & 3) << 3 | ((h >> 3) & 3) << 1;
			*target = pc + (int64_t)((int32_t)(imm << 23) >> 23);
			return 1;
		}
		return 0;
	}
	if (size == 4) {
		uint32_t w = (uint32_t)half(p) | (uint32_t)half(p + 2) << 16;
		uint32_t f3 = (w >> 12) & 7;
		if ((w & 0x7F) == 0x63 && f3 != 2 && f3 != 3) {
			uint32_t imm = (w >> 31) << 12 | ((w >> 7) & 1) << 11 | ((w >> 25) & 0x3F) << 5 |
				       ((w >> 8) & 0xF) << 1;
			*target = pc + (int64_t)((int32_t)(imm << 19) >> 19);
			return 1;
		}
	}
	return 0;
}

/* avr_size is the size of the AVR instruction whose first word is w. */
static size_t avr_size(uint16_t w)
{
	/* JMP, CALL, LDS, STS take a second word. */
	return (w & 0xFE0C) == 0x940C || (w & 0xFC0F) == 0x9000 ? 4 : 2;
}

/* avr_skip reports whether w is CPSE, SBRC, SBRS, SBIC or SBIS. */
static int avr_skip(uint16_t w)
{
	return (w & 0xFC00) == 0x1000 || (w & 0xFC08) == 0xFC00 || (w & 0xFD00) == 0x9900;
}

/* avr_jump sets *target when the AVR instruction at pc is RJMP or JMP. */
static int avr_jump(uint64_t pc, const uint8_t *p, size_t size, uint64_t *target)
{
	uint16_t w = half(p);
	if ((w & 0xF000) == 0xC000) {
		*target = pc + 2 + (int64_t)((int16_t)(w << 4) >> 4) * 2;
		return 1;
	}
	if (size == 4 && (w & 0xFE0E) == 0x940C) {
		*target = ((uint64_t)((w >> 4) & 0x1F) << 17 | (uint64_t)(w & 1) << 16 | half(p + 2)) * 2;
		return 1;
	}
	return 0;
}

/*
 * An instruction's bytes (up to 4). QEMU 7.2's AVR translator reads code
 * without the translator_ld* helpers that record it for plugins, so its
 * instructions come with no data and size 0: they are read from the host
 * page QEMU translated them from, and sized by their first word. Returns the
 * size, or 0 when the bytes cannot be had.
 */
static size_t insn_bytes(struct qemu_plugin_insn *insn, uint8_t out[4])
{
	size_t size = qemu_plugin_insn_size(insn);
	if (size > 0) {
		memcpy(out, qemu_plugin_insn_data(insn), size < 4 ? size : 4);
		return size;
	}
	const uint8_t *h = qemu_plugin_insn_haddr(insn);
	if (g.arch != ARCH_AVR || !h) {
		return 0;
	}
	size = avr_size(half(h));
	memcpy(out, h, size);
	return size;
}

/*
 * Finds how the block ends. Sets b->bytes and, when it ends in a conditional
 * branch, b->branch, b->target (taken) and b->next (not taken). On AVR a
 * block that ends in a skip instruction (CPSE, SBRC, SBRS, SBIC, SBIS)
 * followed by RJMP or JMP leaves it either way: the skip is the branch,
 * taken (skipped) to after the jump, not taken to the jump's target. A skip
 * elsewhere in a block is resolved inside it (QEMU translates the skipped
 * instruction behind a TCG branch), which the plugin cannot see.
 */
static void block_exit(struct block *b, struct qemu_plugin_tb *tb, size_t n)
{
	struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(tb, n - 1);
	uint64_t lpc = qemu_plugin_insn_vaddr(last);
	uint8_t p[4] = {0};
	size_t lsize = insn_bytes(last, p);
	uint64_t target;

	b->bytes = (uint32_t)(lpc + lsize - b->pc);
	if (lsize == 0) {
		return;
	}
	switch (g.arch) {
	case ARCH_ARM:
		if (thumb_cond_branch(lpc, p, lsize, &target)) {
			b->branch = lpc, b->target = target, b->next = lpc + lsize;
		}
		break;
	case ARCH_RISCV32:
		if (riscv_cond_branch(lpc, p, lsize, &target)) {
			b->branch = lpc, b->target = target, b->next = lpc + lsize;
		}
		break;
	case ARCH_AVR:
		/*
		 * QEMU 7.2 abandons a block at its first data access to an I/O
		 * register (after the block's inline count) and runs the access
		 * alone in a block of its own: LD, ST, LDS, STS, PUSH, POP (1001
		 * 00xx), LDD, STD (10q0).
		 */
		b->restart = n == 1 && ((half(p) & 0xFC00) == 0x9000 || (half(p) & 0xD000) == 0x8000);
		if ((half(p) & 0xF800) == 0xF000) { /* BRBS, BRBC */
			b->branch = lpc, b->next = lpc + 2;
			b->target = lpc + 2 + (int64_t)((int16_t)(half(p) << 6) >> 9) * 2;
		} else if (n >= 2 && avr_jump(lpc, p, lsize, &target)) {
			struct qemu_plugin_insn *prev = qemu_plugin_tb_get_insn(tb, n - 2);
			uint8_t q[4] = {0};
			if (insn_bytes(prev, q) && avr_skip(half(q))) {
				b->branch = qemu_plugin_insn_vaddr(prev);
				b->target = lpc + lsize;
				b->next = target;
			}
		}
		break;
	}
}

static size_t bucket_of(uint64_t pc, uint32_t insns, size_t n)
{
	uint64_t h = (pc ^ (uint64_t)insns << 40) * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 20) & (n - 1);
}

/* Called with g.lock held. */
static void grow(void)
{
	size_t n = g.nbuckets ? g.nbuckets * 2 : 1024;
	struct block **b = calloc(n, sizeof(*b));
	if (!b) {
		return; /* keep the longer chains */
	}
	for (size_t i = 0; i < g.nbuckets; i++) {
		struct block *e = g.buckets[i];
		while (e) {
			struct block *nx = e->chain;
			size_t k = bucket_of(e->pc, e->insns, n);
			e->chain = b[k];
			b[k] = e;
			e = nx;
		}
	}
	free(g.buckets);
	g.buckets = b;
	g.nbuckets = n;
}

static struct block *lookup_or_add(uint64_t pc, uint32_t insns)
{
	struct block *e;

	pthread_mutex_lock(&g.lock);
	if (g.nblocks >= g.nbuckets / 2) {
		grow();
	}
	size_t k = bucket_of(pc, insns, g.nbuckets);
	for (e = g.buckets[k]; e; e = e->chain) {
		if (e->pc == pc && e->insns == insns) {
			goto out;
		}
	}
	e = calloc(1, sizeof(*e));
	if (e) {
		e->pc = pc;
		e->insns = insns;
		e->chain = g.buckets[k];
		g.buckets[k] = e;
		g.nblocks++;
	}
out:
	pthread_mutex_unlock(&g.lock);
	return e;
}

static void on_exec(unsigned int vcpu, void *udata)
{
	struct block *b = udata;
	struct block **pending = &g.pending[vcpu < (unsigned)g.nvcpus ? vcpu : 0];
	struct block *p = *pending;

	if (b->restart) {
		/* The pending block was abandoned before its branch. */
		*pending = NULL;
		return;
	}
	if (p) {
		if (b->pc == p->target) {
			p->taken++;
		} else if (b->pc == p->next) {
			p->fell++;
		}
	}
	*pending = b->branch ? b : NULL;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id;
	size_t n = qemu_plugin_tb_n_insns(tb);
	if (n == 0) {
		return;
	}
	struct block *b = lookup_or_add(qemu_plugin_tb_vaddr(tb), (uint32_t)n);
	if (!b) {
		return;
	}
	if (b->bytes == 0) {
		block_exit(b, tb, n);
	}
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
	if (g.exact) {
		qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, b);
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void put_edge(FILE *f, uint64_t branch, uint64_t to, uint64_t count)
{
	if (count) {
		fprintf(f, "E 0x%" PRIx64 " 0x%" PRIx64 " %" PRIu64 "\n", branch, to, count);
	}
}

/* The sum of all block counts: it grows whenever anything runs. */
static uint64_t total_count(void)
{
	uint64_t total = 0;

	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; i < g.nbuckets; i++) {
		for (struct block *e = g.buckets[i]; e; e = e->chain) {
			total += __atomic_load_n(&e->count, __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&g.lock);
	return total;
}

/*
 * Writes a snapshot: PATH.tmp, then rename over PATH, so readers never see a
 * partial file. No fsync: the file only has to survive QEMU, not the host.
 * With if_changed, nothing is written when no block ran since the last
 * write. Returns the sequence number now in the file, or 0 on failure with
 * errno set.
 */
static uint64_t write_counts(const char *reason, int if_changed)
{
	uint64_t seq = 0;
	int err = 0;

	pthread_mutex_lock(&g.write_lock);
	uint64_t total = total_count();
	if (if_changed && g.seq && total == g.written_total) {
		seq = g.seq;
		goto out;
	}
	FILE *f = fopen(g.tmp, "w");
	if (!f) {
		err = errno;
		goto out;
	}
	fprintf(f, "mscov 1 reason=%s seq=%" PRIu64 " time_ms=%" PRIu64 " edges=%s\n", reason, g.seq + 1,
		now_ms(), g.exact ? "exact" : "derived");
	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; i < g.nbuckets; i++) {
		for (struct block *e = g.buckets[i]; e; e = e->chain) {
			uint64_t c = __atomic_load_n(&e->count, __ATOMIC_RELAXED);
			if (!c) {
				continue;
			}
			fprintf(f, "B 0x%" PRIx64 " %" PRIu32 " %" PRIu32 " %" PRIu64 "\n", e->pc, e->insns, e->bytes, c);
			if (e->branch) {
				put_edge(f, e->branch, e->target, __atomic_load_n(&e->taken, __ATOMIC_RELAXED));
				put_edge(f, e->branch, e->next, __atomic_load_n(&e->fell, __ATOMIC_RELAXED));
			}
		}
	}
	pthread_mutex_unlock(&g.lock);
	if (ferror(f)) {
		err = EIO;
	}
	if (fclose(f) != 0 && !err) {
		err = errno;
	}
	if (!err && rename(g.tmp, g.out) != 0) {
		err = errno;
	}
	if (err) {
		unlink(g.tmp);
		goto out;
	}
	seq = ++g.seq;
	g.written_total = total;
out:
	pthread_mutex_unlock(&g.write_lock);
	errno = err;
	return seq;
}

static void serve(int fd)
{
	char req[64];
	char resp[128];
	size_t n = 0;

	/* A client that connects and says nothing must not wedge the thread. */
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (n < sizeof(req) - 1) {
		ssize_t r = read(fd, req + n, sizeof(req) - 1 - n);
		if (r <= 0) {
			break;
		}
		n += (size_t)r;
		if (memchr(req, '\n', n)) {
			break;
		}
	}
	req[n] = '\0';
	if (strcmp(req, "flush\n") == 0) {
		uint64_t seq = write_counts("request", 0);
		if (seq) {
			snprintf(resp, sizeof(resp), "ok %" PRIu64 "\n", seq);
		} else {
			snprintf(resp, sizeof(resp), "error writing %s: %s\n", g.out, strerror(errno));
		}
	} else {
		snprintf(resp, sizeof(resp), "error unknown request (want \"flush\\n\")\n");
	}
	ssize_t w = write(fd, resp, strlen(resp));
	(void)w;
	close(fd);
}

static void *run(void *arg)
{
	(void)arg;
	uint64_t due = g.interval_ms > 0 ? now_ms() + (uint64_t)g.interval_ms : 0;

	for (;;) {
		struct pollfd fds[2] = {{.fd = g.wake[0], .events = POLLIN}, {.fd = g.listen_fd, .events = POLLIN}};
		int timeout = -1;
		if (due) {
			uint64_t now = now_ms();
			timeout = due > now ? (int)(due - now) : 0;
		}
		int r = poll(fds, g.listen_fd >= 0 ? 2 : 1, timeout);
		if (r < 0 && errno != EINTR) {
			return NULL;
		}
		if (fds[0].revents) {
			return NULL;
		}
		if (r > 0 && g.listen_fd >= 0 && (fds[1].revents & POLLIN)) {
			int fd = accept4(g.listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				serve(fd);
			}
		}
		if (due && now_ms() >= due) {
			write_counts("interval", 1);
			due = now_ms() + (uint64_t)g.interval_ms;
		}
	}
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
	(void)id;
	(void)p;
	if (g.thread_started) {
		ssize_t w = write(g.wake[1], "x", 1);
		(void)w;
		pthread_join(g.thread, NULL);
		g.thread_started = 0;
	}
	if (!write_counts("exit", 0)) {
		fprintf(stderr, "mscov: writing %s: %s\n", g.out, strerror(errno));
	}
	if (g.listen_fd >= 0) {
		close(g.listen_fd);
		unlink(g.ctl);
	}
}

static int listen_on(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -1;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 8) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int fail(const char *fmt, const char *arg)
{
	char msg[512];
	snprintf(msg, sizeof(msg), fmt, arg);
	fprintf(stderr, "mscov: %s\n", msg);
	return -1;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	if (strcmp(info->target_name, "arm") == 0) {
		g.arch = ARCH_ARM;
	} else if (strcmp(info->target_name, "riscv32") == 0) {
		g.arch = ARCH_RISCV32;
	} else if (strcmp(info->target_name, "avr") == 0) {
		g.arch = ARCH_AVR;
	} else {
		return fail("only arm, riscv32 and avr guests are supported, not %s", info->target_name);
	}
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "out=", 4) == 0) {
			g.out = strdup(a + 4);
		} else if (strncmp(a, "ctl=", 4) == 0) {
			g.ctl = strdup(a + 4);
		} else if (strncmp(a, "interval_ms=", 12) == 0) {
			char *end;
			g.interval_ms = strtol(a + 12, &end, 10);
			if (*end || g.interval_ms < 0) {
				return fail("bad interval_ms in %s", a);
			}
		} else if (strcmp(a, "edges=exact") == 0) {
			g.exact = 1;
		} else if (strcmp(a, "edges=derived") == 0) {
			g.exact = 0;
		} else {
			return fail("unknown argument %s (want out=, interval_ms=, ctl=, edges=derived|exact)", a);
		}
	}
	if (!g.out || !*g.out) {
		return fail("%s", "out=PATH is required");
	}
	if (asprintf(&g.tmp, "%s.tmp", g.out) < 0) {
		return fail("%s", "out of memory");
	}
	g.nvcpus = info->system_emulation && info->system.max_vcpus > 0 ? info->system.max_vcpus : 1;
	g.pending = calloc((size_t)g.nvcpus, sizeof(*g.pending));
	if (!g.pending) {
		return fail("%s", "out of memory");
	}
	/* Fail now rather than at exit if the file cannot be written. */
	if (!write_counts("start", 0)) {
		return fail("cannot write the counts file: %s", strerror(errno));
	}
	if (g.ctl) {
		g.listen_fd = listen_on(g.ctl);
		if (g.listen_fd < 0) {
			return fail("cannot listen on the ctl socket: %s", strerror(errno));
		}
	}
	if (g.ctl || g.interval_ms > 0) {
		if (pipe2(g.wake, O_CLOEXEC) != 0 || pthread_create(&g.thread, NULL, run, NULL) != 0) {
			return fail("%s", "cannot start the flush thread");
		}
		g.thread_started = 1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
