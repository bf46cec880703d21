/*
 * test_lockorder.c: the lock-holder table of engine/lockorder.h, read the
 * way a hang report reads it (lo_dump into a pipe, SIGUSR2 into a file),
 * with real holders and waiters of the filesystem's and the engine's locks:
 *
 *  - an inode lock held for writing inside a transaction, and another
 *    thread waiting for it;
 *  - rename_mu held, and a cross-directory fs_rename waiting for it inside
 *    its transaction;
 *  - a checkpoint held at its snapshot (the transaction lock exclusive), a
 *    transaction waiting for the lock and a second checkpoint for the first;
 *  - transactions holding all the journal room, and one waiting for room;
 *  - inode locks released out of order keep the right names and modes;
 *  - SIGUSR2 writes the table to $VS_LOCKDUMP, taken by the dump's own
 *    thread (the others keep it blocked).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "engine/bm_fault.h"
#include "engine/lockorder.h"
#include "fs/fs.h"
#include "fs/fs_internal.h"
#include "tests/lib/vt_bm.h"

#define MiB (UINT64_C(1) << 20)

static char img[256];
static char dumpfile[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "lockorder");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

/* ---- reading the table ---- */

static char table[1 << 16];

/* lo_dump through a pipe into table[]; returns the number of thread lines. */
static int dump(void)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	int lines = lo_dump(p[1]);
	assert_true(lines >= 0);
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while ((r = read(p[0], table + n, sizeof(table) - 1 - n)) > 0)
		n += (size_t)r;
	close(p[0]);
	table[n] = 0;
	assert_non_null(strstr(table, "end of lock-holder table\n"));
	return lines;
}

/* The line of thread @tid in table[] (without its newline), or NULL. */
static const char *line_of(int tid, char *buf, size_t size)
{
	char head[32];
	snprintf(head, sizeof(head), "tid %d: ", tid);
	for (const char *l = table; *l;) {
		const char *e = strchr(l, '\n');
		size_t n = e ? (size_t)(e - l) : strlen(l);
		if (strncmp(l, head, strlen(head)) == 0 && n < size) {
			memcpy(buf, l, n);
			buf[n] = 0;
			return buf;
		}
		l += n + (e != NULL);
	}
	return NULL;
}

/* Dump until thread @tid's line starts with @want (it is about to wait),
 * for at most 10 s; the line is left in @buf. */
static void dump_until(int tid, const char *want, char *buf, size_t size)
{
	for (int i = 0; i < 1000; i++) {
		dump();
		const char *l = line_of(tid, buf, size);
		if (l && strncmp(l + strcspn(l, ":") + 2, want, strlen(want)) == 0)
			return;
		usleep(10 * 1000);
	}
	fail_msg("no line \"tid %d: %s...\" in 10 s; the table:\n%s", tid, want, table);
}

/* "... for 12.3 s" at the end of a waiter's line. */
static void assert_wait_time(const char *l)
{
	const char *f = NULL;
	for (const char *p = strstr(l, " for "); p; p = strstr(p + 1, " for "))
		f = p; /* the last: "waits for ... for 12.3 s" */
	assert_non_null(f);
	unsigned a, b;
	char s[4];
	assert_int_equal(sscanf(f, " for %u.%1u %3s", &a, &b, s), 3);
	assert_string_equal(s, "s");
	assert_true(a < 60);
}

/* ---- a small rendezvous ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void flag_set(bool *f)
{
	pthread_mutex_lock(&mu);
	*f = true;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void flag_wait(bool *f)
{
	pthread_mutex_lock(&mu);
	while (!*f)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void join_within(pthread_t t, int secs, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	int r = pthread_timedjoin_np(t, NULL, &ts);
	if (r == ETIMEDOUT)
		fail_msg("%s did not finish within %d s", what, secs);
	assert_int_equal(r, 0);
}

/* ---- a filesystem without a mount ---- */

static struct fs *fs_make(void)
{
	struct bm_config bc = {.path = img, .pool_bytes = 16 * MiB, .backend = BM_BACKEND_PLAIN};
	struct fs_config cfg = {.image = img, .pool_bytes = 8 * MiB, .backend = BM_BACKEND_PLAIN};
	struct bm *bm;
	struct fs *fs = NULL;

	assert_int_equal(bm_format(img, 64 * MiB, true), 0);
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, 0, 0), 0);
	assert_int_equal(bm_close(bm), 0);
	assert_int_equal(fs_mount(&cfg, &fs), 0);
	return fs;
}

