/*
 * test_exmap.c: the exmap backend against an emulated /dev/exmap
 * (exmap_emu.c; this machine has no exmap module).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/log.h"
#include "exmap/exmap.h"
#include "exmap/mem_internal.h"
#include "tests/exmap/exmap_emu.h"

/* ---- captured log lines ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[32768];
static unsigned log_lines;

static void log_capture(enum vs_log_level level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	size_t used = strlen(log_text);
	snprintf(log_text + used, sizeof(log_text) - used, "%s\n", msg);
	log_lines++;
	pthread_mutex_unlock(&log_lock);
}

static bool log_has(const char *needle)
{
	bool r;
	pthread_mutex_lock(&log_lock);
	r = strstr(log_text, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

/* ---- fixtures ---- */

#define IMAGE_PAGES 4096

static int image_fd = -1;

/* Every byte of page p of the image is derived from p. */
static uint8_t image_byte(uint64_t pid, size_t i)
{
	return (uint8_t)(pid * 31 + i * 7 + 1);
}

static int make_image(void)
{
	char path[] = "/tmp/vs-exmap-test-XXXXXX";
	static uint8_t page[EXMAP_PAGE_SIZE];
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	unlink(path);
	for (uint64_t p = 0; p < IMAGE_PAGES; p++) {
		for (size_t i = 0; i < sizeof(page); i++)
			page[i] = image_byte(p, i);
		if (pwrite(fd, page, sizeof(page), (off_t)(p * EXMAP_PAGE_SIZE)) !=
		    (ssize_t)sizeof(page)) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

static bool page_is_image(const struct mem *m, uint64_t pid)
{
	const uint8_t *p = (const uint8_t *)mem_base(m) + pid * EXMAP_PAGE_SIZE;
	for (size_t i = 0; i < EXMAP_PAGE_SIZE; i++)
		if (p[i] != image_byte(pid, i))
			return false;
	return true;
}

static bool page_all(const struct mem *m, uint64_t pid, uint8_t v)
{
	const uint8_t *p = (const uint8_t *)mem_base(m) + pid * EXMAP_PAGE_SIZE;
	for (size_t i = 0; i < EXMAP_PAGE_SIZE; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* Is [addr, addr+len) mapped in this process at all? */
static bool is_mapped(void *addr, size_t len)
{
	return msync(addr, len, MS_ASYNC) == 0 || errno != ENOMEM;
}

static int setup(void **state)
{
	emu_reset();
	log_text[0] = 0;
	log_lines = 0;
	vs_log_set_sink(log_capture);
	return 0;
}

static int teardown(void **state)
{
	vs_log_set_sink(NULL);
	emu_reset();
	return 0;
}

static struct mem *open_exmap(uint64_t virt_pages, uint64_t frames, unsigned threads)
{
	struct mem_config cfg = {
	    .fd = image_fd,
	    .virt_pages = virt_pages,
	    .frames = frames,
	    .max_threads = threads,
	    .mode = MEM_EXMAP,
	};
	struct mem *m = NULL;
	int r = mem_open(&cfg, &m);

	assert_int_equal(r, 0);
	assert_non_null(m);
	assert_string_equal(mem_name(m), "exmap");
	return m;
}

static struct exmap *xof(struct mem *m)
{
	return m->priv;
}

/* ---- tests ---- */

/* The ABI words, bit by bit. */
static void test_abi_encoding(void **state)
{
	struct exmap_iov v;

	v = exmap_iov_make(0xfffffffffffffull, 1);
	assert_true(v.value == ((1ull << 52) | 0xfffffffffffffull));
	v = exmap_iov_make(5, EXMAP_IOV_MAX_LEN);
	assert_true(v.value == ((4095ull << 52) | 5));
	assert_int_equal(v.page, 5);
	assert_int_equal(v.len, 4095);

	/* Output: res in the low 32 bits, pages in the next 16. */
	v.value = ((uint64_t)(uint16_t)-3 << 32) | (uint32_t)-12;
	assert_int_equal(v.res, -12);
	assert_int_equal(v.pages, -3);
	v.value = (7ull << 32);
	assert_int_equal(v.res, 0);
	assert_int_equal(v.pages, 7);

	assert_true(EXMAP_OFF_INTERFACE(0) == 0xe000000000000000ull);
	assert_true(EXMAP_OFF_INTERFACE(3) == 0xe000000000003000ull);
	assert_true(EXMAP_OFF_INTERFACE(255) == 0xe0000000000ff000ull);
	assert_true(EXMAP_POS(7, EXMAP_OP_READ) == 7);
	assert_true(EXMAP_POS(7, EXMAP_OP_ALLOC) == 0x107);
	assert_true(EXMAP_POS(255, EXMAP_OP_ALLOC) == 0x1ff);
	assert_true(EXMAP_IOCTL_ACTION == 0x40106b02u);
}

/* open: O_RDWR on /dev/exmap, SETUP with the image fd and the sizes, then
 * every interface page at its offset, then the region at 0. */
static void test_setup_arguments(void **state)
{
	struct mem *m = open_exmap(1024, 64, 300);

	assert_int_equal(emu.opens, 1);
	assert_int_equal(emu.open_flags & O_ACCMODE, O_RDWR);
	assert_int_equal(emu.setup_calls, 1);
	assert_int_equal(emu.setup.fd, image_fd);
	assert_int_equal(emu.setup.max_interfaces, 256); /* 300 capped */
	assert_int_equal(emu.setup.buffer_size, 64);
	assert_int_equal(emu.setup.flags, 0);
	assert_true(log_has("256"));

	assert_int_equal(emu.n_iface_maps, 256);
	for (unsigned i = 0; i < 256; i++) {
		assert_true(emu.iface_maps[i].off == EXMAP_OFF_INTERFACE(i));
		assert_int_equal(emu.iface_maps[i].len, EXMAP_PAGE_SIZE);
		assert_int_equal(emu.iface_maps[i].prot, PROT_READ | PROT_WRITE);
		assert_int_equal(emu.iface_maps[i].flags & MAP_TYPE, MAP_SHARED);
		assert_true(emu.iface_maps[i].seq > emu.setup_seq);
		assert_ptr_equal(exmap_iface_iovs(xof(m), (int)i), emu.iface_maps[i].addr);
	}
	assert_int_equal(emu.region_maps, 1);
	assert_true(emu.region_map.off == 0);
	assert_int_equal(emu.region_map.len, 1024 * EXMAP_PAGE_SIZE);
	assert_int_equal(emu.region_map.prot, PROT_READ | PROT_WRITE);
	assert_int_equal(emu.region_map.flags & MAP_TYPE, MAP_SHARED);
	assert_true(emu.region_map.seq > emu.iface_maps[255].seq);
	assert_ptr_equal(mem_base(m), emu.region);
	assert_true(mem_faults_on_evicted(m));
	assert_int_equal(exmap_max_interfaces(xof(m)), 256);

	struct exmap_user_stats st;
	assert_int_equal(exmap_stats_get(xof(m), &st), 0);
	assert_int_equal(st.buffer_size, 64);
	assert_int_equal(st.max_interfaces, 256);

	void *region = mem_base(m), *iface0 = emu.iface_maps[0].addr;
	mem_close(m);
	assert_int_equal(emu.closes, 1);
	assert_false(is_mapped(region, EXMAP_PAGE_SIZE));
	assert_false(is_mapped(iface0, EXMAP_PAGE_SIZE));
}

static void test_setup_few_threads(void **state)
{
	struct mem *m = open_exmap(16, 4, 3);

	assert_int_equal(emu.setup.max_interfaces, 3);
	assert_int_equal(emu.n_iface_maps, 3);
	mem_close(m);
}

/* No device: exmap=on fails with -ENODEV and says why; exmap=auto falls
 * back to the madvise backend. */
static void test_device_absent(void **state)
{
	struct mem_config cfg = {.fd = image_fd, .virt_pages = 64, .frames = 8, .max_threads = 2};
	struct mem *m = NULL;

	emu.absent = true;
	cfg.mode = MEM_EXMAP;
	assert_int_equal(mem_open(&cfg, &m), -ENODEV);
	assert_null(m);
	assert_true(log_has("/dev/exmap not found"));
	assert_true(log_has("kernel module"));

	cfg.mode = MEM_AUTO;
	assert_int_equal(mem_open(&cfg, &m), 0);
	assert_string_equal(mem_name(m), "madvise");
	assert_false(mem_faults_on_evicted(m));
	mem_close(m);
}

/* Upstream wants a block device: SETUP on a regular file fails EBADF, which
 * must come out as -ENODEV with an explanation, and nothing leaked. */
static void test_setup_refused(void **state)
{
	struct mem_config cfg = {.fd = image_fd, .virt_pages = 64, .frames = 8, .max_threads = 2};
	struct mem *m = NULL;

	emu.want_blockdev = true;
	cfg.mode = MEM_EXMAP;
	assert_int_equal(mem_open(&cfg, &m), -ENODEV);
	assert_null(m);
	assert_true(log_has("block device"));
	assert_true(log_has("losetup"));
	assert_int_equal(emu.opens, 1);
	assert_int_equal(emu.closes, 1);
	assert_int_equal(emu.n_iface_maps, 0);
	assert_int_equal(emu.region_maps, 0);

	cfg.mode = MEM_AUTO;
	assert_int_equal(mem_open(&cfg, &m), 0);
	assert_string_equal(mem_name(m), "madvise");
	assert_int_equal(emu.closes, 2);
	mem_close(m);
}

/* A failure halfway through the interface mmaps unwinds the ones done. */
static void test_iface_map_failure_unwinds(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = 64, .frames = 8, .max_threads = 6, .mode = MEM_EXMAP};
	struct mem *m = NULL;

	emu.fail_iface_map = 3;
	assert_int_equal(mem_open(&cfg, &m), -ENODEV);
	assert_true(log_has("interface 3"));
	assert_int_equal(emu.n_iface_maps, 4);
	for (unsigned i = 0; i < 3; i++)
		assert_false(is_mapped(emu.iface_maps[i].addr, EXMAP_PAGE_SIZE));
	assert_int_equal(emu.region_maps, 0);
	assert_int_equal(emu.closes, 1);
}

/* Bad configurations are refused before the device is touched. */
static void test_bad_config(void **state)
{
	struct mem_config cfg = {
	    .fd = image_fd, .virt_pages = 64, .frames = 0, .max_threads = 2, .mode = MEM_EXMAP};
	struct mem *m = NULL;

	assert_int_equal(mem_open(&cfg, &m), -EINVAL);
	cfg.frames = 8;
	cfg.max_threads = 0;
	assert_int_equal(mem_open(&cfg, &m), -EINVAL);
	assert_int_equal(emu.opens, 0);
}

/* 1300 pages = three ioctls of 512, 512 and 276 iovs, one page per iov,
 * encoded {page, len = 1}, in order, on the caller's interface. */
static void test_batches_split_at_512(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 2048, 4);
	static uint64_t pids[1300];
	int iface;

	assert_int_equal(mem_thread_attach(m), 0);
	iface = mem_thread_attach(m);
	assert_int_equal(iface, 1);
	for (unsigned i = 0; i < 1300; i++)
		pids[i] = 3 * i + 1;

	assert_int_equal(exmap_alloc_batch(xof(m), iface, pids, 1300), 0);
	assert_int_equal(emu.n_actions, 3);
	assert_int_equal(emu_frames_free(), 2048 - 1300);

	assert_int_equal(mem_free(m, iface, pids, 1300), 0);
	assert_int_equal(emu.n_actions, 6);
	const unsigned want[3] = {512, 512, 276};
	size_t k = 0;
	for (unsigned a = 0; a < 6; a++) {
		struct emu_action *ac = &emu.actions[a];
		assert_int_equal(ac->opcode, a < 3 ? EXMAP_OP_ALLOC : EXMAP_OP_FREE);
		assert_int_equal(ac->iface, iface);
		assert_int_equal(ac->iov_len, want[a % 3]);
		assert_int_equal(ac->ret, 0);
		if (a == 3)
			k = 0;
		for (unsigned i = 0; i < ac->iov_len; i++, k++)
			assert_true(emu.iov_log[ac->log_start + i] == ((1ull << 52) | pids[k]));
	}
	assert_int_equal(k, 1300);
	assert_int_equal(emu.violations, 0);
	assert_int_equal(emu_frames_free(), 2048);
	for (unsigned i = 0; i < 1300; i++)
		assert_false(emu_page_mapped(pids[i]));

	/* Exactly 512 is one ioctl; an empty batch is none. */
	assert_int_equal(mem_free(m, iface, pids, 512), 0);
	assert_int_equal(emu.n_actions, 7);
	assert_int_equal(mem_free(m, iface, pids, 0), 0);
	assert_int_equal(emu.n_actions, 7);
	mem_close(m);
}

/* A FREE that fails for one page reports that error, but every other page
 * of the batch, including later chunks, is still freed. */
static void test_free_per_iov_error(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 1024, 2);
	static uint64_t pids[600];
	int iface = mem_thread_attach(m);

	for (unsigned i = 0; i < 600; i++)
		pids[i] = i;
	assert_int_equal(exmap_alloc_batch(xof(m), iface, pids, 600), 0);

	emu.fail_page = 10;
	emu.fail_res = -EFAULT;
	assert_int_equal(mem_free(m, iface, pids, 600), -EFAULT);
	assert_int_equal(emu.n_actions, 4); /* 2 ALLOC + 2 FREE: it kept going */
	assert_int_equal(emu.actions[2].ret, 1);
	assert_int_equal(emu.actions[3].ret, 0);
	for (unsigned i = 0; i < 600; i++)
		assert_int_equal(emu_page_mapped(i), i == 10);
	assert_true(log_has("page 10"));

	/* A page outside the region is refused before any ioctl. */
	uint64_t bad[2] = {5, IMAGE_PAGES};
	assert_int_equal(mem_free(m, iface, bad, 2), -EINVAL);
	assert_int_equal(emu.n_actions, 4);
	/* So is an interface that does not exist. */
	assert_int_equal(mem_free(m, 7, pids, 1), -EINVAL);
	assert_int_equal(emu.n_actions, 4);
	mem_close(m);
}

/* ALLOC out of frames: the module returns 0 failures yet marks iovs -ENOMEM.
 * The batch must say -ENOMEM, stop issuing chunks, and a retry after
 * freeing frames completes it. */
static void test_alloc_out_of_frames(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 100, 2);
	static uint64_t pids[1100];
	int iface = mem_thread_attach(m);

	for (unsigned i = 0; i < 1100; i++)
		pids[i] = 2 * i;
	assert_int_equal(exmap_alloc_batch(xof(m), iface, pids, 150), -ENOMEM);
	assert_int_equal(emu.n_actions, 1);
	assert_int_equal(emu.actions[0].ret, 0); /* the undercount */
	assert_int_equal(emu_frames_free(), 0);

	/* Out of frames in the first chunk: the later chunks are not sent. */
	assert_int_equal(exmap_alloc_batch(xof(m), iface, pids + 200, 900), -ENOMEM);
	assert_int_equal(emu.n_actions, 2);

	/* Free 50 of the 100 mapped; the retry of pids[50..150) skips the 50
	 * still mapped and maps the 50 that failed. */
	assert_int_equal(mem_free(m, iface, pids, 50), 0);
	assert_int_equal(exmap_alloc_batch(xof(m), iface, pids + 50, 100), 0);
	for (unsigned i = 0; i < 150; i++)
		assert_int_equal(emu_page_mapped(pids[i]), i >= 50);
	assert_int_equal(emu_frames_free(), 0);

	/* mem_alloc on an exhausted pool */
	assert_int_equal(mem_alloc(m, iface, 1), -ENOMEM);
	assert_false(emu_page_mapped(1));
	mem_close(m);
}

