/* The buffer manager: open/close, guards, restarts, eviction, checksums, space. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/bm.h"
#include "vt_bm.h"

static char img[256];

static int setup(void **st)
{
	return vt_tmp_image(img, sizeof(img), "bm");
}

static int teardown(void **st)
{
	unlink(img);
	return 0;
}

/* On the backend VS_TEST_BACKEND names (tests/lib/vt_bm.h; madvise by
 * default, exmap in the VM test). */
static struct bm *open_pool(uint64_t pool_bytes)
{
	struct bm *bm = NULL;
	struct bm_config cfg = { .path = img, .pool_bytes = pool_bytes };
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	return bm;
}

static struct bm *fresh_pool(uint64_t image_bytes, uint64_t pool_bytes)
{
	assert_int_equal(bm_format(img, image_bytes, true), 0);
	return open_pool(pool_bytes);
}

/* ------------------------------------------------------------------ */

static void test_parse_size(void **st)
{
	uint64_t v;
	assert_int_equal(bm_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(bm_parse_size("64M", &v), 0);
	assert_int_equal(v, 64u << 20);
	assert_int_equal(bm_parse_size("0.25GiB", &v), 0);
	assert_int_equal(v, 256u << 20);
	assert_int_equal(bm_parse_size("1.5g", &v), 0);
	assert_int_equal(v, 3u << 29);
	assert_int_equal(bm_parse_size("2T", &v), 0);
	assert_int_equal(v, UINT64_C(2) << 40);
	assert_int_equal(bm_parse_size("", &v), -EINVAL);
	assert_int_equal(bm_parse_size("12Q", &v), -EINVAL);
	assert_int_equal(bm_parse_size("-1G", &v), -EINVAL);
	assert_int_equal(bm_parse_size("G", &v), -EINVAL);
	assert_int_equal(bm_parse_size("1e30T", &v), -EINVAL);
}

static void test_open_errors(void **st)
{
	struct bm *bm = NULL, *bm2 = NULL;
	struct bm_config cfg = { .path = img, .pool_bytes = 1 << 20, .backend = vt_bm_backend() };
	char junk[8192];

	/* not an image */
	memset(junk, 'x', sizeof(junk));
	int fd = open(img, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
	close(fd);
	assert_int_equal(bm_open(&cfg, &bm), -EUCLEAN);

	/* too small to format */
	assert_int_equal(bm_format(img, 16 * 4096, true), -EINVAL);

	/* formatted: refuses to format again without force */
	assert_int_equal(bm_format(img, 8 << 20, false), 0);
	assert_int_equal(bm_format(img, 8 << 20, false), -EEXIST);

	/* a second open of the same image is refused */
	assert_int_equal(bm_open(&cfg, &bm), 0);
	assert_int_equal(bm_open(&cfg, &bm2), -EBUSY);
	assert_int_equal(bm_close(bm), 0);

	/* a lock let go within BM_LOCK_WAIT_MS (a daemon killed a moment ago
	 * whose rings the kernel still tears down) is waited for */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int lfd = open(img, O_RDWR);
		char c = 1;
		if (lfd < 0 || flock(lfd, LOCK_EX) < 0 || write(pfd[1], &c, 1) != 1)
			_exit(1);
		usleep(300 * 1000);
		_exit(0);
	}
	char c;
	assert_int_equal(read(pfd[0], &c, 1), 1); /* the child holds the lock */
	close(pfd[0]);
	close(pfd[1]);
	assert_int_equal(bm_open(&cfg, &bm), 0);
	assert_int_equal(bm_close(bm), 0);
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* an unknown format version */
	fd = open(img, O_RDWR);
	uint32_t v = 99;
	assert_int_equal(pwrite(fd, &v, 4, 8), 4);
	close(fd);
	assert_int_equal(bm_open(&cfg, &bm), -EPROTONOSUPPORT);

	/* a damaged superblock */
	assert_int_equal(bm_format(img, 8 << 20, true), 0);
	fd = open(img, O_RDWR);
	uint64_t pages = 12345;
	assert_int_equal(pwrite(fd, &pages, 8, 16), 8);
	close(fd);
	assert_int_equal(bm_open(&cfg, &bm), -EUCLEAN);

	/* no such file */
	cfg.path = "/nonexistent/vs.img";
	assert_int_equal(bm_open(&cfg, &bm), -ENOENT);
}

static void test_sb_slots_and_clean_flag(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	assert_true(bm_was_clean(bm));
	bm_sb_set(bm, 3, 0xfeedface);
	bm_sb_set(bm, BM_SB_SLOTS - 1, 42);
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(1 << 20);
	assert_int_equal(bm_sb_get(bm, 3), 0xfeedface);
	assert_int_equal(bm_sb_get(bm, BM_SB_SLOTS - 1), 42);
	assert_int_equal(bm_sb_get(bm, 0), 0);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* Guards                                                             */

struct pidarg {
	uint64_t pid;
	uint64_t value;
	int phase;
	unsigned runs;
};

static int op_write_u64(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	uint64_t *p = bm_fix_x(op, a->pid, &g);
	p[0] = a->value;
	bm_unfix(op, &g);
	return 0;
}

static int op_read_u64_s(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	const uint64_t *p = bm_fix_s(op, a->pid, &g);
	a->value = p[0];
	bm_unfix(op, &g);
	return 0;
}

/* O read; on the first run a nested writer changes the page between the
 * read and the check, so the check must restart the operation. */
static int op_read_o_conflict(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	a->runs++;
	const uint64_t *p = bm_fix_o(op, a->pid, &g);
	uint64_t v = p[0];
	if (a->runs == 1) {
		struct pidarg w = { .pid = a->pid, .value = 777 };
		bm_run(op->bm, op_write_u64, &w);
	}
	bm_check(op, &g);
	a->value = v;
	return 0;
}

static void test_optimistic_conflict_restarts(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t pid;
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &pid), 0);
	struct pidarg a = { .pid = pid, .value = 5 };
	assert_int_equal(bm_run(bm, op_write_u64, &a), 0);
	struct pidarg r = { .pid = pid };
	assert_int_equal(bm_run(bm, op_read_o_conflict, &r), 0);
	assert_int_equal(r.runs, 2);
	assert_int_equal(r.value, 777); /* the value seen by the validated run */
	struct bm_stats s;
	bm_stats_get(bm, &s);
	assert_true(s.restarts >= 1);
	assert_int_equal(bm_close(bm), 0);
}

