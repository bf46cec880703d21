/*
 * vm_free_cost.c: what one EXMAP_OP_FREE batch costs, per page.
 *
 * Runs inside the test VM (tests/vm/run.sh) after vsexmap.ko is loaded. For
 * batches of 1, 8, 64 and 512 single-page iovs it times the FREE ioctl (the
 * pages were ALLOCed and touched before, so the TLB holds them) in four
 * layouts:
 *
 *   scattered   pages 0, 2, 4, ...: no two adjacent, every page its own run
 *   in order    pages 0, 1, 2, ... in ascending order: one run
 *   shuffled    the same contiguous pages in a random order
 *   2 threads   scattered, and in order, while a second thread of the
 *               process spins on the other CPU: every TLB flush then has to
 *               reach that CPU too (an IPI), which is what a multi-threaded
 *               engine pays per flush
 *
 * next to madvise(MADV_DONTNEED) of the same scattered pages of anonymous
 * memory, one call per page. All layouts take turns, five times, and the
 * best of the five is printed (a busy host slows some down, never one up).
 * When the module has the zap_calls parameter
 * (/sys/module/vsexmap/parameters/zap_calls: zap_page_range calls, each one
 * TLB flush), the flushes per batch are printed too.
 *
 * One line per batch size:
 *
 *   free-cost batch B: scattered X ns/page (F flushes), in order ...,
 *   shuffled ...; 2 threads: scattered ..., in order ...; madvise M ns/page
 *
 * Numbers under TCG emulation are indicative only. Exits 0, 1 (a FREE gave a
 * wrong per-iov result or setup failed) or 77 (no /dev/exmap).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "exmap/exmap.h"

#define PG	     4096
#define FRAMES	     512  /* the largest batch */
#define REGION_PAGES 2048 /* scattered batches use every other page */
#define REPS	     5	  /* repetitions, all layouts interleaved; the best counts */
#define REP_PAGES    1024 /* pages freed per repetition, at least */
#define REP_PAGES_2T 128  /* the same with the second thread (IPIs are slow) */
#define ZAP_PARAM    "/sys/module/vsexmap/parameters/zap_calls"

enum layout { SCATTERED, IN_ORDER, SHUFFLED, SCATTERED_2T, IN_ORDER_2T, NLAYOUTS };

static int xfd;
static struct exmap_iov *iov;
static char *region;
static int wrong;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int action(unsigned op, unsigned n)
{
	struct exmap_action_params a = {
	    .interface = 0, .iov_len = (uint16_t)n, .opcode = (uint16_t)op};
	int r = ioctl(xfd, EXMAP_IOCTL_ACTION, &a);
	return r < 0 ? -errno : r;
}