/* mem_read: one pread at the page's address, pos = iface | READ << 8, the
 * image's bytes in the page; a short read is -ENOMEM until a frame is
 * freed. */
static void test_read_and_retry(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 2, 8);
	int a = mem_thread_attach(m), b = mem_thread_attach(m), c = mem_thread_attach(m);

	assert_int_equal(c, 2);
	assert_int_equal(mem_read(m, c, 100), 0);
	assert_int_equal(emu.n_preads, 1);
	assert_true(emu.preads[0].pos == EXMAP_POS(2, EXMAP_OP_READ));
	assert_true(emu.preads[0].pos == 2);
	assert_ptr_equal(emu.preads[0].buf, (char *)mem_base(m) + 100 * EXMAP_PAGE_SIZE);
	assert_int_equal(emu.preads[0].count, EXMAP_PAGE_SIZE);
	assert_true(page_is_image(m, 100));

	assert_int_equal(mem_read(m, a, 7), 0);
	assert_true(page_is_image(m, 7));
	assert_true(emu.preads[1].pos == 0);

	assert_int_equal(mem_read(m, b, 9), -ENOMEM);
	assert_int_equal(emu.preads[2].ret, 0);
	assert_false(emu_page_mapped(9));

	uint64_t victim = 100;
	assert_int_equal(mem_free(m, b, &victim, 1), 0);
	assert_int_equal(mem_read(m, b, 9), 0);
	assert_true(page_is_image(m, 9));
	assert_true(page_is_image(m, 7));
	assert_true(emu.preads[3].pos == 1);
	mem_close(m);
}

