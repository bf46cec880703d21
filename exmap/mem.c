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
		vs_log(VS_LOG_INFO, "exmap not available (%s), using the madvise backend",
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
	_Atomic bool populate; /* MADV_POPULATE_WRITE works (plain_alloc_many);
				* every thread reads it, the first refusal clears it */
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

static int plain_alloc_many(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	struct plain *pl = m->priv;

	for (unsigned i = 0; i < n && atomic_load_explicit(&pl->populate, memory_order_relaxed);) {
		unsigned j = i + 1;
		while (j < n && pids[j] == pids[j - 1] + 1)
			j++;
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
 * Dropping a frame costs a TLB shootdown: an interrupt to every other CPU the
 * process runs on (a FUSE daemon runs on all of them). madvise() pays it per
 * call, so per page; process_madvise() on our own pidfd takes the whole
 * batch as one vector and, on kernels that batch its flushes (6.16 on), pays
 * it once. Measured here (2 CPUs, busy): about a third of the per-page cost.
 * Kernels that refuse MADV_DONTNEED through process_madvise get the loop.
 */
static int plain_free(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	struct plain *pl = m->priv;
	struct iovec iov[MEM_FREE_MAX];
	unsigned k = 0;

	if (pl->pidfd >= 0 && n <= MEM_FREE_MAX) {
		for (unsigned i = 0; i < n; i++) {
			char *addr = (char *)m->base + pids[i] * MEM_PAGE_SIZE;
			if (k > 0 && (char *)iov[k - 1].iov_base + iov[k - 1].iov_len == addr) {
				iov[k - 1].iov_len += MEM_PAGE_SIZE; /* neighbours: one range */
				continue;
			}
			iov[k].iov_base = addr;
			iov[k].iov_len = MEM_PAGE_SIZE;
			k++;
		}
		unsigned done = 0;
		while (done < k) {
			long r = syscall(SYS_process_madvise, pl->pidfd, iov + done, k - done,
					 MADV_DONTNEED, 0);
			if (r < 0)
				break;
			/* r bytes were advised: skip the ranges they cover */
			size_t bytes = (size_t)r;
			while (done < k && bytes >= iov[done].iov_len)
				bytes -= iov[done++].iov_len;
			if (done < k && bytes > 0) {
				iov[done].iov_base = (char *)iov[done].iov_base + bytes;
				iov[done].iov_len -= bytes;
			}
			if (r == 0)
				break;
		}
		if (done == k)
			return 0;
		if (errno == EINVAL || errno == ENOSYS || errno == EPERM) {
			close(pl->pidfd); /* not on this kernel: the loop from now on */
			pl->pidfd = -1;
		}
		/* fall through: finish (or redo) with madvise, which is idempotent */
	}
	for (unsigned i = 0; i < n; i++) {
		char *addr = (char *)m->base + pids[i] * MEM_PAGE_SIZE;
		if (madvise(addr, MEM_PAGE_SIZE, MADV_DONTNEED) < 0)
			return -errno;
	}
	return 0;
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
