/*
 * exmap.c: the user-space side of /dev/exmap (see exmap.h), and the exmap
 * backend of mem.h built on it.
 *
 * Lifetime of a struct exmap:
 *
 *   exmap_open:   open device -> SETUP -> mmap interfaces -> mmap region
 *                 (any failure unwinds what was done, in reverse)
 *   per thread:   exmap_iface_acquire -> batches / fault-ins -> release
 *   exmap_close:  munmap region -> munmap interfaces -> close device
 *
 * Only interface hand-out takes a lock (a mutex: threads come and go rarely).
 * Batches and fault-ins touch nothing shared in user space but the device
 * fd: each thread writes only its own interface page.
 */
#include "exmap/exmap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/log.h"
#include "exmap/mem_internal.h"

struct exmap {
	int fd;
	unsigned n_ifaces;
	uint64_t virt_pages;
	char *region;
	struct exmap_user_interface *ifaces[EXMAP_MAX_INTERFACES];

	/* Interface hand-out: a stack of free numbers (LIFO, so a thread that
	 * comes back gets the interface whose kernel-side frame cache is warm)
	 * and who holds what, so a double release cannot put a number on the
	 * stack twice. */
	pthread_mutex_t lock;
	unsigned n_free;
	uint16_t free_stack[EXMAP_MAX_INTERFACES];
	bool taken[EXMAP_MAX_INTERFACES];
};

static enum vs_log_level fail_level(const struct exmap_config *cfg)
{
	return cfg->required ? VS_LOG_ERR : VS_LOG_INFO;
}

/* SETUP failed: say why in words a user can act on. The upstream module
 * answers EBADF for every backing-store problem, so look at the fd
 * ourselves to tell them apart. */
static void log_setup_failure(const struct exmap_config *cfg, const char *path, int err)
{
	enum vs_log_level lvl = fail_level(cfg);
	struct stat st;
	int fl;

	if (err == EBADF && cfg->backing_fd >= 0) {
		if (fstat(cfg->backing_fd, &st) == 0 && !S_ISBLK(st.st_mode)) {
			vs_log(lvl,
			       "exmap: %s refused the image: the module needs a block device "
			       "(put the image on a loop device: losetup --direct-io=on -f IMAGE)",
			       path);
			return;
		}
		fl = fcntl(cfg->backing_fd, F_GETFL);
		if (fl >= 0 && !(fl & O_DIRECT)) {
			vs_log(lvl, "exmap: %s refused the image: it must be opened O_DIRECT",
			       path);
			return;
		}
	}
	vs_log(lvl, "exmap: setup of %s failed (%s; %u interfaces, %llu frames)", path,
	       strerror(err), cfg->max_interfaces, (unsigned long long)cfg->frames);
}

static int open_device(const struct exmap_config *cfg, const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	int err = errno;

	if (fd >= 0)
		return fd;
	if (err == ENOENT || err == ENXIO || err == ENODEV)
		/* Without the module, auto mode says so once (mem.c). */
		vs_log(cfg->required ? VS_LOG_ERR : VS_LOG_DEBUG,
		       "exmap: %s not found (is the exmap kernel module loaded?)", path);
	else
		vs_log(fail_level(cfg), "exmap: cannot open %s: %s", path, strerror(err));
	return -ENODEV;
}