/* A multi-page fault-in that runs dry part-way leaves nothing mapped, so
 * the retry is not stuck on the pages it did map. */
static void test_fault_in_partial_undone(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 3, 2);
	int iface = mem_thread_attach(m);

	assert_int_equal(exmap_fault_in(xof(m), iface, EXMAP_OP_READ, 10, 5), -ENOMEM);
	for (uint64_t p = 10; p < 15; p++)
		assert_false(emu_page_mapped(p));
	assert_int_equal(emu_frames_free(), 3);

	assert_int_equal(exmap_fault_in(xof(m), iface, EXMAP_OP_READ, 10, 3), 0);
	for (uint64_t p = 10; p < 13; p++)
		assert_true(page_is_image(m, p));
	assert_int_equal(emu.preads[1].count, 3 * EXMAP_PAGE_SIZE);

	/* Bad arguments never reach the device. */
	unsigned n = emu.n_preads;
	assert_int_equal(exmap_fault_in(xof(m), iface, EXMAP_OP_FREE, 20, 1), -EINVAL);
	assert_int_equal(exmap_fault_in(xof(m), 5, EXMAP_OP_READ, 20, 1), -EINVAL);
	assert_int_equal(exmap_fault_in(xof(m), iface, EXMAP_OP_READ, IMAGE_PAGES - 1, 2), -EINVAL);
	assert_int_equal(exmap_fault_in(xof(m), iface, EXMAP_OP_READ, 20, 0), -EINVAL);
	assert_int_equal(emu.n_preads, n);
	mem_close(m);
}