/* O -> X upgrade: succeeds when nothing changed, restarts when it did. */
static int op_upgrade(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	a->runs++;
	bm_fix_o(op, a->pid, &g);
	if (a->phase == 1 && a->runs == 1) {
		struct pidarg w = { .pid = a->pid, .value = 1 };
		bm_run(op->bm, op_write_u64, &w);
	}
	bm_upgrade_x(op, &g);
	((uint64_t *)g.page)[0] += 10;
	bm_unfix(op, &g);
	return 0;
}

static void test_upgrades(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t pid;
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &pid), 0);
	struct pidarg a = { .pid = pid };
	assert_int_equal(bm_run(bm, op_upgrade, &a), 0);
	assert_int_equal(a.runs, 1);
	struct pidarg r = { .pid = pid };
	bm_run(bm, op_read_u64_s, &r);
	assert_int_equal(r.value, 10);

	struct pidarg b = { .pid = pid, .phase = 1 };
	assert_int_equal(bm_run(bm, op_upgrade, &b), 0);
	assert_int_equal(b.runs, 2);
	bm_run(bm, op_read_u64_s, &r);
	assert_int_equal(r.value, 11); /* 1 written by the interloper, +10 */
	assert_int_equal(bm_close(bm), 0);
}

static int op_upgrade_s(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	bm_fix_o(op, a->pid, &g);
	bm_upgrade_s(op, &g);
	a->value = ((const uint64_t *)g.page)[0];
	bm_unfix(op, &g);
	return 0;
}

static int op_fail_holding(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g1, g2;
	bm_fix_x(op, a->pid, &g1);
	bm_fix_s(op, a->pid + 1, &g2);
	bm_fail(op, -ENOSPC);
}