int exmap_open(const struct exmap_config *cfg, struct exmap **ret_x)
{
	const char *path = cfg->path ? cfg->path : EXMAP_DEVICE_PATH;
	struct exmap_setup setup;
	struct exmap *x;
	unsigned i;
	void *p;
	int r;

	if (cfg->max_interfaces == 0 || cfg->max_interfaces > EXMAP_MAX_INTERFACES ||
	    cfg->frames == 0 || cfg->virt_pages == 0 ||
	    cfg->virt_pages > (UINT64_MAX >> EXMAP_PAGE_SHIFT) ||
	    cfg->virt_pages > (1ull << EXMAP_PAGE_BITS)) {
		vs_log(VS_LOG_ERR,
		       "exmap: bad configuration (%u interfaces, %llu frames, %llu pages)",
		       cfg->max_interfaces, (unsigned long long)cfg->frames,
		       (unsigned long long)cfg->virt_pages);
		return -EINVAL;
	}

	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->n_ifaces = cfg->max_interfaces;
	x->virt_pages = cfg->virt_pages;
	r = pthread_mutex_init(&x->lock, NULL);
	if (r) {
		free(x);
		return -r;
	}
	/* Pushed in reverse so that the first acquire hands out 0. */
	for (i = 0; i < x->n_ifaces; i++)
		x->free_stack[i] = (uint16_t)(x->n_ifaces - 1 - i);
	x->n_free = x->n_ifaces;

	x->fd = open_device(cfg, path);
	if (x->fd < 0) {
		r = x->fd;
		goto fail_free;
	}

	memset(&setup, 0, sizeof(setup));
	setup.fd = cfg->backing_fd;
	setup.max_interfaces = (int32_t)cfg->max_interfaces;
	setup.buffer_size = cfg->frames;
	setup.flags = 0;
	if (ioctl(x->fd, EXMAP_IOCTL_SETUP, &setup) < 0) {
		log_setup_failure(cfg, path, errno);
		r = -ENODEV;
		goto fail_close;
	}

	for (i = 0; i < x->n_ifaces; i++) {
		p = mmap(NULL, EXMAP_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, x->fd,
			 (off_t)EXMAP_OFF_INTERFACE(i));
		if (p == MAP_FAILED) {
			vs_log(fail_level(cfg), "exmap: cannot map interface %u of %s: %s", i, path,
			       strerror(errno));
			r = -ENODEV;
			goto fail_unmap;
		}
		x->ifaces[i] = p;
	}

	p = mmap(NULL, (size_t)(cfg->virt_pages << EXMAP_PAGE_SHIFT), PROT_READ | PROT_WRITE,
		 MAP_SHARED, x->fd, 0);
	if (p == MAP_FAILED) {
		vs_log(fail_level(cfg), "exmap: cannot map a region of %llu MiB from %s: %s",
		       (unsigned long long)(cfg->virt_pages >> 8), path, strerror(errno));
		r = -ENOMEM;
		goto fail_unmap;
	}
	x->region = p;
	*ret_x = x;
	return 0;

fail_unmap:
	for (i = 0; i < x->n_ifaces; i++)
		if (x->ifaces[i])
			munmap(x->ifaces[i], EXMAP_PAGE_SIZE);
fail_close:
	close(x->fd);
fail_free:
	pthread_mutex_destroy(&x->lock);
	free(x);
	return r;
}