/* Upstream a failed backing-store read unmaps and reads short: the caller
 * sees -ENOMEM (documented) and the page is not left mapped. */
static void test_read_failure_reads_short(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 4, 2);
	int iface = mem_thread_attach(m);

	emu.fail_reads = true;
	assert_int_equal(mem_read(m, iface, 3), -ENOMEM);
	assert_false(emu_page_mapped(3));
	assert_int_equal(emu_frames_free(), 4);
	emu.fail_reads = false;
	assert_int_equal(mem_read(m, iface, 3), 0);
	assert_true(page_is_image(m, 3));
	mem_close(m);
}

/* Frames come back from the module with old bytes: mem_alloc zeroes. */
static void test_alloc_zeroes(void **state)
{
	struct mem *m = open_exmap(IMAGE_PAGES, 1, 2);
	int iface = mem_thread_attach(m);
	uint64_t pid = 7;

	/* The emulated module hands out junk, as a recycled frame would hold. */
	assert_int_equal(exmap_alloc_batch(xof(m), iface, &pid, 1), 0);
	assert_true(page_all(m, 7, EMU_JUNK));
	assert_int_equal(mem_free(m, iface, &pid, 1), 0);

	assert_int_equal(mem_alloc(m, iface, 5), 0);
	assert_true(emu_page_mapped(5));
	assert_true(page_all(m, 5, 0));
	memset((char *)mem_base(m) + 5 * EXMAP_PAGE_SIZE, 0x3c, EXMAP_PAGE_SIZE);

	/* Already mapped: the module skips it, the page is still zeroed. */
	assert_int_equal(mem_alloc(m, iface, 5), 0);
	assert_true(page_all(m, 5, 0));
	assert_int_equal(emu.actions[emu.n_actions - 1].opcode, EXMAP_OP_ALLOC);
	assert_true(emu.iov_log[emu.actions[emu.n_actions - 1].log_start] == ((1ull << 52) | 5));

	/* A read page is the image, not zeros. */
	pid = 5;
	assert_int_equal(mem_free(m, iface, &pid, 1), 0);
	assert_int_equal(mem_read(m, iface, 6), 0);
	assert_true(page_is_image(m, 6));
	mem_close(m);
}