static void test_fail_releases_guards(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t pid;
	assert_int_equal(bm_alloc(bm, 2, BM_PID_NONE, &pid), 0);
	struct pidarg a = { .pid = pid, .value = 3 };
	assert_int_equal(bm_run(bm, op_fail_holding, &a), -ENOSPC);
	/* both pages are free again: X on each succeeds at once */
	assert_int_equal(bm_run(bm, op_write_u64, &a), 0);
	a.pid = pid + 1;
	assert_int_equal(bm_run(bm, op_write_u64, &a), 0);
	struct pidarg r = { .pid = pid + 1 };
	assert_int_equal(bm_run(bm, op_upgrade_s, &r), 0);
	assert_int_equal(r.value, 3);
	assert_int_equal(bm_close(bm), 0);
}

struct holder {
	struct bm *bm;
	uint64_t pid;
	_Atomic int state; /* 1 = holding, 2 = released */
};

static int op_hold_s(struct bm_op *op, void *arg)
{
	struct holder *h = arg;
	struct bm_guard g;
	bm_fix_s(op, h->pid, &g);
	atomic_store(&h->state, 1);
	usleep(50 * 1000);
	atomic_store(&h->state, 2);
	bm_unfix(op, &g);
	return 0;
}

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	bm_run(h->bm, op_hold_s, h);
	return NULL;
}

static void test_exclusive_waits_for_shared(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t pid;
	pthread_t th;
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &pid), 0);
	struct holder h = { .bm = bm, .pid = pid };
	pthread_create(&th, NULL, holder_main, &h);
	while (atomic_load(&h.state) == 0)
		usleep(100);
	struct pidarg a = { .pid = pid, .value = 9 };
	assert_int_equal(bm_run(bm, op_write_u64, &a), 0);
	assert_int_equal(atomic_load(&h.state), 2); /* X came after S let go */
	pthread_join(th, NULL);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* SIGSEGV restart                                                    */

static void *evict_all_main(void *arg)
{
	bm_evict_all(arg, true);
	return NULL;
}

/* The pool is on exmap (set by test_segv_restart). */
static bool segv_by_eviction;

/* The page faults under the operation's optimistic guard @phase times. With
 * madvise the test makes it inaccessible with mprotect; exmap's region
 * cannot be split by mprotect, so there another thread evicts the page for
 * real and the touch lands on an unmapped page of /dev/exmap. */
static int op_touch_protected(struct bm_op *op, void *arg)
{
	struct pidarg *a = arg;
	struct bm_guard g;
	a->runs++;
	const volatile uint64_t *p = bm_fix_o(op, a->pid, &g);
	if (segv_by_eviction) {
		if (op->restarts < (unsigned)a->phase) {
			pthread_t th;
			pthread_create(&th, NULL, evict_all_main, op->bm);
			pthread_join(th, NULL);
		}
	} else if (op->restarts == (unsigned)a->phase) { /* fixed after this many faults */
		mprotect((void *)g.page, 4096, PROT_READ | PROT_WRITE);
	}
	a->value = p[0]; /* faults while the page is inaccessible */
	bm_check(op, &g);
	return 0;
}

static void test_segv_restart(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t pid;
	struct bm_stats s;
	sigset_t mask;
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &pid), 0);
	struct pidarg w = { .pid = pid, .value = 4242 };
	bm_run(bm, op_write_u64, &w);
	bm_stats_get(bm, &s);
	segv_by_eviction = strcmp(s.backend, "exmap") == 0;

	for (int faults = 1; faults <= 3; faults++) {
		if (!segv_by_eviction)
			mprotect(bm_page(bm, pid), 4096, PROT_NONE);
		struct pidarg a = { .pid = pid, .phase = faults };
		assert_int_equal(bm_run(bm, op_touch_protected, &a), 0);
		assert_int_equal(a.runs, faults + 1);
		assert_int_equal(a.value, 4242);
		/* leaving the handler by siglongjmp left SIGSEGV unblocked */
		sigprocmask(SIG_BLOCK, NULL, &mask);
		assert_false(sigismember(&mask, SIGSEGV));
	}
	bm_stats_get(bm, &s);
	print_message("segv restarts: %llu on %s (expected 6)\n",
		      (unsigned long long)s.segv_restarts, s.backend);
	assert_int_equal(s.segv_restarts, 1 + 2 + 3);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* Eviction, reload, checksums                                        */

struct fill {
	uint64_t first, n, seed;
	uint64_t bad;
};