/* ------------------------------------------------------------------ */
/* 1. An inode lock: its holder and its waiter                        */

#define INO_A 5678

static struct {
	struct fs *fs;
	int holder_tid, waiter_tid;
	bool held, go, waiter_in;
} in;

static void *inode_holder_fn(void *arg)
{
	in.holder_tid = (int)gettid();
	fs_ino_wrlock_txn(in.fs, INO_A);
	flag_set(&in.held);
	flag_wait(&in.go);
	fs_ino_unlock(in.fs, INO_A);
	return NULL;
}

static void *inode_waiter_fn(void *arg)
{
	in.waiter_tid = (int)gettid();
	flag_set(&in.waiter_in);
	fs_ino_rdlock(in.fs, INO_A);
	fs_ino_unlock(in.fs, INO_A);
	return NULL;
}

static void test_inode_holder_and_waiter(void **st)
{
	char l[512];
	pthread_t h, w;

	memset(&in, 0, sizeof(in));
	in.fs = fs_make();
	assert_int_equal(pthread_create(&h, NULL, inode_holder_fn, NULL), 0);
	flag_wait(&in.held);
	assert_int_equal(pthread_create(&w, NULL, inode_waiter_fn, NULL), 0);
	flag_wait(&in.waiter_in);

	dump_until(in.waiter_tid, "waits for inode 5678 lock", l, sizeof(l));
	assert_wait_time(l);
	assert_non_null(line_of(in.holder_tid, l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2, "holds txn(read), inode 5678(write)");

	flag_set(&in.go);
	join_within(h, 10, "the holder");
	join_within(w, 10, "the waiter");
	/* Both gone from the table: nothing held, nothing awaited. */
	dump();
	assert_null(line_of(in.holder_tid, l, sizeof(l)));
	assert_null(line_of(in.waiter_tid, l, sizeof(l)));
	assert_int_equal(fs_unmount(in.fs), 0);
}

/* ------------------------------------------------------------------ */
/* 2. rename_mu                                                       */

static struct {
	struct fs *fs;
	uint64_t d1, d2;
	int tid, r;
	bool in;
} rn;

static void *rename_fn(void *arg)
{
	rn.tid = (int)gettid();
	flag_set(&rn.in);
	rn.r = fs_rename(rn.fs, rn.d1, "f", rn.d2, "g", 0);
	return NULL;
}

static uint64_t mk(struct fs *fs, uint64_t parent, const char *name, mode_t mode)
{
	static const struct fs_cred root = {0, 0};
	struct stat st;
	assert_int_equal(fs_mknod(fs, &root, parent, name, mode, 0, &st), 0);
	return st.st_ino;
}

static void test_rename_waiter(void **st)
{
	char l[512];
	pthread_t t;

	memset(&rn, 0, sizeof(rn));
	rn.fs = fs_make();
	rn.d1 = mk(rn.fs, FS_INO_ROOT, "d1", S_IFDIR | 0755);
	rn.d2 = mk(rn.fs, FS_INO_ROOT, "d2", S_IFDIR | 0755);
	mk(rn.fs, rn.d1, "f", S_IFREG | 0644);

	/* This thread stands for another rename: it holds rename_mu, taken
	 * as fs_rename takes it. */
	lo_acquire(LO_RENAME, 0, true);
	pthread_mutex_lock(&rn.fs->rename_mu);
	assert_int_equal(pthread_create(&t, NULL, rename_fn, NULL), 0);
	flag_wait(&rn.in);
	dump_until(rn.tid, "holds txn(read); waits for rename_mu", l, sizeof(l));
	assert_wait_time(l);
	assert_non_null(line_of((int)gettid(), l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2, "holds rename_mu");

	pthread_mutex_unlock(&rn.fs->rename_mu);
	lo_release(LO_RENAME, 0);
	join_within(t, 10, "the rename");
	assert_int_equal(rn.r, 0);
	dump();
	assert_null(line_of(rn.tid, l, sizeof(l)));
	assert_null(line_of((int)gettid(), l, sizeof(l)));
	assert_int_equal(fs_unmount(rn.fs), 0);
}

/* ------------------------------------------------------------------ */
/* 3. A checkpoint, and who waits for it                              */

static struct {
	struct bm *bm;
	int ckpt_tid, txn_tid, ckpt2_tid;
	bool taken, go, txn_in, ckpt2_in;
	int r1, r2;
} ck;

static void on_ckpt_taken(struct bm_fault *f)
{
	if (ck.taken)
		return; /* only the first checkpoint is held */
	flag_set(&ck.taken);
	flag_wait(&ck.go);
}

static void *ckpt_fn(void *arg)
{
	ck.ckpt_tid = (int)gettid();
	ck.r1 = bm_checkpoint(ck.bm);
	return NULL;
}

static void *txn_fn(void *arg)
{
	ck.txn_tid = (int)gettid();
	flag_set(&ck.txn_in);
	bm_txn_begin(ck.bm);
	bm_txn_end(ck.bm);
	return NULL;
}

static void *ckpt2_fn(void *arg)
{
	ck.ckpt2_tid = (int)gettid();
	flag_set(&ck.ckpt2_in);
	ck.r2 = bm_checkpoint(ck.bm);
	return NULL;
}

static struct bm *jopen(struct bm_fault *f, uint64_t pool)
{
	struct bm *bm = NULL;
	struct bm_config cfg = {.path = img,
				.pool_bytes = pool,
				.journal = true,
				.checkpoint_ms = 3600 * 1000,
				.fault = f};
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

static void test_checkpoint_waiters(void **st)
{
	struct bm_fault f;
	char l[512];
	pthread_t c, t, c2;
	uint64_t p;

	memset(&ck, 0, sizeof(ck));
	bm_fault_init(&f);
	assert_int_equal(bm_format(img, 16 * MiB, true), 0);
	ck.bm = jopen(&f, 4 * MiB);
	bm_txn_begin(ck.bm);
	assert_int_equal(bm_alloc(ck.bm, 1, BM_PID_NONE, &p), 0);
	assert_int_equal(vt_page_set(ck.bm, p, 7), 0);
	bm_txn_end(ck.bm);
	f.on_ckpt_taken = on_ckpt_taken;

	assert_int_equal(pthread_create(&c, NULL, ckpt_fn, NULL), 0);
	flag_wait(&ck.taken);
	assert_int_equal(pthread_create(&t, NULL, txn_fn, NULL), 0);
	flag_wait(&ck.txn_in);
	assert_int_equal(pthread_create(&c2, NULL, ckpt2_fn, NULL), 0);
	flag_wait(&ck.ckpt2_in);

	dump_until(ck.txn_tid, "waits for the transaction lock (a checkpoint holds it)", l,
		   sizeof(l));
	assert_wait_time(l);
	dump_until(ck.ckpt2_tid, "waits for a checkpoint another thread runs", l, sizeof(l));
	assert_wait_time(l);
	assert_non_null(line_of(ck.ckpt_tid, l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2, "holds checkpoint, txn(write)");

	flag_set(&ck.go);
	join_within(c, 20, "the checkpoint");
	join_within(t, 20, "the transaction");
	join_within(c2, 20, "the second checkpoint");
	f.on_ckpt_taken = NULL;
	assert_int_equal(ck.r1, 0);
	assert_int_equal(ck.r2, 0);
	dump();
	assert_null(line_of(ck.ckpt_tid, l, sizeof(l)));
	assert_null(line_of(ck.txn_tid, l, sizeof(l)));
	assert_null(line_of(ck.ckpt2_tid, l, sizeof(l)));
	assert_int_equal(bm_close(ck.bm), 0);
	bm_fault_fini(&f);
}

/* ------------------------------------------------------------------ */
/* 4. Journal room                                                    */

static struct {
	struct bm *bm;
	int holder_tid[2], waiter_tid;
	bool begun[2], go, waiter_in;
} rm;

static void *room_holder_fn(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	rm.holder_tid[k] = (int)gettid();
	bm_txn_begin(rm.bm);
	flag_set(&rm.begun[k]);
	flag_wait(&rm.go);
	bm_txn_end(rm.bm);
	return NULL;
}

static void *room_waiter_fn(void *arg)
{
	rm.waiter_tid = (int)gettid();
	flag_set(&rm.waiter_in);
	bm_txn_begin(rm.bm);
	bm_txn_end(rm.bm);
	return NULL;
}

static void test_room_waiter(void **st)
{
	char l[512];
	pthread_t h[2], w;

	/* A 4 MiB pool: the journal room is at most five eighths of its 1024
	 * pages, and each transaction holds BM_TXN_PAGES (320): two fill it. */
	memset(&rm, 0, sizeof(rm));
	assert_int_equal(bm_format(img, 64 * MiB, true), 0);
	rm.bm = jopen(NULL, 4 * MiB);
	for (uintptr_t k = 0; k < 2; k++) {
		assert_int_equal(pthread_create(&h[k], NULL, room_holder_fn, (void *)k), 0);
		flag_wait(&rm.begun[k]);
	}
	assert_int_equal(pthread_create(&w, NULL, room_waiter_fn, NULL), 0);
	flag_wait(&rm.waiter_in);

	dump_until(rm.waiter_tid, "waits for journal room", l, sizeof(l));
	assert_wait_time(l);
	for (int k = 0; k < 2; k++) {
		assert_non_null(line_of(rm.holder_tid[k], l, sizeof(l)));
		assert_string_equal(strchr(l, ':') + 2, "holds txn(read)");
	}

	flag_set(&rm.go);
	for (int k = 0; k < 2; k++)
		join_within(h[k], 20, "a transaction");
	join_within(w, 20, "the waiting transaction");
	dump();
	assert_null(line_of(rm.waiter_tid, l, sizeof(l)));
	assert_int_equal(bm_close(rm.bm), 0);
}

/* ------------------------------------------------------------------ */
/* 5. Inode locks released out of order                               */

static void test_inode_release_order(void **st)
{
	char l[512];
	int me = (int)gettid();

	lo_acquire(LO_INODE, 11, false);
	lo_acquire(LO_INODE, 22, true);
	lo_acquire(LO_INODE, 33, false);
	lo_acquire(LO_INODE, 44, true);
	dump();
	assert_non_null(line_of(me, l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2,
			    "holds inode 11(read), inode 22(write), inode 33(read), inode 44(write)");
	lo_release(LO_INODE, 22);
	dump();
	assert_non_null(line_of(me, l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2,
			    "holds inode 11(read), inode 33(read), inode 44(write)");
	lo_release(LO_INODE, 0); /* the last taken: 44 */
	lo_release(LO_INODE, 11);
	dump();
	assert_non_null(line_of(me, l, sizeof(l)));
	assert_string_equal(strchr(l, ':') + 2, "holds inode 33(read)");
	lo_release(LO_INODE, 33);
	dump();
	assert_null(line_of(me, l, sizeof(l)));
}

/* ------------------------------------------------------------------ */
/* 6. SIGUSR2                                                         */

static void test_sigusr2_dumps(void **st)
{
	char buf[8192], want[128];
	struct fs *fs = fs_make(); /* fs_mount installs the handler */
	sigset_t cur;

	/* The dump's own thread takes the signal; this one keeps it blocked,
	 * so that it never interrupts a wait of the daemon's workers. */
	assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
	assert_true(sigismember(&cur, SIGUSR2));

	fs_ino_rdlock(fs, 4242);
	assert_int_equal(kill(getpid(), SIGUSR2), 0);
	snprintf(want, sizeof(want), "tid %d: holds inode 4242(read)\n", (int)gettid());
	ssize_t n = 0;
	for (int i = 0; i < 500; i++) {
		int fd = open(dumpfile, O_RDONLY);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : 0;
		if (fd >= 0)
			close(fd);
		buf[n > 0 ? n : 0] = 0;
		if (strstr(buf, "end of lock-holder table\n"))
			break;
		usleep(10 * 1000);
	}
	fs_ino_unlock(fs, 4242);
	assert_non_null(strstr(buf, "lock-holder table of pid "));
	if (!strstr(buf, want))
		fail_msg("no \"%s\" in %s:\n%s", want, dumpfile, buf);
	assert_int_equal(fs_unmount(fs), 0);
	unlink(dumpfile);
}

int main(void)
{
	/* Read once, when the first fs_mount installs the SIGUSR2 handler. */
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dumpfile, sizeof(dumpfile), "%s/test_lockorder.%d", tmp, (int)getpid());
	unlink(dumpfile);
	setenv("VS_LOCKDUMP", dumpfile, 1);

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_inode_holder_and_waiter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_waiter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_waiters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_room_waiter, setup, teardown),
	    cmocka_unit_test(test_inode_release_order),
	    cmocka_unit_test_setup_teardown(test_sigusr2_dumps, setup, teardown),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(dumpfile);
	return r;
}
