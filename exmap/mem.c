/*
 * mem.c: backend selection and dispatch, and the plain backend.
 */
#include "exmap/mem_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "engine/lat_hist.h"
#include "engine/log.h"

int mem_open(const struct mem_config *cfg, struct mem **ret_mem)
{
	struct mem *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->cfg = *cfg;
	m->region_bytes = cfg->virt_pages * MEM_PAGE_SIZE;

	if (cfg->mode != MEM_PLAIN) {
		m->ops = &mem_exmap_ops;
		r = m->ops->open(m, cfg);
		if (r == 0)
			goto done;
		if (cfg->mode == MEM_EXMAP) {
			free(m);
			return r;
		}
		vs_log(VS_LOG_DEBUG, "exmap not available (%s), using the madvise backend",
		       r == -ENODEV ? "no usable /dev/exmap" : "setup failed");
	}
	m->ops = &mem_plain_ops;
	r = m->ops->open(m, cfg);
	if (r < 0) {
		free(m);
		return r;
	}
done:
	*ret_mem = m;
	return 0;
}

void mem_close(struct mem *m)
{
	if (!m)
		return;
	m->ops->close(m);
	free(m);
}

void *mem_base(const struct mem *m)
{
	return m->base;
}

const char *mem_name(const struct mem *m)
{
	return m->ops->name;
}

bool mem_faults_on_evicted(const struct mem *m)
{
	return m->ops->faults_on_evicted;
}

int mem_thread_attach(struct mem *m)
{
	return m->ops->thread_attach(m);
}

void mem_thread_detach(struct mem *m, int iface)
{
	m->ops->thread_detach(m, iface);
}

int mem_read(struct mem *m, int iface, uint64_t pid)
{
	return m->ops->read(m, iface, pid);
}

int mem_alloc(struct mem *m, int iface, uint64_t pid)
{
	return m->ops->alloc(m, iface, pid);
}