static uint64_t pattern(uint64_t pid, uint64_t seed, unsigned i)
{
	uint64_t x = pid * 0x9E3779B97F4A7C15ull ^ seed ^ ((uint64_t)i << 32);
	x ^= x >> 29;
	return x * 0xBF58476D1CE4E5B9ull;
}

static int op_fill(struct bm_op *op, void *arg)
{
	struct fill *f = arg;
	for (uint64_t p = f->first; p < f->first + f->n; p++) {
		struct bm_guard g;
		uint64_t *d = bm_fix_x_new(op, p, &g);
		for (unsigned i = 0; i < 512; i++)
			d[i] = pattern(p, f->seed, i);
		bm_unfix(op, &g);
	}
	return 0;
}

static int op_verify(struct bm_op *op, void *arg)
{
	struct fill *f = arg;
	f->bad = 0;
	for (uint64_t p = f->first; p < f->first + f->n; p++) {
		struct bm_guard g;
		const uint64_t *d = bm_fix_s(op, p, &g);
		for (unsigned i = 0; i < 512; i++)
			if (d[i] != pattern(p, f->seed, i)) {
				f->bad++;
				break;
			}
		bm_unfix(op, &g);
	}
	return 0;
}

static void test_evict_reload_keeps_bytes(void **st)
{
	/* 2048 data pages through a pool of 256 frames: 1/8 of the data. */
	struct bm *bm = fresh_pool(16 << 20, 256 * 4096);
	struct fill f = { .n = 2048, .seed = 1 };
	struct bm_stats s;
	assert_int_equal(bm_alloc(bm, f.n, BM_PID_NONE, &f.first), 0);
	assert_int_equal(bm_run(bm, op_fill, &f), 0);
	bm_stats_get(bm, &s);
	assert_true(s.resident_pages <= s.capacity_pages);
	assert_int_equal(s.capacity_pages, 256);
	assert_true(s.evictions >= 2048 - 256);
	assert_true(s.writebacks >= 2048 - 256);
	assert_int_equal(bm_run(bm, op_verify, &f), 0);
	assert_int_equal(f.bad, 0);
	bm_stats_get(bm, &s);
	assert_true(s.loads >= 2048 - 256);
	assert_true(s.resident_pages <= 256);
	assert_int_equal(s.csum_errors, 0);
	assert_int_equal(bm_close(bm), 0);

	bm = open_pool(256 * 4096);
	assert_int_equal(bm_run(bm, op_verify, &f), 0);
	assert_int_equal(f.bad, 0);
	assert_true(bm_is_allocated(bm, f.first + 100));
	/* evict everything; the frames really go back to the kernel (mincore
	 * sees none of them), and all of it comes back */
	assert_true(bm_evict_all(bm, true) > 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.resident_pages, 0);
	unsigned char vec[2048];
	assert_int_equal(mincore(bm_page(bm, f.first), f.n * 4096, vec), 0);
	for (unsigned i = 0; i < f.n; i++)
		assert_int_equal(vec[i] & 1, 0);
	assert_int_equal(bm_run(bm, op_verify, &f), 0);
	assert_int_equal(f.bad, 0);
	assert_int_equal(bm_close(bm), 0);
}

/* Open a fresh pool of 256 frames with write clustering @cluster, fill it
 * with dirty pages (consecutive pids), then load 64 more so that eviction
 * writes back. Returns the stats after that; the two fills are in @f. */
static struct bm *cluster_run(int cluster, struct fill f[2], struct bm_stats *s)
{
	struct bm *bm = NULL;
	struct bm_config cfg = { .path = img, .pool_bytes = 256 * 4096, .evict_cluster = cluster };
	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	f[0] = (struct fill){ .n = 256, .seed = 11 };
	f[1] = (struct fill){ .n = 64, .seed = 12 };
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bm_alloc(bm, f[i].n, BM_PID_NONE, &f[i].first), 0);
		assert_int_equal(bm_run(bm, op_fill, &f[i]), 0);
	}
	bm_stats_get(bm, s);
	return bm;
}