/* Interface numbers: 0, 1, 2, ... then -EBUSY; released ones come back
 * (last released first); a double release does not duplicate a number. */
static void test_iface_reuse(void **state)
{
	struct mem *m = open_exmap(64, 8, 4);

	for (int i = 0; i < 4; i++)
		assert_int_equal(mem_thread_attach(m), i);
	assert_int_equal(mem_thread_attach(m), -EBUSY);

	mem_thread_detach(m, 2);
	assert_int_equal(mem_thread_attach(m), 2);
	mem_thread_detach(m, 3);
	mem_thread_detach(m, 1);
	assert_int_equal(mem_thread_attach(m), 1);
	assert_int_equal(mem_thread_attach(m), 3);

	mem_thread_detach(m, 1);
	assert_false(log_has("not handed out"));
	mem_thread_detach(m, 1);
	assert_true(log_has("release of interface 1, which is not handed out"));
	mem_thread_detach(m, 17);
	assert_true(log_has("interface 17"));
	unsigned lines = log_lines;
	mem_thread_detach(m, -EBUSY); /* a failed attach: ignored quietly */
	assert_int_equal(log_lines, lines);

	assert_int_equal(mem_thread_attach(m), 1);
	assert_int_equal(mem_thread_attach(m), -EBUSY);
	mem_close(m);
}

