/*
 * lockorder.c: the lock-holder table of lockorder.h (all builds), its dump
 * (SIGUSR2), and the debug-build order checks, which read the same record.
 */
#include "engine/lockorder.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/bm_internal.h"
#include "engine/log.h"

/* Inode numbers kept per thread; fs_lock_many takes four at most, and a
 * thread holding more than this is counted, not named. */
#define LO_INODES 8

/* One thread's record. Written only by its owner (relaxed stores, release
 * where a reader should see the fields before the word that makes them
 * count); read by lo_dump at any time. */
struct lo_slot {
	struct lo_slot *next; /* the table: pushed once, never unlinked */
	_Atomic int tid;      /* the owner, 0 while free */
	_Atomic unsigned held[LO_INODE + 1];
	_Atomic bool txn_excl; /* LO_TXN is a checkpoint's exclusive hold */
	_Atomic uint64_t ino[LO_INODES];
	_Atomic unsigned ino_excl; /* bit i: ino[i] is held for writing */
	_Atomic unsigned wait;     /* enum lo_wait */
	_Atomic uint64_t wait_detail;
	_Atomic uint64_t wait_since; /* ns, CLOCK_MONOTONIC */
};

static _Atomic(struct lo_slot *) table;
static _Thread_local struct lo_slot *self;
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

#define RELAXED memory_order_relaxed

/* Thread exit: the slot goes back to the table, empty. */
static void slot_free(void *p)
{
	struct lo_slot *s = p;
	for (unsigned l = 0; l <= LO_INODE; l++)
		atomic_store_explicit(&s->held[l], 0, RELAXED);
	atomic_store_explicit(&s->wait, LO_WAIT_NONE, RELAXED);
	atomic_store_explicit(&s->tid, 0, memory_order_release);
	self = NULL; /* a later destructor that takes a lock registers again */
}

static void slot_key_make(void)
{
	if (pthread_key_create(&slot_key, slot_free) != 0)
		abort(); /* only when the process is out of keys: a bug */
}

/* A free slot of an exited thread, or a new one pushed on the table. */
static struct lo_slot *slot_register(void)
{
	int tid = (int)gettid();
	struct lo_slot *s;

	pthread_once(&slot_key_once, slot_key_make);
	for (s = atomic_load_explicit(&table, memory_order_acquire); s; s = s->next) {
		int free_tid = 0;
		if (atomic_compare_exchange_strong(&s->tid, &free_tid, tid))
			break;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			vs_log(VS_LOG_ERR, "internal: no memory for a lock-holder slot");
			abort();
		}
		atomic_init(&s->tid, tid);
		s->next = atomic_load_explicit(&table, RELAXED);
		while (!atomic_compare_exchange_weak_explicit(&table, &s->next, s,
							      memory_order_release, RELAXED))
			;
	}
	pthread_setspecific(slot_key, s);
	self = s;
	return s;
}

static inline struct lo_slot *slot(void)
{
	struct lo_slot *s = self;
	return __builtin_expect(s != NULL, 1) ? s : slot_register();
}

/* ---- the debug-build order checks ---- */

#ifndef NDEBUG
static unsigned held_of(enum lo_level level)
{
	return self ? atomic_load_explicit(&self->held[level], RELAXED) : 0;
}

static _Noreturn void lo_die(const char *msg, const char *what)
{
	vs_log(VS_LOG_ERR,
	       "internal: lock order violated: %s (%s); held: transaction %u, rename %u, "
	       "inode locks %u, page latches %u (engine/lockorder.h)",
	       msg, what, bm_thread_txn_depth(), held_of(LO_RENAME), held_of(LO_INODE),
	       bm_thread_latches());
	abort();
}

static const char *level_what(enum lo_level level)
{
	return level == LO_RENAME ? "rename_mu" : level == LO_INODE ? "inode lock" : "engine lock";
}

static void order_check(enum lo_level level)
{
	if (level < LO_RENAME)
		return; /* the engine's own: lo_assert_may_wait_checkpoint checks them */
	/* Deeper levels must not be held; the same level may (fs_lock_many
	 * takes several inode locks in stripe order). */
	for (unsigned l = level + 1; l <= LO_INODE; l++)
		if (held_of(l) > 0)
			lo_die("a lock taken while holding a later one", level_what(level));
	if (bm_thread_latches() > 0)
		lo_die("a lock taken while holding page latches", level_what(level));
}

