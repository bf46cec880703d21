/*
 * vm_exmap_abi.c: the /dev/exmap ABI against the real kernel module.
 *
 * Runs inside the test VM (tests/vm/run.sh) after vsexmap.ko is loaded:
 *
 *   vm_exmap_abi STORE [NAME]
 *
 * STORE is the backing store: a regular file or a block device of at least
 * 256 pages, which this test overwrites with a known pattern. Checks, in
 * order: setup and stats, interface and region mmap, SIGSEGV on an unmapped
 * page, pread and preadv fault-in with the right contents, batched ALLOC and
 * FREE with per-iov results (a shuffled FREE batch with a duplicate is one
 * zap), running out of frames (short read, -ENOMEM per iov), argument
 * validation, two threads on two interfaces, and the project's user-space
 * library (exmap_open & co.) on the same device. Last,
 * the FREE/ALLOC cost per page next to madvise(MADV_DONTNEED), printed as
 * "bench" lines.
 *
 * Prints one "ok"/"not ok" line per check; exits 0 when all pass, 1 when any
 * fails, 77 when /dev/exmap is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exmap/exmap.h"

#define STORE_PAGES 256
#define FRAMES	    64
#define IFACES	    4
#define PG	    4096

static int failures;
static int checks;

#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		checks++;                                                                  \
		if (cond) {                                                                \
			printf("ok %d - ", checks);                                        \
		} else {                                                                   \
			failures++;                                                        \
			printf("not ok %d - (%s:%d) ", checks, __FILE__, __LINE__);        \
		}                                                                          \
		printf(__VA_ARGS__);                                                       \
		printf("\n");                                                              \
		fflush(stdout);                                                            \
	} while (0)

static int xfd;
static struct exmap_iov *iface[IFACES];
static char *region;

/* ------------------------------------------------------------------ */
/* SIGSEGV probe                                                       */

static sigjmp_buf probe_env;
static volatile void *probe_addr;

static void probe_handler(int sig, siginfo_t *si, void *uc)
{
	probe_addr = si->si_addr;
	siglongjmp(probe_env, 1);
}

/* Read one byte at @p. Returns 1 when that faulted with SIGSEGV at @p, 0
 * when it read fine, -1 when it faulted at another address. */
static int probe_faults(const volatile char *p, char *ret_byte)
{
	struct sigaction sa = {0}, old;
	int r;

	sa.sa_sigaction = probe_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, &old);
	probe_addr = NULL;
	if (sigsetjmp(probe_env, 1) == 0) {
		char c = *p;
		if (ret_byte)
			*ret_byte = c;
		r = 0;
	} else {
		r = probe_addr == (const void *)p ? 1 : -1;
	}
	sigaction(SIGSEGV, &old, NULL);
	return r;
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static uint64_t pattern(uint64_t page, unsigned word)
{
	return (page << 20) ^ (word * 0x9e3779b97f4a7c15ull) ^ 0x5a5a;
}

static int page_matches(const void *p, uint64_t page)
{
	const uint64_t *w = p;
	for (unsigned i = 0; i < PG / 8; i++)
		if (w[i] != pattern(page, i))
			return 0;
	return 1;
}

static int fill_store(const char *path)
{
	int fd = open(path, O_RDWR);
	uint64_t buf[PG / 8];

	if (fd < 0)
		return -errno;
	for (uint64_t p = 0; p < STORE_PAGES; p++) {
		for (unsigned i = 0; i < PG / 8; i++)
			buf[i] = pattern(p, i);
		if (pwrite(fd, buf, PG, (off_t)(p * PG)) != PG) {
			close(fd);
			return -EIO;
		}
	}
	fsync(fd);
	close(fd);
	return 0;
}

static int action(int i, unsigned op, unsigned n)
{
	struct exmap_action_params a = {.interface = (uint16_t)i, .iov_len = (uint16_t)n,
					.opcode = (uint16_t)op};
	int r = ioctl(xfd, EXMAP_IOCTL_ACTION, &a);
	return r < 0 ? -errno : r;
}