static void test_evict_clustering(void **st)
{
	struct fill f[2];
	struct bm_stats s;

	/* Without clustering only the victims are written: every page left
	 * in the pool is still dirty. */
	struct bm *bm = cluster_run(-1, f, &s);
	assert_true(s.evictions >= 64);
	assert_int_equal(s.cluster_writebacks, 0);
	assert_int_equal(s.writebacks, s.evictions);
	assert_int_equal(s.dirty_pages, s.resident_pages);
	assert_int_equal(bm_close(bm), 0);

	/* With it, the victims' marked dirty neighbours go out in the same
	 * batch and stay resident, clean. */
	bm = cluster_run(0, f, &s);
	assert_true(s.evictions >= 64);
	assert_true(s.cluster_writebacks > 0);
	assert_int_equal(s.writebacks, s.evictions + s.cluster_writebacks);
	assert_int_equal(s.dirty_pages, s.resident_pages - s.cluster_writebacks);
	assert_true(s.resident_pages <= s.capacity_pages);
	/* Every byte is there, in the pool and after a reopen (the neighbours'
	 * checksums were recorded with their writes). */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bm_run(bm, op_verify, &f[i]), 0);
		assert_int_equal(f[i].bad, 0);
	}
	/* The clean pages, neighbours written early among them, leave without
	 * a write and come back from the image intact. */
	assert_true(bm_evict_all(bm, false) > 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bm_run(bm, op_verify, &f[i]), 0);
		assert_int_equal(f[i].bad, 0);
	}
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(256 * 4096);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bm_run(bm, op_verify, &f[i]), 0);
		assert_int_equal(f[i].bad, 0);
	}
	bm_stats_get(bm, &s);
	assert_int_equal(s.csum_errors, 0);
	assert_int_equal(bm_close(bm), 0);
}

/* Fill 256 frames with clean pages, load 64 more, and count the runs of
 * consecutive pids among the pages that left the pool. */
static unsigned evicted_runs(int cluster, unsigned *ret_evicted)
{
	struct fill f[2] = { { .n = 256, .seed = 21 }, { .n = 64, .seed = 22 } };
	struct bm_config cfg = { .path = img, .pool_bytes = 256 * 4096, .evict_cluster = cluster };
	struct bm *bm = NULL;
	unsigned runs = 0, evicted = 0;

	assert_int_equal(bm_format(img, 16 << 20, true), 0);
	assert_int_equal(vt_bm_open(&cfg, &bm), 0);
	assert_int_equal(bm_alloc(bm, f[0].n, BM_PID_NONE, &f[0].first), 0);
	assert_int_equal(bm_run(bm, op_fill, &f[0]), 0);
	assert_int_equal(bm_flush(bm), 0);
	assert_int_equal(bm_alloc(bm, f[1].n, BM_PID_NONE, &f[1].first), 0);
	assert_int_equal(bm_run(bm, op_fill, &f[1]), 0);
	for (uint64_t i = 0; i < f[0].n; i++) {
		bool out = !bm_is_resident(bm, f[0].first + i);
		evicted += out;
		runs += out && (i == 0 || bm_is_resident(bm, f[0].first + i - 1));
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(bm_run(bm, op_verify, &f[i]), 0);
		assert_int_equal(f[i].bad, 0);
	}
	assert_int_equal(bm_close(bm), 0);
	*ret_evicted = evicted;
	return runs;
}

static void test_drop_clustering(void **st)
{
	/* Clean victims take their marked clean neighbours along: the pages
	 * that leave form a few runs (one backend call each), not one
	 * scattered page per call as the clock's hash order would give. */
	unsigned evicted, runs = evicted_runs(0, &evicted);
	assert_true(evicted >= 64);
	assert_true(runs <= evicted / 16);
	runs = evicted_runs(-1, &evicted);
	assert_true(evicted >= 64);
	assert_true(runs > evicted / 4);
}

static void test_flush_cleans(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	struct fill f = { .n = 100, .seed = 5 };
	struct bm_stats s;
	assert_int_equal(bm_alloc(bm, f.n, BM_PID_NONE, &f.first), 0);
	bm_run(bm, op_fill, &f);
	bm_stats_get(bm, &s);
	assert_int_equal(s.dirty_pages, 100);
	assert_int_equal(bm_flush(bm), 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.dirty_pages, 0);
	assert_int_equal(s.writebacks, 100);
	assert_int_equal(s.resident_pages, 100);
	assert_int_equal(bm_close(bm), 0);
}