void lo_assert_may_wait_checkpoint(const char *what)
{
	if (bm_thread_txn_depth() > 0 || held_of(LO_RENAME) > 0 || held_of(LO_INODE) > 0 ||
	    bm_thread_latches() > 0)
		lo_die("a wait for a checkpoint while holding a lock", what);
}
#else
static inline void order_check(enum lo_level level)
{
	(void)level;
}
#endif

/* ---- recording ---- */

void lo_acquire(enum lo_level level, uint64_t ino, bool excl)
{
	struct lo_slot *s = slot();
	order_check(level);
	unsigned n = atomic_load_explicit(&s->held[level], RELAXED);
	if (level == LO_INODE && n < LO_INODES) {
		unsigned bits = atomic_load_explicit(&s->ino_excl, RELAXED);
		atomic_store_explicit(&s->ino[n], ino, RELAXED);
		atomic_store_explicit(&s->ino_excl, excl ? bits | 1u << n : bits & ~(1u << n),
				      RELAXED);
	} else if (level == LO_TXN) {
		atomic_store_explicit(&s->txn_excl, excl, RELAXED);
	}
	atomic_store_explicit(&s->held[level], n + 1, memory_order_release);
}

/* Take inode @ino (0: the last one taken) out of the named ones, closing
 * the gap; @n is the count before the release. */
static void inode_forget(struct lo_slot *s, unsigned n, uint64_t ino)
{
	unsigned named = n < LO_INODES ? n : LO_INODES;
	int i = (int)named - 1;
	if (ino != 0)
		while (i >= 0 && atomic_load_explicit(&s->ino[i], RELAXED) != ino)
			i--;
	else if (n > LO_INODES)
		i = -1; /* the last one taken was past LO_INODES: never named */
	if (i < 0)
		return;
	for (unsigned j = (unsigned)i; j + 1 < named; j++)
		atomic_store_explicit(&s->ino[j], atomic_load_explicit(&s->ino[j + 1], RELAXED),
				      RELAXED);
	if (n > LO_INODES)
		atomic_store_explicit(&s->ino[named - 1], 0, RELAXED); /* one unnamed moves up */
	unsigned bits = atomic_load_explicit(&s->ino_excl, RELAXED);
	unsigned below = (1u << i) - 1;
	atomic_store_explicit(&s->ino_excl, (bits & below) | ((bits >> 1) & ~below), RELAXED);
}