int mem_alloc_many(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	if (m->ops->alloc_many)
		return m->ops->alloc_many(m, iface, pids, n);
	for (unsigned i = 0; i < n; i++) {
		int r = m->ops->alloc(m, iface, pids[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int mem_read_run(struct mem *m, int iface, uint64_t first, unsigned n)
{
	if (m->ops->read_run)
		return m->ops->read_run(m, iface, first, n);
	for (unsigned i = 0; i < n; i++) {
		int r = m->ops->read(m, iface, first + i);
		if (r < 0)
			return r;
	}
	return 0;
}

int mem_free(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	return m->ops->free(m, iface, pids, n);
}

/* ------------------------------------------------------------------ */
/* The plain backend: anonymous memory, pread, madvise.               */

#define MEM_FREE_MAX 256 /* the largest eviction batch */

struct plain {
	int pidfd;	       /* our own process, for process_madvise; -1 when unusable */
	_Atomic bool vector_ok; /* process_madvise takes MADV_DONTNEED here; the
				 * first refusal clears it */
	_Atomic bool populate; /* MADV_POPULATE_WRITE works (plain_alloc_many);
				* every thread reads it, the first refusal clears it */
	_Atomic uint32_t free_ns[FREE_WAYS];  /* ns per page dropped, lately */
	_Atomic uint32_t batches;	      /* batches timed, for the probes */
	_Atomic uint64_t freed_by[FREE_WAYS]; /* batches dropped each way */
};

static int plain_open(struct mem *m, const struct mem_config *cfg)
{
	/* MAP_NORESERVE: the region is as large as the image, far beyond the
	 * pool, and must not be charged against overcommit; the buffer manager
	 * bounds what is actually touched. */
	void *p = mmap(NULL, m->region_bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		vs_log(VS_LOG_ERR, "cannot reserve %llu MiB of address space for the pool",
		       (unsigned long long)(m->region_bytes >> 20));
		return -ENOMEM;
	}
	/* Frames are 4 KiB: transparent huge pages would make one dropped page
	 * cost 2 MiB of reload, and residency would no longer be per page. */
	madvise(p, m->region_bytes, MADV_NOHUGEPAGE);
	struct plain *pl = calloc(1, sizeof(*pl));
	if (!pl) {
		munmap(p, m->region_bytes);
		return -ENOMEM;
	}
	pl->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	pl->populate = true;
	pl->vector_ok = pl->pidfd >= 0;
	m->priv = pl;
	m->base = p;
	return 0;
}

static void plain_close(struct mem *m)
{
	struct plain *pl = m->priv;
	if (m->base)
		munmap(m->base, m->region_bytes);
	if (pl && pl->pidfd >= 0)
		close(pl->pidfd);
	free(pl);
}

static int plain_thread_attach(struct mem *m)
{
	return 0;
}

static void plain_thread_detach(struct mem *m, int iface)
{
}

/* The region is linear in pids, so a run of pages is one read. */
static int plain_read_run(struct mem *m, int iface, uint64_t first, unsigned n)
{
	char *addr = (char *)m->base + first * MEM_PAGE_SIZE;
	size_t want = (size_t)n * MEM_PAGE_SIZE, done = 0;

	while (done < want) {
		ssize_t got = pread(m->cfg.fd, addr + done, want - done,
				    (off_t)(first * MEM_PAGE_SIZE + done));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0)
			return -EIO;
		done += (size_t)got;
	}
	return 0;
}

static int plain_read(struct mem *m, int iface, uint64_t pid)
{
	return plain_read_run(m, iface, pid, 1);
}

static int plain_alloc(struct mem *m, int iface, uint64_t pid)
{
	/* Pages without a frame read as zeros already. */
	return 0;
}

/*
 * A page without a frame reads as zeros, but the first write to it takes a
 * page fault, and a fault costs far more than the zeroing it does (measured
 * on these VMs: a 1 MiB write into fresh pages ran at a third of the speed
 * of populating them first). MADV_POPULATE_WRITE (Linux 5.14) fills a whole
 * run in one call. It is only an optimisation: on an older kernel, or when
 * it fails, the pages fault in one by one as before.
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* The end of the run of consecutive pids that starts at @i: one call to the
 * kernel covers it (the buffer manager sorts its batches). */
static unsigned run_end(const uint64_t *pids, unsigned i, unsigned n)
{
	unsigned j = i + 1;
	while (j < n && pids[j] == pids[j - 1] + 1)
		j++;
	return j;
}

static int plain_alloc_many(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	struct plain *pl = m->priv;

	for (unsigned i = 0; i < n && atomic_load_explicit(&pl->populate, memory_order_relaxed);) {
		unsigned j = run_end(pids, i, n);
		char *addr = (char *)m->base + pids[i] * MEM_PAGE_SIZE;
		if (madvise(addr, (size_t)(j - i) * MEM_PAGE_SIZE, MADV_POPULATE_WRITE) < 0 &&
		    (errno == EINVAL || errno == ENOSYS))
			atomic_store_explicit(&pl->populate, false,
					      memory_order_relaxed); /* not here */
		i = j;
	}
	return 0;
}

/*
 * Dropping frames: two ways, and neither is cheaper everywhere. madvise()
 * flushes the TLB once per call, so once per run of consecutive pages (once
 * per page for scattered ones), and when another thread
 * of the process runs on another CPU each flush is an interrupt to it.
 * process_madvise() on our own pidfd takes the batch as one vector and, on
 * kernels that batch its flushes (6.16 on), flushes once, but costs more per
 * page when nothing else runs. Measured on these VMs (2 CPUs, 64 scattered
 * pages per batch): with a second thread busy, 82 us a page by the loop
 * against 42 us by the vector; alone, 8 us against 34 us. A FUSE daemon
 * runs on every CPU, a one-thread benchmark on one.
 *
 * So each batch is timed and goes the way that has cost less per page
 * lately (plain_free_pick), and one batch in FREE_PROBE goes the other way,
 * so that a change in how the threads are spread is noticed. Kernels that
 * refuse MADV_DONTNEED through process_madvise get the loop only.
 */
static int free_vector(struct plain *pl, char *base, const uint64_t *pids, unsigned n)
{
	struct iovec iov[MEM_FREE_MAX];
	unsigned k = 0, done = 0;

	for (unsigned i = 0, j; i < n; i = j, k++) {
		j = run_end(pids, i, n); /* neighbours: one range */
		iov[k].iov_base = base + pids[i] * MEM_PAGE_SIZE;
		iov[k].iov_len = (size_t)(j - i) * MEM_PAGE_SIZE;
	}
	while (done < k) {
		long r = syscall(SYS_process_madvise, pl->pidfd, iov + done, k - done,
				 MADV_DONTNEED, 0);
		if (r <= 0)
			break;
		/* r bytes were advised: skip the ranges they cover */
		size_t bytes = (size_t)r;
		while (done < k && bytes >= iov[done].iov_len)
			bytes -= iov[done++].iov_len;
		if (done < k && bytes > 0) {
			iov[done].iov_base = (char *)iov[done].iov_base + bytes;
			iov[done].iov_len -= bytes;
		}
	}
	if (done == k)
		return 0;
	if (errno == EINVAL || errno == ENOSYS || errno == EPERM)
		atomic_store(&pl->vector_ok, false); /* not on this kernel: the loop from now on */
	return -EAGAIN; /* the loop finishes (or redoes) it: madvise is idempotent */
}

/* One call per run of consecutive pids (the buffer manager evicts
 * neighbours together). */
static int free_loop(char *base, const uint64_t *pids, unsigned n)
{
	for (unsigned i = 0, j; i < n; i = j) {
		j = run_end(pids, i, n);
		if (madvise(base + pids[i] * MEM_PAGE_SIZE, (size_t)(j - i) * MEM_PAGE_SIZE,
			    MADV_DONTNEED) < 0)
			return -errno;
	}
	return 0;
}

static int plain_free(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	struct plain *pl = m->priv;
	char *base = m->base;

	for (unsigned i = 0; i < n; i++)
		if (pids[i] >= m->cfg.virt_pages)
			return -EINVAL; /* never advise memory that is not the pool's */
	if (n < 2 || n > MEM_FREE_MAX || !atomic_load_explicit(&pl->vector_ok, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&pl->freed_by[FREE_LOOP], 1, memory_order_relaxed);
		return free_loop(base, pids, n);
	}
	uint32_t ns[FREE_WAYS];
	for (unsigned w = 0; w < FREE_WAYS; w++)
		ns[w] = atomic_load_explicit(&pl->free_ns[w], memory_order_relaxed);
	uint32_t batch = atomic_fetch_add_explicit(&pl->batches, 1, memory_order_relaxed);
	unsigned way = plain_free_pick(ns, batch);
	uint64_t t0 = lh_now_ns();
	int r = way == FREE_VECTOR ? free_vector(pl, base, pids, n) : free_loop(base, pids, n);
	if (r == -EAGAIN) {
		/* The vector failed: count it as very slow, so that only the
		 * probes try it again. */
		atomic_store_explicit(&pl->free_ns[FREE_VECTOR], UINT32_MAX / 2, memory_order_relaxed);
		way = FREE_LOOP;
		r = free_loop(base, pids, n);
	} else if (r == 0) {
		/* Racing updates may lose one sample: it is an estimate. */
		uint64_t per = (lh_now_ns() - t0) / n;
		uint32_t sample = per == 0 ? 1 : per > UINT32_MAX ? UINT32_MAX : (uint32_t)per;
		atomic_store_explicit(&pl->free_ns[way], plain_free_ewma(ns[way], sample),
				      memory_order_relaxed);
	}
	atomic_fetch_add_explicit(&pl->freed_by[way], 1, memory_order_relaxed);
	return r;
}

void mem_free_ways(const struct mem *m, uint64_t batches[FREE_WAYS], uint32_t ns[FREE_WAYS])
{
	const struct plain *pl = m->ops == &mem_plain_ops ? m->priv : NULL;
	for (unsigned w = 0; w < FREE_WAYS; w++) {
		batches[w] = pl ? atomic_load(&pl->freed_by[w]) : 0;
		ns[w] = pl ? atomic_load(&pl->free_ns[w]) : 0;
	}
}

const struct mem_ops mem_plain_ops = {
    .name = "madvise",
    .faults_on_evicted = false,
    .open = plain_open,
    .close = plain_close,
    .thread_attach = plain_thread_attach,
    .thread_detach = plain_thread_detach,
    .read = plain_read,
    .alloc = plain_alloc,
    .free = plain_free,
    .alloc_many = plain_alloc_many,
    .read_run = plain_read_run,
};