static void test_corrupt_page_detected(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	struct fill f = { .n = 10, .seed = 7 };
	struct bm_stats s;
	assert_int_equal(bm_alloc(bm, f.n, BM_PID_NONE, &f.first), 0);
	bm_run(bm, op_fill, &f);
	assert_int_equal(bm_close(bm), 0);

	/* flip one byte of the fourth page on disk */
	int fd = open(img, O_RDWR);
	uint8_t b;
	off_t off = (off_t)(f.first + 3) * 4096 + 1000;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);

	bm = open_pool(1 << 20);
	struct pidarg a = { .pid = f.first + 3 };
	assert_int_equal(bm_run(bm, op_read_u64_s, &a), -EUCLEAN);
	assert_false(bm_is_resident(bm, f.first + 3)); /* bad bytes never handed out */
	assert_int_equal(bm_run(bm, op_read_u64_s, &a), -EUCLEAN); /* and stays so */
	struct fill ok = { .first = f.first, .n = 3, .seed = 7 };
	assert_int_equal(bm_run(bm, op_verify, &ok), 0); /* the others are fine */
	assert_int_equal(ok.bad, 0);
	bm_stats_get(bm, &s);
	assert_int_equal(s.csum_errors, 2);
	/* rewriting the page in full repairs it */
	struct fill fix = { .first = f.first + 3, .n = 1, .seed = 7 };
	assert_int_equal(bm_run(bm, op_fill, &fix), 0);
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(1 << 20);
	assert_int_equal(bm_run(bm, op_verify, &f), 0);
	assert_int_equal(f.bad, 0);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* Space                                                              */

/* bm_read_through: evicted pages come from the image, checked, and stay
 * out of the pool; resident ones are left to the caller; a never-written
 * page reads as zeros; a corrupt one fails with -EUCLEAN and is counted. */
static void test_read_through(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	struct fill f = { .n = 12, .seed = 11 };
	struct bm_stats s0, s1;
	uint64_t pids[16], blank;
	bool got[16];
	uint8_t *buf = NULL;

	assert_int_equal(bm_alloc(bm, f.n, BM_PID_NONE, &f.first), 0);
	assert_int_equal(bm_run(bm, op_fill, &f), 0);
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &blank), 0); /* never written */
	assert_int_equal(bm_flush(bm), 0);
	bm_evict_all(bm, false);
	struct fill one = { .first = f.first + 5, .n = 1, .seed = 11 };
	assert_int_equal(bm_run(bm, op_verify, &one), 0); /* page 5 resident again */
	assert_true(bm_is_resident(bm, f.first + 5));

	unsigned n = 0;
	for (uint64_t i = 0; i < f.n; i++)
		pids[n++] = f.first + i;
	pids[n++] = blank;
	pids[n++] = BM_PID_NONE; /* a hole: not the engine's */
	assert_int_equal(posix_memalign((void **)&buf, 4096, n * 4096), 0);
	bm_stats_get(bm, &s0);
	assert_int_equal(bm_read_through(bm, pids, n, buf, got), 0);
	bm_stats_get(bm, &s1);
	for (unsigned k = 0; k < f.n; k++) {
		assert_int_equal(got[k], k != 5);
		assert_false(k != 5 && bm_is_resident(bm, pids[k])); /* not loaded */
		if (!got[k])
			continue;
		const uint64_t *d = (const uint64_t *)(buf + (size_t)k * 4096);
		for (unsigned i = 0; i < 512; i++)
			assert_int_equal(d[i], pattern(pids[k], 11, i));
	}
	assert_true(got[f.n]);
	for (unsigned i = 0; i < 4096; i++)
		assert_int_equal(buf[(size_t)f.n * 4096 + i], 0);
	assert_false(got[f.n + 1]);
	assert_int_equal(s1.read_through - s0.read_through, f.n); /* 11 + the blank */
	assert_int_equal(s1.loads - s0.loads, f.n - 1);           /* the blank: no read */
	assert_int_equal(s1.resident_pages, s0.resident_pages);
	assert_int_equal(bm_close(bm), 0);

	/* flip a byte of page 2 on disk */
	int fd = open(img, O_RDWR);
	uint8_t b;
	off_t off = (off_t)(f.first + 2) * 4096 + 77;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x01;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
	bm = open_pool(1 << 20);
	assert_int_equal(bm_read_through(bm, pids, 4, buf, got), -EUCLEAN);
	bm_stats_get(bm, &s1);
	assert_int_equal(s1.csum_errors, 1);
	assert_int_equal(bm_close(bm), 0);
	free(buf);
}