void lo_release(enum lo_level level, uint64_t ino)
{
	struct lo_slot *s = slot();
	unsigned n = atomic_load_explicit(&s->held[level], RELAXED);
	if (n == 0) {
#ifndef NDEBUG
		lo_die("a lock released that is not held", "release");
#endif
		return;
	}
	/* The count first: a reader never takes a shifted entry for held. */
	atomic_store_explicit(&s->held[level], n - 1, memory_order_release);
	if (level == LO_INODE)
		inode_forget(s, n, ino);
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lo_wait_begin_at(enum lo_wait what, uint64_t detail, uint64_t since_ns)
{
	struct lo_slot *s = slot();
	atomic_store_explicit(&s->wait_detail, detail, RELAXED);
	atomic_store_explicit(&s->wait_since, since_ns, RELAXED);
	atomic_store_explicit(&s->wait, what, memory_order_release);
}

void lo_wait_begin(enum lo_wait what, uint64_t detail)
{
	/* The coarse clock: a vDSO read of the last tick, a few ns; the dump
	 * shows tenths of seconds. */
	lo_wait_begin_at(what, detail, now_ns(CLOCK_MONOTONIC_COARSE));
}

void lo_wait_end(void)
{
	struct lo_slot *s = self;
	if (s)
		atomic_store_explicit(&s->wait, LO_WAIT_NONE, RELAXED);
}

/* ---- the dump: async-signal-safe ---- */

struct line {
	char b[512];
	size_t n;
};

static void put_s(struct line *l, const char *str)
{
	while (*str && l->n < sizeof(l->b) - 1)
		l->b[l->n++] = *str++;
}

static void put_u(struct line *l, uint64_t v)
{
	char d[20];
	unsigned k = 0;
	do {
		d[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (k > 0 && l->n < sizeof(l->b) - 1)
		l->b[l->n++] = d[--k];
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static const char *const wait_what[] = {
    [LO_WAIT_TXN_LOCK] = "the transaction lock (a checkpoint holds it)",
    [LO_WAIT_TXN_DRAIN] = "running transactions to end (checkpoint)",
    [LO_WAIT_CHECKPOINT] = "a checkpoint another thread runs",
    [LO_WAIT_ROOM] = "journal room",
    [LO_WAIT_RENAME] = "rename_mu",
    [LO_WAIT_INODE] = "inode",
    [LO_WAIT_FRAME] = "a free frame",
    [LO_WAIT_LATCH] = "page",
};

/* "holds checkpoint, txn(read), rename_mu, inode 5678(write)"; false when
 * it holds nothing. */
static bool put_holds(struct line *l, struct lo_slot *s, unsigned wait)
{
	unsigned ck = atomic_load_explicit(&s->held[LO_CHECKPOINT], memory_order_acquire);
	unsigned tx = atomic_load_explicit(&s->held[LO_TXN], memory_order_acquire);
	unsigned rn = atomic_load_explicit(&s->held[LO_RENAME], memory_order_acquire);
	unsigned in = atomic_load_explicit(&s->held[LO_INODE], memory_order_acquire);
	const char *sep = "holds ";
	/* rename_mu and inode locks are recorded before the wait for them
	 * (lo_acquire checks the order first): the last one is awaited. */
	if (wait == LO_WAIT_RENAME && rn > 0)
		rn--;
	if (wait == LO_WAIT_INODE && in > 0)
		in--;
	if (ck + tx + rn + in == 0)
		return false;
	if (ck) {
		put_s(l, sep);
		put_s(l, "checkpoint");
		sep = ", ";
	}
	if (tx) {
		put_s(l, sep);
		put_s(l, atomic_load_explicit(&s->txn_excl, RELAXED) ? "txn(write)" : "txn(read)");
		sep = ", ";
	}
	if (rn) {
		put_s(l, sep);
		put_s(l, "rename_mu");
		sep = ", ";
	}
	unsigned bits = atomic_load_explicit(&s->ino_excl, RELAXED);
	for (unsigned i = 0; i < in && i < LO_INODES; i++) {
		put_s(l, sep);
		uint64_t ino = atomic_load_explicit(&s->ino[i], RELAXED);
		put_s(l, "inode ");
		if (ino)
			put_u(l, ino);
		else
			put_s(l, "?");
		put_s(l, bits & (1u << i) ? "(write)" : "(read)");
		sep = ", ";
	}
	if (in > LO_INODES) {
		put_s(l, ", ");
		put_u(l, in - LO_INODES);
		put_s(l, " more inode locks");
	}
	return true;
}

/* "waits for inode 91011 lock for 12.3 s"; false when it waits for nothing. */
static bool put_wait(struct line *l, struct lo_slot *s, unsigned w, uint64_t now)
{
	if (w == LO_WAIT_NONE || w > LO_WAIT_LATCH)
		return false;
	uint64_t detail = atomic_load_explicit(&s->wait_detail, RELAXED);
	uint64_t since = atomic_load_explicit(&s->wait_since, RELAXED);
	/* The coarse clock may lag the precise one by a tick. */
	uint64_t ds = now > since ? (now - since) / 100000000u : 0;
	put_s(l, "waits for ");
	put_s(l, wait_what[w]);
	if (w == LO_WAIT_INODE || w == LO_WAIT_LATCH) {
		put_s(l, " ");
		put_u(l, detail);
		put_s(l, w == LO_WAIT_INODE ? " lock" : " latch");
	}
	put_s(l, " for ");
	put_u(l, ds / 10);
	put_s(l, ".");
	put_u(l, ds % 10);
	put_s(l, " s");
	return true;
}

int lo_dump(int fd)
{
	struct line l = {.n = 0};
	uint64_t now = now_ns(CLOCK_MONOTONIC);
	int lines = 0, r;

	put_s(&l, "lock-holder table of pid ");
	put_u(&l, (uint64_t)getpid());
	put_s(&l, " (engine/lockorder.h):\n");
	if ((r = write_all(fd, l.b, l.n)) < 0)
		return r;
	for (struct lo_slot *s = atomic_load_explicit(&table, memory_order_acquire); s;
	     s = s->next) {
		int tid = atomic_load_explicit(&s->tid, memory_order_acquire);
		if (tid == 0)
			continue;
		l.n = 0;
		put_s(&l, "tid ");
		put_u(&l, (uint64_t)tid);
		put_s(&l, ": ");
		unsigned wait = atomic_load_explicit(&s->wait, memory_order_acquire);
		bool holds = put_holds(&l, s, wait);
		if (holds)
			put_s(&l, "; ");
		if (!put_wait(&l, s, wait, now)) {
			if (!holds)
				continue;
			l.n -= 2; /* no "; " after the holds */
		}
		l.b[l.n++] = '\n';
		if ((r = write_all(fd, l.b, l.n)) < 0)
			return r;
		lines++;
	}
	static const char end[] = "end of lock-holder table\n";
	if ((r = write_all(fd, end, sizeof(end) - 1)) < 0)
		return r;
	return lines;
}

/* ---- SIGUSR2 ---- */

static char dump_path[256];    /* $VS_LOCKDUMP at install, or empty */
static dev_t devnull_rdev;     /* stderr on it: nobody reads it */
static bool devnull_known;
static int install_err;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

/* Where a dump goes (see lo_dump_install): an fd to write, and whether the
 * handler opened it. */
static int dump_fd(bool *ret_opened)
{
	struct stat st;
	char tmp[64];
	const char *path = dump_path;

	*ret_opened = false;
	if (!path[0]) {
		if (fstat(2, &st) == 0 &&
		    !(devnull_known && S_ISCHR(st.st_mode) && st.st_rdev == devnull_rdev))
			return 2;
		struct line l = {.n = 0};
		put_s(&l, "/tmp/virtuscale-locks.");
		put_u(&l, (uint64_t)getpid());
		memcpy(tmp, l.b, l.n);
		tmp[l.n] = 0;
		path = tmp;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	*ret_opened = fd >= 0;
	return fd;
}

static void on_sigusr2(int sig)
{
	int saved = errno;
	bool opened;
	int fd = dump_fd(&opened);
	(void)sig;
	if (fd >= 0)
		lo_dump(fd);
	if (opened)
		close(fd);
	errno = saved;
}

/* The thread that takes SIGUSR2: every other signal blocked, SIGUSR2 open
 * only while it sleeps here. */
static void *dump_thread_main(void *arg)
{
	sigset_t open_only;
	(void)arg;
	sigfillset(&open_only);
	sigdelset(&open_only, SIGUSR2);
	for (;;)
		sigsuspend(&open_only);
	return NULL;
}

static void install(void)
{
	struct sigaction sa;
	sigset_t usr2, all, old;
	struct stat st;
	pthread_attr_t attr;
	pthread_t t;
	const char *env = getenv("VS_LOCKDUMP");

	if (env && strlen(env) < sizeof(dump_path))
		strcpy(dump_path, env);
	if (stat("/dev/null", &st) == 0) {
		devnull_rdev = st.st_rdev;
		devnull_known = true;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigusr2;
	sa.sa_flags = SA_RESTART;
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGUSR2, &sa, NULL) < 0) {
		install_err = -errno;
		return;
	}
	/* Blocked here, and so in every thread created from here on; the
	 * dump thread starts with everything blocked and opens SIGUSR2 only. */
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &usr2, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int r = pthread_create(&t, &attr, dump_thread_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		/* No thread of its own: any thread that leaves it unblocked
		 * takes it; better a possible EINTR than no dump. */
		pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
		install_err = -r;
		return;
	}
	pthread_setname_np(t, "vs-lockdump");
}

int lo_dump_install(void)
{
	pthread_once(&install_once, install);
	return install_err;
}