/* Threads come and go: an interface is never held by two at once, numbers
 * stay in range and all come back. */
#define N_THREADS 8
#define N_ROUNDS  400

struct race {
	struct mem *m;
	unsigned id;
	atomic_uint *owner;
	atomic_uint *errors;
	atomic_uint *seen;
};

static void *race_thread(void *arg)
{
	struct race *r = arg;

	for (unsigned round = 0; round < N_ROUNDS; round++) {
		int iface;
		while ((iface = mem_thread_attach(r->m)) == -EBUSY)
			sched_yield();
		if (iface < 0 || iface >= 3) {
			atomic_fetch_add(r->errors, 1);
			continue;
		}
		atomic_fetch_or(r->seen, 1u << iface);
		unsigned expect = 0;
		if (!atomic_compare_exchange_strong(&r->owner[iface], &expect, r->id + 1))
			atomic_fetch_add(r->errors, 1);

		/* Use it: a page of this thread's own. */
		uint64_t pid = r->id;
		if (mem_alloc(r->m, iface, pid) != 0 || !page_all(r->m, pid, 0))
			atomic_fetch_add(r->errors, 1);
		if (mem_free(r->m, iface, &pid, 1) != 0)
			atomic_fetch_add(r->errors, 1);

		expect = r->id + 1;
		if (!atomic_compare_exchange_strong(&r->owner[iface], &expect, 0))
			atomic_fetch_add(r->errors, 1);
		mem_thread_detach(r->m, iface);
	}
	return NULL;
}