/* bm_write_through: never-written, evicted pages go home with their
 * checksums and stay out of the pool; a page written before or resident is
 * left to the caller; they read back right after a reopen. */
static void test_write_through(void **st)
{
	struct bm *bm = fresh_pool(8 << 20, 1 << 20);
	uint64_t first, pids[8];
	bool done[8];
	uint8_t *buf = NULL;
	struct bm_stats s0, s1;

	assert_int_equal(bm_alloc(bm, 8, BM_PID_NONE, &first), 0);
	struct fill pre = { .first = first + 6, .n = 2, .seed = 5 }; /* written: left */
	assert_int_equal(bm_run(bm, op_fill, &pre), 0);
	assert_int_equal(posix_memalign((void **)&buf, 4096, 8 * 4096), 0);
	for (unsigned k = 0; k < 8; k++) {
		pids[k] = first + k;
		uint64_t *d = (uint64_t *)(buf + (size_t)k * 4096);
		for (unsigned i = 0; i < 512; i++)
			d[i] = pattern(pids[k], 9, i);
	}
	bm_stats_get(bm, &s0);
	assert_int_equal(bm_write_through(bm, pids, 8, buf, done), 0);
	bm_stats_get(bm, &s1);
	for (unsigned k = 0; k < 8; k++) {
		assert_int_equal(done[k], k < 6);
		if (k < 6)
			assert_false(bm_is_resident(bm, pids[k]));
	}
	assert_int_equal(s1.write_through - s0.write_through, 6);
	assert_int_equal(s1.resident_pages, s0.resident_pages);
	/* a second time: they have checksums now, so they are left */
	assert_int_equal(bm_write_through(bm, pids, 2, buf, done), 0);
	assert_false(done[0] || done[1]);
	struct fill got = { .first = first, .n = 6, .seed = 9 };
	assert_int_equal(bm_run(bm, op_verify, &got), 0);
	assert_int_equal(got.bad, 0);
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(1 << 20);
	assert_int_equal(bm_run(bm, op_verify, &got), 0);
	assert_int_equal(got.bad, 0);
	struct fill kept = { .first = first + 6, .n = 2, .seed = 5 };
	assert_int_equal(bm_run(bm, op_verify, &kept), 0);
	assert_int_equal(kept.bad, 0);
	assert_int_equal(bm_close(bm), 0);
	free(buf);
}

static void test_alloc_free_reuse_persist(void **st)
{
	struct bm *bm = fresh_pool(4 << 20, 1 << 20); /* 1024 pages */
	struct bm_stats s0, s;
	uint64_t a, b, c;
	bm_stats_get(bm, &s0);
	assert_int_equal(s0.free_pages, 1024 - bm_first_data_pid(bm));
	assert_int_equal(bm_alloc(bm, s0.free_pages + 1, BM_PID_NONE, &a), -ENOSPC);
	assert_int_equal(bm_alloc(bm, 0, BM_PID_NONE, &a), -EINVAL);
	/* A floor keeps its pages for threads without one. */
	assert_int_equal(bm_alloc_floor(bm, 10), 0);
	assert_int_equal(bm_alloc(bm, s0.free_pages - 9, BM_PID_NONE, &a), -ENOSPC);
	assert_int_equal(bm_alloc(bm, s0.free_pages - 10, BM_PID_NONE, &a), 0);
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &b), -ENOSPC);
	assert_int_equal(bm_alloc_floor(bm, 0), 10);
	bm_free(bm, a, s0.free_pages - 10);
	assert_int_equal(bm_alloc(bm, s0.free_pages, BM_PID_NONE, &a), 0);
	assert_int_equal(a, bm_first_data_pid(bm));
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &b), -ENOSPC);

	/* write a page, free a run around it, and get the same pages back */
	struct fill f = { .first = a + 10, .n = 1, .seed = 3 };
	bm_run(bm, op_fill, &f);
	bm_free(bm, a + 8, 4);
	bm_stats_get(bm, &s);
	assert_int_equal(s.free_pages, 4);
	assert_false(bm_is_allocated(bm, a + 10));
	assert_int_equal(bm_alloc(bm, 4, BM_PID_NONE, &c), 0);
	assert_int_equal(c, a + 8);
	/* the reused page reads as zeros, not as its old contents */
	struct pidarg r = { .pid = a + 10 };
	bm_run(bm, op_read_u64_s, &r);
	assert_int_equal(r.value, 0);

	bm_free(bm, a + 100, 50);
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(1 << 20);
	bm_stats_get(bm, &s);
	assert_int_equal(s.free_pages, 50);
	assert_false(bm_is_allocated(bm, a + 120));
	assert_true(bm_is_allocated(bm, a + 99));
	/* a 51-page run does not exist, a 50-page one does */
	assert_int_equal(bm_alloc(bm, 51, BM_PID_NONE, &b), -ENOSPC);
	assert_int_equal(bm_alloc(bm, 50, BM_PID_NONE, &b), 0);
	assert_int_equal(b, a + 100);
	assert_int_equal(bm_close(bm), 0);
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */

#define NTHREADS 4
#define NCOUNTERS 512

struct worker {
	struct bm *bm;
	uint64_t first;
	unsigned seed;
	unsigned iters;
};

struct incr {
	uint64_t pid;
	unsigned slot;
};

static int op_incr(struct bm_op *op, void *arg)
{
	struct incr *in = arg;
	struct bm_guard g;
	/* read optimistically, then upgrade to write: the common pattern */
	const uint64_t *p = bm_fix_o(op, in->pid, &g);
	uint64_t v = p[in->slot];
	bm_upgrade_x(op, &g);
	((uint64_t *)g.page)[in->slot] = v + 1;
	bm_unfix(op, &g);
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (unsigned i = 0; i < w->iters; i++) {
		w->seed = w->seed * 1103515245u + 12345u;
		struct incr in = { .pid = w->first + (w->seed >> 8) % NCOUNTERS,
				   .slot = (w->seed >> 20) % 4 };
		bm_run(w->bm, op_incr, &in);
	}
	return NULL;
}

struct sum {
	uint64_t first, total;
};

static int op_sum(struct bm_op *op, void *arg)
{
	struct sum *s = arg;
	s->total = 0;
	for (uint64_t p = s->first; p < s->first + NCOUNTERS; p++) {
		struct bm_guard g;
		const uint64_t *d = bm_fix_s(op, p, &g);
		for (unsigned i = 0; i < 4; i++)
			s->total += d[i];
		bm_unfix(op, &g);
	}
	return 0;
}

static void test_threads_under_eviction(void **st)
{
	/* 512 hot pages through 128 frames: every thread evicts constantly */
	struct bm *bm = fresh_pool(8 << 20, 128 * 4096);
	struct worker w[NTHREADS];
	pthread_t th[NTHREADS];
	uint64_t first;
	unsigned iters = (unsigned)vt_test_scaled(20000, 1000);
	assert_int_equal(bm_alloc(bm, NCOUNTERS, BM_PID_NONE, &first), 0);
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .bm = bm, .first = first, .seed = 17u + (unsigned)i,
					.iters = iters };
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	struct sum s = { .first = first };
	bm_run(bm, op_sum, &s);
	assert_int_equal(s.total, (uint64_t)NTHREADS * iters);
	struct bm_stats stats;
	bm_stats_get(bm, &stats);
	assert_true(stats.evictions > 0);
	assert_true(stats.resident_pages <= 128);
	assert_int_equal(bm_close(bm), 0);
	bm = open_pool(128 * 4096);
	bm_run(bm, op_sum, &s);
	assert_int_equal(s.total, (uint64_t)NTHREADS * iters);
	assert_int_equal(bm_close(bm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sb_slots_and_clean_flag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_optimistic_conflict_restarts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrades, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_releases_guards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exclusive_waits_for_shared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segv_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_reload_keeps_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_clustering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_clustering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_cleans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_page_detected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_through, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_through, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_free_reuse_persist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_under_eviction, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