static uint64_t alloc_count(void)
{
	struct exmap_user_stats st;
	memset(&st, 0, sizeof(st));
	if (ioctl(xfd, EXMAP_IOCTL_STATS, &st) < 0)
		return UINT64_MAX;
	return st.alloc_count;
}

/* zap_page_range calls of the module so far (its TLB flushes), or -1. */
static long zap_calls(void)
{
	FILE *f = fopen("/sys/module/vsexmap/parameters/zap_calls", "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* two threads, two interfaces                                         */

struct worker {
	int iface;
	uint64_t first; /* pages [first, first + 16) are this worker's */
	int errors;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct exmap_iov *iov = iface[w->iface];

	for (int round = 0; round < 2000; round++) {
		for (unsigned k = 0; k < 16; k++)
			iov[k] = exmap_iov_make(w->first + k, 1);
		if (action(w->iface, EXMAP_OP_ALLOC, 16) != 0)
			w->errors++;
		for (unsigned k = 0; k < 16; k++)
			((volatile uint64_t *)(region + (w->first + k) * PG))[0] = round;
		for (unsigned k = 0; k < 16; k++)
			iov[k] = exmap_iov_make(w->first + k, 1);
		if (action(w->iface, EXMAP_OP_FREE, 16) != 0)
			w->errors++;
		for (unsigned k = 0; k < 16; k++)
			if (iov[k].res != 0 || iov[k].pages != 1)
				w->errors++;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */

static void bench(void)
{
	enum { N = 512, ROUNDS = 40 };
	double t_alloc = 0, t_free = 0, t_madv = 0, t0;
	char *anon;

	for (int r = 0; r < ROUNDS; r++) {
		/* FRAMES frames only: batches of FRAMES single-page iovs,
		 * spread over the region so that no two are adjacent. */
		for (unsigned done = 0; done < N; done += FRAMES) {
			for (unsigned k = 0; k < FRAMES; k++)
				iface[0][k] = exmap_iov_make((k * 3) % STORE_PAGES, 1);
			t0 = now_s();
			action(0, EXMAP_OP_ALLOC, FRAMES);
			t_alloc += now_s() - t0;
			for (unsigned k = 0; k < FRAMES; k++)
				region[(size_t)((k * 3) % STORE_PAGES) * PG] = 1;
			for (unsigned k = 0; k < FRAMES; k++)
				iface[0][k] = exmap_iov_make((k * 3) % STORE_PAGES, 1);
			t0 = now_s();
			action(0, EXMAP_OP_FREE, FRAMES);
			t_free += now_s() - t0;
		}
	}
	/* The same pages as one contiguous run: one iov, one zap, one flush. */
	double t_run = 0;
	for (int r = 0; r < ROUNDS; r++) {
		for (unsigned done = 0; done < N; done += FRAMES) {
			iface[0][0] = exmap_iov_make(0, FRAMES);
			action(0, EXMAP_OP_ALLOC, 1);
			for (unsigned k = 0; k < FRAMES; k++)
				region[(size_t)k * PG] = 1;
			iface[0][0] = exmap_iov_make(0, FRAMES);
			t0 = now_s();
			action(0, EXMAP_OP_FREE, 1);
			t_run += now_s() - t0;
		}
	}
	anon = mmap(NULL, (size_t)N * 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	for (int r = 0; r < ROUNDS; r++) {
		for (unsigned k = 0; k < N; k++)
			anon[(size_t)k * 3 * PG] = 1;
		t0 = now_s();
		for (unsigned k = 0; k < N; k++)
			madvise(anon + (size_t)k * 3 * PG, PG, MADV_DONTNEED);
		t_madv += now_s() - t0;
	}
	munmap(anon, (size_t)N * 3 * PG);
	double pages = (double)N * ROUNDS;
	printf("bench exmap ALLOC %.0f ns/page, exmap FREE %.0f ns/page (batches of %d "
	       "scattered pages), FREE %.0f ns/page (one run of %d pages), "
	       "madvise(MADV_DONTNEED) %.0f ns/page; madvise/FREE(scattered) = %.2fx "
	       "(indicative only under TCG emulation)\n",
	       t_alloc / pages * 1e9, t_free / pages * 1e9, FRAMES, t_run / pages * 1e9, FRAMES,
	       t_madv / pages * 1e9, t_madv / t_free);
}

/* The project's library on the same device: exmap_open, batches, fault-in. */
static void library_checks(const char *store)
{
	int bfd = open(store, O_RDWR | O_DIRECT);
	if (bfd < 0)
		bfd = open(store, O_RDWR); /* tmpfs: no O_DIRECT before 6.6 */
	struct exmap_config cfg = {.backing_fd = bfd, .max_interfaces = 2, .frames = 32,
				   .virt_pages = STORE_PAGES, .required = true};
	struct exmap *x = NULL;
	uint64_t pages[40];
	int r, i;

	r = exmap_open(&cfg, &x);
	CHECK(r == 0, "library: exmap_open on the real device (%d)", r);
	if (r) {
		close(bfd);
		return;
	}
	i = exmap_iface_acquire(x);
	char *base = exmap_region(x);
	r = exmap_fault_in(x, i, EXMAP_OP_READ, 100, 8);
	CHECK(r == 0 && page_matches(base + 100 * PG, 100) && page_matches(base + 107 * PG, 107),
	      "library: exmap_fault_in reads the store (%d)", r);
	for (int k = 0; k < 40; k++)
		pages[k] = 200 + k;
	r = exmap_alloc_batch(x, i, pages, 40);
	CHECK(r == -ENOMEM, "library: exmap_alloc_batch past the pool says -ENOMEM (%d)", r);
	for (int k = 0; k < 8; k++)
		pages[k] = 100 + k;
	r = exmap_free_batch(x, i, pages, 8);
	CHECK(r == 0, "library: exmap_free_batch (%d)", r);
	for (int k = 0; k < 40; k++)
		pages[k] = 200 + k;
	r = exmap_free_batch(x, i, pages, 40);
	struct exmap_user_stats st;
	exmap_stats_get(x, &st);
	CHECK(r == 0 && st.alloc_count == 0 && st.buffer_size == 32,
	      "library: all frames back (alloc_count %llu)", (unsigned long long)st.alloc_count);
	CHECK(probe_faults(base + 100 * PG, NULL) == 1, "library: freed page faults");
	r = exmap_fault_in(x, i, EXMAP_OP_READ, 0, 40);
	CHECK(r == -ENOMEM && probe_faults(base, NULL) == 1,
	      "library: a too-large fault-in is undone (%d)", r);
	exmap_iface_release(x, i);
	exmap_close(x);
	close(bfd);
}

int main(int argc, char **argv)
{
	const char *store = argc > 1 ? argv[1] : "/tmp/exmap-store";
	struct stat sb;
	char c;
	int r, bfd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access(EXMAP_DEVICE_PATH, F_OK) != 0) {
		printf("SKIP: no %s\n", EXMAP_DEVICE_PATH);
		return 77;
	}
	if (stat(store, &sb) != 0) {
		int fd = open(store, O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, STORE_PAGES * PG) != 0) {
			perror(store);
			return 1;
		}
		close(fd);
		stat(store, &sb);
	}
	printf("# store %s (%s)\n", store, S_ISBLK(sb.st_mode) ? "block device" : "regular file");
	if (fill_store(store) != 0) {
		printf("not ok - cannot write the store pattern\n");
		return 1;
	}

	xfd = open(EXMAP_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	CHECK(xfd >= 0, "open %s", EXMAP_DEVICE_PATH);
	if (xfd < 0)
		return 1;
	bfd = open(store, O_RDWR | O_DIRECT);
	if (bfd < 0)
		bfd = open(store, O_RDWR);

	/* setup */
	struct exmap_setup bad = {.fd = bfd, .max_interfaces = 300, .buffer_size = FRAMES};
	CHECK(ioctl(xfd, EXMAP_IOCTL_SETUP, &bad) < 0 && errno == EINVAL,
	      "SETUP refuses 300 interfaces");
	struct exmap_setup s = {.fd = bfd, .max_interfaces = IFACES, .buffer_size = FRAMES};
	r = ioctl(xfd, EXMAP_IOCTL_SETUP, &s);
	CHECK(r == 0, "SETUP with %s backing store (%s)",
	      S_ISBLK(sb.st_mode) ? "a block-device" : "a regular-file", r ? strerror(errno) : "");
	if (r)
		return 1;
	CHECK(ioctl(xfd, EXMAP_IOCTL_SETUP, &s) < 0 && errno == EBUSY, "second SETUP is EBUSY");
	struct exmap_user_stats st;
	memset(&st, 0, sizeof(st));
	r = ioctl(xfd, EXMAP_IOCTL_STATS, &st);
	CHECK(r == 0 && st.buffer_size == FRAMES && st.max_interfaces == IFACES &&
		      st.alloc_count == 0,
	      "STATS: buffer_size %llu, max_interfaces %u, alloc_count %llu",
	      (unsigned long long)st.buffer_size, st.max_interfaces,
	      (unsigned long long)st.alloc_count);

	/* mmaps */
	for (int i = 0; i < IFACES; i++) {
		void *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd,
			       (off_t)EXMAP_OFF_INTERFACE(i));
		iface[i] = p == MAP_FAILED ? NULL : p;
	}
	CHECK(iface[0] && iface[IFACES - 1], "mmap of %d interface pages", IFACES);
	CHECK(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd,
		   (off_t)EXMAP_OFF_INTERFACE(IFACES)) == MAP_FAILED,
	      "mmap of interface %d (past max_interfaces) fails", IFACES);
	region = mmap(NULL, (size_t)STORE_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0);
	CHECK(region != MAP_FAILED, "mmap of the region (%d pages)", STORE_PAGES);
	if (region == MAP_FAILED || !iface[0])
		return 1;
	CHECK(mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd, 0) == MAP_FAILED &&
		      errno == EBUSY,
	      "a second region mmap is EBUSY");

	/* SIGSEGV */
	r = probe_faults(region + 5 * PG + 123, NULL);
	CHECK(r == 1, "touching an unmapped page raises SIGSEGV at that address (%d)", r);
	r = probe_faults(region + 6 * PG, NULL);
	CHECK(r == 1, "and again (SIGSEGV not blocked after a jump) (%d)", r);

	/* fault-in by pread */
	ssize_t got = pread(xfd, region, 8 * PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(got == 8 * PG, "pread fault-in of 8 pages returns %zd", got);
	int same = 1;
	for (int p = 0; p < 8; p++)
		same &= page_matches(region + (size_t)p * PG, p);
	CHECK(same, "fault-in contents match the store at offset addr - region_start");
	CHECK(alloc_count() == 8, "alloc_count 8 after the fault-in");
	struct iovec v[2] = {{region + 40 * PG, 2 * PG}, {region + 60 * PG, PG}};
	got = preadv(xfd, v, 2, (off_t)EXMAP_POS(1, EXMAP_OP_READ));
	CHECK(got == 3 * PG && page_matches(region + 41 * PG, 41) &&
		      page_matches(region + 60 * PG, 60),
	      "preadv fault-in of two ranges (%zd)", got);
	CHECK(pread(xfd, region + 1, PG, 0) < 0 && errno == EINVAL, "unaligned pread is EINVAL");
	CHECK(pread(xfd, region, PG, (off_t)EXMAP_POS(IFACES, EXMAP_OP_READ)) < 0 &&
		      errno == EINVAL,
	      "pread on a bad interface is EINVAL");

	/* ALLOC batch */
	struct exmap_iov *iov = iface[2];
	iov[0] = exmap_iov_make(10, 1);
	iov[1] = exmap_iov_make(11, 1);
	iov[2] = exmap_iov_make(20, 4);
	iov[3] = exmap_iov_make(3, 1); /* mapped already: skipped */
	r = action(2, EXMAP_OP_ALLOC, 4);
	CHECK(r == 0 && iov[0].res == 0 && iov[0].pages == 1 && iov[2].pages == 4 &&
		      iov[3].res == 0 && iov[3].pages == 0,
	      "ALLOC batch: ret %d, pages %d %d %d %d", r, iov[0].pages, iov[1].pages,
	      iov[2].pages, iov[3].pages);
	memset(region + 10 * PG, 0xab, PG);
	memset(region + 23 * PG, 0xcd, PG);
	CHECK(region[10 * PG + 77] == (char)0xab && probe_faults(region + 23 * PG, &c) == 0 &&
		      c == (char)0xcd,
	      "allocated pages are writable and readable");
	CHECK(alloc_count() == 8 + 3 + 6, "alloc_count %llu after ALLOC",
	      (unsigned long long)alloc_count());

	/* FREE batch */
	iov[0] = exmap_iov_make(0, 8);
	iov[1] = exmap_iov_make(10, 2);
	iov[2] = exmap_iov_make(20, 4);
	iov[3] = exmap_iov_make(40, 2);
	iov[4] = exmap_iov_make(60, 1);
	iov[5] = exmap_iov_make(100, 1); /* not mapped: nothing to do */
	r = action(2, EXMAP_OP_FREE, 6);
	CHECK(r == 0 && iov[0].pages == 8 && iov[1].pages == 2 && iov[2].pages == 4 &&
		      iov[5].res == 0 && iov[5].pages == 0,
	      "FREE batch: ret %d, pages %d %d %d %d %d %d", r, iov[0].pages, iov[1].pages,
	      iov[2].pages, iov[3].pages, iov[4].pages, iov[5].pages);
	CHECK(alloc_count() == 0, "alloc_count 0 after FREE (%llu)",
	      (unsigned long long)alloc_count());
	CHECK(probe_faults(region + 10 * PG, NULL) == 1 && probe_faults(region, NULL) == 1,
	      "freed pages fault again");

	/* FREE sorts its batch: eight adjacent pages named out of order (one
	 * of them twice) are one run, one zap; each page is counted once, for
	 * its first iov, and its frame comes back once. */
	static const unsigned shuffled[9] = {35, 31, 37, 30, 33, 36, 32, 34, 33};
	iov[0] = exmap_iov_make(30, 8);
	r = action(2, EXMAP_OP_ALLOC, 1);
	for (unsigned k = 0; k < 8; k++)
		region[(30 + k) * PG] = (char)k;
	for (unsigned k = 0; k < 9; k++)
		iov[k] = exmap_iov_make(shuffled[k], 1);
	long z0 = zap_calls();
	r = action(2, EXMAP_OP_FREE, 9);
	long z1 = zap_calls();
	int ones = 0;
	for (unsigned k = 0; k < 8; k++)
		ones += iov[k].res == 0 && iov[k].pages == 1;
	CHECK(r == 0 && ones == 8 && iov[8].res == 0 && iov[8].pages == 0 && alloc_count() == 0,
	      "FREE of 8 shuffled pages and a duplicate: %d x 1 page, duplicate %d, "
	      "alloc_count %llu",
	      ones, iov[8].pages, (unsigned long long)alloc_count());
	if (z0 >= 0)
		CHECK(z1 - z0 == 1, "... in one zap (%ld)", z1 - z0);
	iov[0] = exmap_iov_make(0, FRAMES);
	r = action(2, EXMAP_OP_ALLOC, 1);
	CHECK(r == 0 && iov[0].pages == FRAMES && alloc_count() == FRAMES,
	      "all %d frames can be mapped again (%d)", FRAMES, iov[0].pages);
	iov[0] = exmap_iov_make(0, FRAMES);
	action(2, EXMAP_OP_FREE, 1);

	/* get_user_pages works on the region (O_DIRECT, FUSE and vmsplice need
	 * it): splice a mapped page into a pipe, free the page while the pipe
	 * still holds it, then read the pipe. The pinned frame must not be
	 * reused before the pipe lets go of it. */
	int pfd[2];
	char *pbuf = malloc(PG);
	got = pread(xfd, region + 7 * PG, PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	struct iovec sv = {region + 7 * PG, PG};
	CHECK(got == PG && pipe(pfd) == 0 && vmsplice(pfd[1], &sv, 1, 0) == PG,
	      "vmsplice from a region page (get_user_pages) works");
	iov[0] = exmap_iov_make(7, 1);
	r = action(2, EXMAP_OP_FREE, 1);
	got = pread(xfd, region, FRAMES * PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(r == 0 && got == (FRAMES - 1) * PG,
	      "a frame freed while pinned is not reused while pinned (got %zd pages)", got / PG);
	CHECK(read(pfd[0], pbuf, PG) == PG && page_matches(pbuf, 7),
	      "the pipe still reads the spliced page's data");
	close(pfd[0]);
	close(pfd[1]);
	free(pbuf);
	iov[0] = exmap_iov_make(0, FRAMES);
	action(2, EXMAP_OP_FREE, 1);
	got = pread(xfd, region, FRAMES * PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(got == FRAMES * PG, "once unpinned the frame is back in the pool (%zd pages)",
	      got / PG);
	iov[0] = exmap_iov_make(0, FRAMES);
	action(2, EXMAP_OP_FREE, 1);
	CHECK(alloc_count() == 0, "alloc_count 0 again");

	/* recycled frames carry the right data after a new fault-in */
	got = pread(xfd, region + 3 * PG, PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(got == PG && page_matches(region + 3 * PG, 3), "re-fault-in reads the store again");
	iov[0] = exmap_iov_make(3, 1);
	action(2, EXMAP_OP_FREE, 1);

	/* out of frames */
	got = pread(xfd, region + 100 * PG, 100 * PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(got == FRAMES * PG, "fault-in of 100 pages with %d frames reads short (%zd)", FRAMES,
	      got);
	CHECK(page_matches(region + (100 + FRAMES - 1) * PG, 100 + FRAMES - 1),
	      "the part that was read is right");
	iov[0] = exmap_iov_make(0, 1);
	iov[1] = exmap_iov_make(1, 1);
	r = action(2, EXMAP_OP_ALLOC, 2);
	CHECK(r == 2 && iov[0].res == -ENOMEM && iov[1].res == -ENOMEM,
	      "ALLOC without frames: ret %d, res %d %d", r, iov[0].res, iov[1].res);
	got = pread(xfd, region, PG, (off_t)EXMAP_POS(0, EXMAP_OP_READ));
	CHECK(got == 0, "pread without frames reads 0 bytes (%zd)", got);
	iov[0] = exmap_iov_make(100, 100);
	r = action(2, EXMAP_OP_FREE, 1);
	CHECK(r == 0 && iov[0].pages == FRAMES && alloc_count() == 0,
	      "one FREE iov of 100 pages frees the %d mapped (%d)", FRAMES, iov[0].pages);

	/* validation */
	CHECK(action(0, EXMAP_OP_ALLOC, 513) == -EINVAL, "iov_len 513 is EINVAL");
	CHECK(action(0, 7, 1) == -EINVAL, "opcode 7 is EINVAL");
	CHECK(action(IFACES, EXMAP_OP_ALLOC, 1) == -EINVAL, "interface %d is EINVAL", IFACES);
	iov[0] = exmap_iov_make(STORE_PAGES - 1, 2);
	r = action(2, EXMAP_OP_ALLOC, 1);
	CHECK(r == 1 && iov[0].res == -EINVAL, "an iov past the region: res %d", iov[0].res);
	CHECK(ioctl(xfd, EXMAP_IOCTL_CLONE, &r) < 0, "CLONE is refused");

	/* two threads */
	pthread_t th[2];
	struct worker w[2] = {{.iface = 0, .first = 128}, {.iface = 1, .first = 192}};
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK(w[0].errors == 0 && w[1].errors == 0 && alloc_count() == 0,
	      "two threads x 2000 ALLOC/FREE rounds of 16 pages (errors %d %d)", w[0].errors,
	      w[1].errors);

	/* fork: the region is not inherited */
	pid_t pid = fork();
	if (pid == 0)
		_exit(probe_faults(region, NULL) == 1 ? 0 : 3);
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the region is not inherited by a child (status %d)", status);

	bench();

	munmap(region, (size_t)STORE_PAGES * PG);
	for (int i = 0; i < IFACES; i++)
		munmap(iface[i], PG);
	close(xfd);
	close(bfd);

	library_checks(store);

	printf("# %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