void exmap_close(struct exmap *x)
{
	if (!x)
		return;
	if (x->region)
		munmap(x->region, (size_t)(x->virt_pages << EXMAP_PAGE_SHIFT));
	for (unsigned i = 0; i < x->n_ifaces; i++)
		if (x->ifaces[i])
			munmap(x->ifaces[i], EXMAP_PAGE_SIZE);
	close(x->fd);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

void *exmap_region(const struct exmap *x)
{
	return x->region;
}

int exmap_fd(const struct exmap *x)
{
	return x->fd;
}

unsigned exmap_max_interfaces(const struct exmap *x)
{
	return x->n_ifaces;
}

int exmap_iface_acquire(struct exmap *x)
{
	int iface = -EBUSY;

	pthread_mutex_lock(&x->lock);
	if (x->n_free > 0) {
		iface = x->free_stack[--x->n_free];
		x->taken[iface] = true;
	}
	pthread_mutex_unlock(&x->lock);
	return iface;
}

void exmap_iface_release(struct exmap *x, int iface)
{
	bool bad = false;

	if (iface < 0)
		return;
	pthread_mutex_lock(&x->lock);
	if ((unsigned)iface >= x->n_ifaces || !x->taken[iface]) {
		bad = true;
	} else {
		x->taken[iface] = false;
		x->free_stack[x->n_free++] = (uint16_t)iface;
	}
	pthread_mutex_unlock(&x->lock);
	if (bad)
		vs_log(VS_LOG_ERR, "exmap: release of interface %d, which is not handed out",
		       iface);
}

static bool iface_ok(const struct exmap *x, int iface)
{
	return iface >= 0 && (unsigned)iface < x->n_ifaces;
}

struct exmap_iov *exmap_iface_iovs(struct exmap *x, int iface)
{
	return iface_ok(x, iface) ? x->ifaces[iface]->iov : NULL;
}

int exmap_action(struct exmap *x, int iface, unsigned opcode, unsigned n)
{
	struct exmap_action_params ap;
	int r;

	if (!iface_ok(x, iface) || n == 0 || n > EXMAP_IFACE_IOVS ||
	    (opcode != EXMAP_OP_ALLOC && opcode != EXMAP_OP_FREE))
		return -EINVAL;
	memset(&ap, 0, sizeof(ap));
	ap.interface = (uint16_t)iface;
	ap.iov_len = (uint16_t)n;
	ap.opcode = (uint16_t)opcode;
	ap.flags = 0;
	do
		r = ioctl(x->fd, EXMAP_IOCTL_ACTION, &ap);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/*
 * Run @opcode over @n pages, one iov per page, at most 512 iovs per ioctl.
 * The pages are pages[i], or first + i when @pages is NULL (a range).
 *
 * One page per iov rather than runs of adjacent pages: eviction batches are
 * scattered, and a per-page result says exactly which page failed.
 */
static int run_batch(struct exmap *x, int iface, unsigned opcode, const uint64_t *pages,
		     uint64_t first, unsigned n)
{
	struct exmap_iov *iov;
	int first_err = 0;
	unsigned done, k, i;
	int r;

	if (!iface_ok(x, iface))
		return -EINVAL;
	/* A page beyond the region would send the kernel outside its mapping:
	 * refuse the whole call before anything has happened. */
	for (i = 0; i < n; i++) {
		uint64_t p = pages ? pages[i] : first + i;
		if (p >= x->virt_pages) {
			vs_log(VS_LOG_ERR, "exmap: page %llu is outside the region (%llu pages)",
			       (unsigned long long)p, (unsigned long long)x->virt_pages);
			return -EINVAL;
		}
	}

	iov = x->ifaces[iface]->iov;
	for (done = 0; done < n; done += k) {
		k = n - done < EXMAP_IFACE_IOVS ? n - done : EXMAP_IFACE_IOVS;
		for (i = 0; i < k; i++)
			iov[i] = exmap_iov_make(pages ? pages[done + i] : first + done + i, 1);
		r = exmap_action(x, iface, opcode, k);
		if (r < 0) {
			vs_log(VS_LOG_ERR, "exmap: %s ioctl on interface %d failed: %s",
			       opcode == EXMAP_OP_FREE ? "FREE" : "ALLOC", iface, strerror(-r));
			return first_err ? first_err : r;
		}
		/* The return value undercounts (ALLOC's out-of-frames iovs are
		 * not counted): the per-iov res is the truth. */
		for (i = 0; i < k; i++) {
			int res = iov[i].res;
			if (res >= 0)
				continue;
			if (res == -ENOMEM && opcode == EXMAP_OP_ALLOC) {
				first_err = first_err ? first_err : res;
				break; /* expected; the caller evicts */
			}
			/* One line per failing batch, not per page. */
			if (!first_err)
				vs_log(VS_LOG_ERR, "exmap: %s of page %llu failed: %s",
				       opcode == EXMAP_OP_FREE ? "FREE" : "ALLOC",
				       (unsigned long long)(pages ? pages[done + i]
								  : first + done + i),
				       strerror(-res));
			first_err = first_err ? first_err : res;
		}
		/* Out of frames: later chunks would only fail the same way. A
		 * FREE keeps going, so that every frame that can come back does. */
		if (first_err == -ENOMEM && opcode == EXMAP_OP_ALLOC)
			return first_err;
	}
	return first_err;
}

int exmap_alloc_batch(struct exmap *x, int iface, const uint64_t *pages, unsigned n)
{
	return run_batch(x, iface, EXMAP_OP_ALLOC, pages, 0, n);
}

int exmap_free_batch(struct exmap *x, int iface, const uint64_t *pages, unsigned n)
{
	return run_batch(x, iface, EXMAP_OP_FREE, pages, 0, n);
}

int exmap_fault_in(struct exmap *x, int iface, unsigned opcode, uint64_t page, unsigned n)
{
	size_t want = (size_t)n << EXMAP_PAGE_SHIFT;
	ssize_t got;

	/* Linux moves at most MAX_RW_COUNT (2 GiB - 4 KiB) per read: a longer
	 * one would come back short and be mistaken for "no free frames". */
	if (!iface_ok(x, iface) || (opcode != EXMAP_OP_READ && opcode != EXMAP_OP_ALLOC) ||
	    n == 0 || n > EXMAP_FAULT_MAX_PAGES || page >= x->virt_pages ||
	    n > x->virt_pages - page)
		return -EINVAL;
	do
		got = pread(x->fd, x->region + (page << EXMAP_PAGE_SHIFT), want,
			    (off_t)EXMAP_POS(iface, opcode));
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return -errno;
	if ((size_t)got == want)
		return 0;
	/* Short: the module ran out of frames. A multi-page fault-in may have
	 * mapped part of the range (unread) before it stopped, and a retry
	 * over mapped pages would come up short again, forever: unmap the
	 * range so that the retry starts from where this call did. One page
	 * is all or nothing, so it needs no undo. */
	if (n > 1)
		run_batch(x, iface, EXMAP_OP_FREE, NULL, page, n);
	return -ENOMEM;
}

int exmap_stats_get(struct exmap *x, struct exmap_user_stats *ret_stats)
{
	struct exmap_user_stats st;

	memset(&st, 0, sizeof(st));
	if (ioctl(x->fd, EXMAP_IOCTL_STATS, &st) < 0)
		return -errno;
	*ret_stats = st;
	return 0;
}

/* ------------------------------------------------------------------ */
/* The exmap backend of mem.h                                          */

static int mem_exmap_open(struct mem *m, const struct mem_config *cfg)
{
	struct exmap_config xc = {
	    .path = NULL,
	    .backing_fd = cfg->fd,
	    .max_interfaces = cfg->max_threads,
	    .frames = cfg->frames,
	    .virt_pages = cfg->virt_pages,
	    .required = cfg->mode == MEM_EXMAP,
	};
	struct exmap *x;
	int r;

	if (xc.max_interfaces > EXMAP_MAX_INTERFACES) {
		vs_log(VS_LOG_INFO, "exmap: %u threads asked for, the module allows %u interfaces",
		       xc.max_interfaces, EXMAP_MAX_INTERFACES);
		xc.max_interfaces = EXMAP_MAX_INTERFACES;
	}
	r = exmap_open(&xc, &x);
	if (r < 0)
		return r;
	m->priv = x;
	m->base = exmap_region(x);
	return 0;
}

static void mem_exmap_close(struct mem *m)
{
	exmap_close(m->priv);
	m->priv = NULL;
	m->base = NULL;
}

static int mem_exmap_thread_attach(struct mem *m)
{
	return exmap_iface_acquire(m->priv);
}

static void mem_exmap_thread_detach(struct mem *m, int iface)
{
	exmap_iface_release(m->priv, iface);
}

static int mem_exmap_read(struct mem *m, int iface, uint64_t pid)
{
	return exmap_fault_in(m->priv, iface, EXMAP_OP_READ, pid, 1);
}

static int mem_exmap_alloc(struct mem *m, int iface, uint64_t pid)
{
	int r = exmap_alloc_batch(m->priv, iface, &pid, 1);

	if (r < 0)
		return r;
	/* The module recycles frames without clearing them, and an already
	 * mapped page is skipped: either way the page may hold old bytes,
	 * and mem_alloc promises zeros. */
	memset((char *)m->base + (pid << EXMAP_PAGE_SHIFT), 0, EXMAP_PAGE_SIZE);
	return 0;
}

static int mem_exmap_alloc_many(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	int r = exmap_alloc_batch(m->priv, iface, pids, n);

	if (r < 0)
		return r;
	for (unsigned i = 0; i < n; i++) /* as in mem_exmap_alloc */
		memset((char *)m->base + (pids[i] << EXMAP_PAGE_SHIFT), 0, EXMAP_PAGE_SIZE);
	return 0;
}

static int mem_exmap_free(struct mem *m, int iface, const uint64_t *pids, unsigned n)
{
	return exmap_free_batch(m->priv, iface, pids, n);
}

const struct mem_ops mem_exmap_ops = {
    .name = "exmap",
    .faults_on_evicted = true,
    .open = mem_exmap_open,
    .close = mem_exmap_close,
    .thread_attach = mem_exmap_thread_attach,
    .thread_detach = mem_exmap_thread_detach,
    .read = mem_exmap_read,
    .alloc = mem_exmap_alloc,
    .free = mem_exmap_free,
    .alloc_many = mem_exmap_alloc_many,
};