/* zap_page_range calls so far, or -1 when the module does not say. */
static long zap_calls(void)
{
	FILE *f = fopen(ZAP_PARAM, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void pin_to(int cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s); /* best effort */
}

static atomic_bool spin_stop;

static void *spinner_main(void *arg)
{
	volatile unsigned long n = 0;

	pin_to(1);
	while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
		n++;
	return NULL;
}

/* The pages of one batch of @b in @lay, in the order FREE names them. */
static void batch_pages(enum layout lay, unsigned b, uint64_t *pages, unsigned *seed)
{
	for (unsigned k = 0; k < b; k++)
		pages[k] = lay == SCATTERED || lay == SCATTERED_2T ? 2 * k : k;
	if (lay == SHUFFLED)
		for (unsigned k = b - 1; k > 0; k--) {
			unsigned j = rand_r(seed) % (k + 1);
			uint64_t t = pages[k];
			pages[k] = pages[j];
			pages[j] = t;
		}
}

/* ns per page of FREE for batches of @b in @lay; *ret_flushes: zap calls
 * per batch (-1 unknown). */
static double measure(enum layout lay, unsigned b, double *ret_flushes)
{
	uint64_t pages[FRAMES];
	unsigned min = lay >= SCATTERED_2T ? REP_PAGES_2T : REP_PAGES;
	unsigned seed = 42 + b, rounds = min / b < 1 ? 1 : min / b;
	double t = 0;
	long z0 = zap_calls();

	for (unsigned r = 0; r < rounds; r++) {
		batch_pages(lay, b, pages, &seed);
		/* ALLOC in one go (not timed), touch every page so that the TLB
		 * has it, then FREE in the layout's order. */
		for (unsigned k = 0; k < b; k++)
			iov[k] = exmap_iov_make(pages[k], 1);
		if (action(EXMAP_OP_ALLOC, b) != 0)
			wrong++;
		for (unsigned k = 0; k < b; k++)
			((volatile char *)region)[pages[k] * PG] = (char)r;
		for (unsigned k = 0; k < b; k++)
			iov[k] = exmap_iov_make(pages[k], 1);
		double t0 = now_s();
		int ret = action(EXMAP_OP_FREE, b);
		t += now_s() - t0;
		if (ret != 0)
			wrong++;
		for (unsigned k = 0; k < b; k++)
			if (iov[k].res != 0 || iov[k].pages != 1)
				wrong++;
	}
	long z1 = zap_calls();
	*ret_flushes = z0 >= 0 && z1 >= 0 ? (double)(z1 - z0) / rounds : -1;
	return t / ((double)rounds * b) * 1e9;
}

/* madvise(MADV_DONTNEED) one call per page, the same scattered layout. */
static double measure_madvise(unsigned b)
{
	unsigned rounds = REP_PAGES / b < 1 ? 1 : REP_PAGES / b;
	char *anon = mmap(NULL, (size_t)REGION_PAGES * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t = 0;

	if (anon == MAP_FAILED)
		return -1;
	for (unsigned r = 0; r < rounds; r++) {
		for (unsigned k = 0; k < b; k++)
			anon[(size_t)2 * k * PG] = (char)r;
		double t0 = now_s();
		for (unsigned k = 0; k < b; k++)
			madvise(anon + (size_t)2 * k * PG, PG, MADV_DONTNEED);
		t += now_s() - t0;
	}
	munmap(anon, (size_t)REGION_PAGES * PG);
	return t / ((double)rounds * b) * 1e9;
}

static const char *flushes(double f, char *buf, size_t len)
{
	if (f < 0)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%.0f flush%s", f, f > 0.5 && f < 1.5 ? "" : "es");
	return buf;
}

int main(void)
{
	static const unsigned sizes[] = {1, 8, 64, 512};
	static const char *const names[NLAYOUTS] = {"scattered", "in order", "shuffled",
						    "2 threads: scattered", "in order"};
	bool two_cpus = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
	pthread_t spinner;

	setvbuf(stdout, NULL, _IOLBF, 0);
	xfd = open("/dev/exmap", O_RDWR);
	if (xfd < 0) {
		printf("SKIP: /dev/exmap: %s\n", strerror(errno));
		return 77;
	}
	struct exmap_setup s = {.fd = -1, .max_interfaces = 1, .buffer_size = FRAMES};
	void *ifp = MAP_FAILED;
	if (ioctl(xfd, EXMAP_IOCTL_SETUP, &s) < 0 ||
	    (ifp = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd,
			(off_t)EXMAP_OFF_INTERFACE(0))) == MAP_FAILED ||
	    (region = mmap(NULL, (size_t)REGION_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, xfd,
			   0)) == MAP_FAILED) {
		printf("not ok - exmap setup: %s\n", strerror(errno));
		return 1;
	}
	iov = ifp;
	pin_to(0);
	printf("# FREE of single-page iovs; ns per page of the ioctl, best of %d; flushes = "
	       "zap_page_range calls per batch (TLB flushes)%s\n",
	       REPS, zap_calls() < 0 ? " (not reported by this module)" : "");
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned b = sizes[i];
		double ns[NLAYOUTS], fl[NLAYOUTS], madv = -1;
		char line[512], f[32];
		int at = 0;

		for (int lay = 0; lay < NLAYOUTS; lay++)
			ns[lay] = fl[lay] = -1;
		/* Layouts interleaved, best of REPS: other tenants of the
		 * machine slow some repetitions down, never speed one up. */
		for (int rep = 0; rep < REPS; rep++) {
			for (int lay = 0; lay < NLAYOUTS; lay++) {
				double v, fv;

				if (lay == SCATTERED_2T) {
					if (!two_cpus)
						break;
					atomic_store(&spin_stop, false);
					pthread_create(&spinner, NULL, spinner_main, NULL);
					usleep(10 * 1000);
				}
				v = measure(lay, b, &fv);
				if (ns[lay] < 0 || v < ns[lay])
					ns[lay] = v;
				fl[lay] = fv;
			}
			if (two_cpus) {
				atomic_store(&spin_stop, true);
				pthread_join(spinner, NULL);
			}
			double m = measure_madvise(b);
			if (madv < 0 || m < madv)
				madv = m;
		}
		at += snprintf(line + at, sizeof(line) - at, "free-cost batch %u:", b);
		for (int lay = 0; lay < NLAYOUTS; lay++) {
			const char *sep = lay == SCATTERED_2T ? ";" : ",";

			if (ns[lay] < 0)
				continue;
			at += snprintf(line + at, sizeof(line) - at, "%s %s %.0f ns/page (%s)",
				       lay ? sep : "", names[lay], ns[lay],
				       flushes(fl[lay], f, sizeof(f)));
		}
		snprintf(line + at, sizeof(line) - at, "; madvise %.0f ns/page", madv);
		printf("%s\n", line);
	}
	printf("# (TCG emulation: indicative only)\n");
	if (wrong)
		printf("not ok - %d FREE/ALLOC results were wrong\n", wrong);
	else
		printf("ok - every FREE unmapped exactly the pages it named\n");
	close(xfd);
	return wrong ? 1 : 0;
}