static void test_iface_threads(void **state)
{
	struct mem *m = open_exmap(64, N_THREADS, 3);
	atomic_uint owner[3] = {0, 0, 0};
	atomic_uint errors = 0, seen = 0;
	struct race r[N_THREADS];
	pthread_t t[N_THREADS];

	for (unsigned i = 0; i < N_THREADS; i++) {
		r[i] = (struct race){m, i, owner, &errors, &seen};
		assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
	}
	for (unsigned i = 0; i < N_THREADS; i++)
		pthread_join(t[i], NULL);

	assert_int_equal(atomic_load(&errors), 0);
	assert_int_equal(atomic_load(&emu.overlaps), 0);
	assert_int_equal(atomic_load(&seen), 7);
	assert_int_equal(emu.n_actions > 0, 1);
	assert_int_equal(emu_frames_free(), N_THREADS);
	/* Everything was given back. */
	bool got[3] = {false, false, false};
	for (int i = 0; i < 3; i++) {
		int n = mem_thread_attach(m);
		assert_true(n >= 0 && n < 3);
		assert_false(got[n]);
		got[n] = true;
	}
	assert_int_equal(mem_thread_attach(m), -EBUSY);
	mem_close(m);
}

/* Touching a freed page faults: this is what faults_on_evicted promises the
 * buffer manager. */
static sigjmp_buf segv_jump;
static void *segv_addr;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
	segv_addr = si->si_addr;
	siglongjmp(segv_jump, 1);
}

static void test_evicted_page_faults(void **state)
{
	struct mem *m = open_exmap(64, 4, 1);
	struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_NODEFER}, old;
	volatile char *p = (char *)mem_base(m) + 9 * EXMAP_PAGE_SIZE;
	int iface = mem_thread_attach(m);
	uint64_t pid = 9;

	assert_int_equal(mem_alloc(m, iface, 9), 0);
	p[0] = 1;
	assert_int_equal(mem_free(m, iface, &pid, 1), 0);

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	segv_addr = NULL;
	if (sigsetjmp(segv_jump, 0) == 0) {
		(void)p[0];
		fail_msg("reading a freed page did not fault");
	}
	sigaction(SIGSEGV, &old, NULL);
	assert_ptr_equal(segv_addr, (void *)p);
	mem_close(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_abi_encoding, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_arguments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_few_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_device_absent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iface_map_failure_unwinds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batches_split_at_512, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_per_iov_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_out_of_frames, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_and_retry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fault_in_partial_undone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_failure_reads_short, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_zeroes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iface_reuse, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iface_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_evicted_page_faults, setup, teardown),
	};
	int r;

	emu_reset();
	image_fd = make_image();
	if (image_fd < 0) {
		perror("test image");
		return 1;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	close(image_fd);
	return r;
}
