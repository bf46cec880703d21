/*
 * exmap_emu.c: the emulated /dev/exmap (see exmap_emu.h).
 */
#include "tests/exmap/exmap_emu.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct emu emu;
static pthread_mutex_t emu_lock = PTHREAD_MUTEX_INITIALIZER;

/* The wrappers' prototypes (the linker resolves the __real_ ones). */
int __real_open(const char *path, int flags, ...);
int __real_close(int fd);
int __real_ioctl(int fd, unsigned long req, ...);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd, long off);
long __real_pread(int fd, void *buf, size_t count, long pos);
int __wrap_open(const char *path, int flags, ...);
int __wrap_close(int fd);
int __wrap_open64(const char *path, int flags, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, long off);
long __wrap_pread(int fd, void *buf, size_t count, long pos);
long __wrap_pread64(int fd, void *buf, size_t count, long pos);

/* Drop the state of the previous device (its mappings belong to the code
 * under test, which has unmapped them or will). */
static void emu_forget_device(void)
{
	if (emu.kiface)
		munmap(emu.kiface, sizeof(struct exmap_user_interface) * EXMAP_MAX_INTERFACES);
	emu.kiface = NULL;
	if (emu.iface_memfd > 0)
		__real_close(emu.iface_memfd);
	emu.iface_memfd = -1;
	free(emu.mapped);
	emu.mapped = NULL;
	emu.region = NULL;
	emu.region_pages = 0;
	emu.frames_free = 0;
	emu.setup_done = false;
}

void emu_reset(void)
{
	emu_forget_device();
	memset(&emu, 0, sizeof(emu));
	emu.fd = -1;
	emu.iface_memfd = -1;
	emu.fail_iface_map = -1;
	emu.fail_page = UINT64_MAX;
}

uint64_t emu_frames_free(void)
{
	uint64_t n;
	pthread_mutex_lock(&emu_lock);
	n = emu.frames_free;
	pthread_mutex_unlock(&emu_lock);
	return n;
}

bool emu_page_mapped(uint64_t page)
{
	bool r;
	pthread_mutex_lock(&emu_lock);
	r = emu.mapped && page < emu.region_pages && emu.mapped[page];
	pthread_mutex_unlock(&emu_lock);
	return r;
}

/* ---- frames: a frame under a page = the page made accessible ---- */

static char *page_addr(uint64_t page)
{
	return emu.region + page * EXMAP_PAGE_SIZE;
}

/* Called with emu_lock held. Returns false when no frame is free. */
static bool map_page(uint64_t page)
{
	if (emu.frames_free == 0)
		return false;
	emu.frames_free--;
	emu.mapped[page] = 1;
	if (mprotect(page_addr(page), EXMAP_PAGE_SIZE, PROT_READ | PROT_WRITE) != 0)
		abort();
	memset(page_addr(page), EMU_JUNK, EXMAP_PAGE_SIZE);
	return true;
}

static void unmap_page(uint64_t page)
{
	emu.mapped[page] = 0;
	emu.frames_free++;
	madvise(page_addr(page), EXMAP_PAGE_SIZE, MADV_DONTNEED);
	if (mprotect(page_addr(page), EXMAP_PAGE_SIZE, PROT_NONE) != 0)
		abort();
}

/* ---- open ---- */

static int emu_open(const char *path, int flags)
{
	int fd;

	if (emu.absent) {
		errno = ENOENT;
		return -1;
	}
	fd = __real_open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	pthread_mutex_lock(&emu_lock);
	emu_forget_device();
	emu.fd = fd;
	emu.opens++;
	emu.open_flags = flags;
	emu.seq++;
	pthread_mutex_unlock(&emu_lock);
	return fd;
}

int __wrap_open(const char *path, int flags, ...)
{
	va_list ap;
	int mode;

	if (strcmp(path, EXMAP_DEVICE_PATH) == 0)
		return emu_open(path, flags);
	if (!(flags & O_CREAT) && (flags & O_TMPFILE) != O_TMPFILE)
		return __real_open(path, flags);
	va_start(ap, flags);
	mode = va_arg(ap, int);
	va_end(ap);
	return __real_open(path, flags, mode);
}

int __wrap_open64(const char *path, int flags, ...)
{
	va_list ap;
	int mode;

	if (strcmp(path, EXMAP_DEVICE_PATH) == 0)
		return emu_open(path, flags);
	if (!(flags & O_CREAT) && (flags & O_TMPFILE) != O_TMPFILE)
		return __real_open64(path, flags);
	va_start(ap, flags);
	mode = va_arg(ap, int);
	va_end(ap);
	return __real_open64(path, flags, mode);
}

/* Closing the device fd ends the device: later calls on a reused number
 * must reach libc, not the emulation. */
int __wrap_close(int fd)
{
	if (fd >= 0 && fd == emu.fd) {
		pthread_mutex_lock(&emu_lock);
		emu.fd = -1;
		emu.closes++;
		pthread_mutex_unlock(&emu_lock);
	}
	return __real_close(fd);
}

/* ---- ioctl ---- */

static int emu_setup(const struct exmap_setup *s)
{
	struct stat st;

	emu.setup_calls++;
	emu.setup_seq = ++emu.seq;
	emu.setup = *s;
	if (emu.setup_done)
		return -EBUSY;
	if (s->fd >= 0) {
		if (fstat(s->fd, &st) != 0)
			return -EBADF;
		if (emu.want_blockdev && !S_ISBLK(st.st_mode))
			return -EBADF;
	}
	if (s->max_interfaces < 0 || s->max_interfaces > EXMAP_MAX_INTERFACES)
		return -EINVAL;
	if (s->flags != 0)
		return -EINVAL;
	emu.iface_memfd = memfd_create("exmap-emu-ifaces", MFD_CLOEXEC);
	if (emu.iface_memfd < 0 ||
	    ftruncate(emu.iface_memfd, sizeof(struct exmap_user_interface) * EXMAP_MAX_INTERFACES))
		abort();
	emu.kiface = __real_mmap(NULL, sizeof(struct exmap_user_interface) * EXMAP_MAX_INTERFACES,
				 PROT_READ | PROT_WRITE, MAP_SHARED, emu.iface_memfd, 0);
	if (emu.kiface == MAP_FAILED)
		abort();
	emu.frames_free = s->buffer_size;
	emu.setup_done = true;
	return 0;
}

/* One iov of ALLOC or FREE. Returns its res; *stop when ALLOC ran dry. */
static int emu_iov(unsigned opcode, struct exmap_iov *v, bool *stop)
{
	uint64_t page = v->page, len = v->len, n = 0;
	int res = 0;

	if (page + len > emu.region_pages) {
		res = -EINVAL;
		goto out;
	}
	for (uint64_t p = page; p < page + len; p++) {
		if (p == emu.fail_page) {
			res = emu.fail_res;
			continue;
		}
		if (opcode == EXMAP_OP_ALLOC) {
			if (emu.mapped[p])
				continue; /* already mapped: skipped */
			if (!map_page(p)) {
				*stop = true;
				res = -ENOMEM;
				break;
			}
		} else {
			if (!emu.mapped[p])
				continue;
			unmap_page(p);
		}
		n++;
	}
out:
	v->value = 0;
	v->res = res;
	v->pages = (int16_t)n;
	return res;
}

static int emu_action(const struct exmap_action_params *ap)
{
	struct emu_action *rec = NULL;
	struct exmap_iov *iov;
	bool stop = false;
	int failed = 0;
	unsigned i;

	if (!emu.setup_done || !emu.region)
		return -EBADF;
	if (ap->interface >= (unsigned)emu.setup.max_interfaces)
		return -EINVAL;
	if (ap->opcode != EXMAP_OP_ALLOC && ap->opcode != EXMAP_OP_FREE)
		return -EINVAL;
	if (ap->iov_len > EXMAP_IFACE_IOVS || ap->flags != 0) {
		/* The module would read past the interface page. */
		emu.violations++;
		return -EINVAL;
	}
	iov = emu.kiface[ap->interface].iov;
	if (emu.n_actions < EMU_MAX_ACTIONS) {
		rec = &emu.actions[emu.n_actions++];
		rec->iface = ap->interface;
		rec->opcode = ap->opcode;
		rec->iov_len = ap->iov_len;
		rec->log_start = emu.n_iov_log;
	}
	for (i = 0; i < ap->iov_len; i++) {
		if (emu.n_iov_log < EMU_MAX_IOV_LOG)
			emu.iov_log[emu.n_iov_log++] = iov[i].value;
		if (stop) {
			/* Upstream: the rest are -ENOMEM and not counted. */
			iov[i].value = 0;
			iov[i].res = -ENOMEM;
			continue;
		}
		if (emu_iov(ap->opcode, &iov[i], &stop) < 0 && !stop)
			failed++;
	}
	if (rec)
		rec->ret = failed;
	return failed;
}

static int emu_ioctl(unsigned long req, void *arg)
{
	struct exmap_user_stats st;

	switch (req) {
	case EXMAP_IOCTL_SETUP:
		return emu_setup(arg);
	case EXMAP_IOCTL_ACTION:
		return emu_action(arg);
	case EXMAP_IOCTL_STATS:
		memset(&st, 0, sizeof(st));
		st.buffer_size = emu.setup.buffer_size;
		st.alloc_count = emu.setup.buffer_size - emu.frames_free;
		st.max_interfaces = (uint32_t)emu.setup.max_interfaces;
		st.flags = 1;
		memcpy(arg, &st, sizeof(st));
		return 0;
	default:
		return -EINVAL;
	}
}

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	unsigned iface = EXMAP_MAX_INTERFACES;
	va_list ap;
	void *arg;
	int r;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fd < 0 || fd != emu.fd)
		return __real_ioctl(fd, req, arg);

	/* Two threads on one interface is the bug interfaces exist to
	 * prevent: notice it before taking the (kernel-like) lock. */
	if (req == EXMAP_IOCTL_ACTION) {
		iface = ((struct exmap_action_params *)arg)->interface;
		if (iface < EXMAP_MAX_INTERFACES && atomic_exchange(&emu.busy[iface], 1))
			atomic_fetch_add(&emu.overlaps, 1);
	}
	pthread_mutex_lock(&emu_lock);
	r = emu_ioctl(req, arg);
	pthread_mutex_unlock(&emu_lock);
	if (iface < EXMAP_MAX_INTERFACES)
		atomic_store(&emu.busy[iface], 0);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return r;
}

/* ---- mmap ---- */

static void *emu_mmap(size_t len, int prot, int flags, uint64_t off)
{
	struct emu_mmap rec = {.off = off, .len = len, .prot = prot, .flags = flags};
	void *p = MAP_FAILED;
	int err = EINVAL;

	pthread_mutex_lock(&emu_lock);
	rec.seq = ++emu.seq;
	if (off == 0) {
		emu.region_maps++;
		emu.region_map = rec;
		if (emu.region || len == 0 || len % EXMAP_PAGE_SIZE)
			goto out;
		p = __real_mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				-1, 0);
		if (p == MAP_FAILED) {
			err = ENOMEM;
			goto out;
		}
		emu.region = p;
		emu.region_pages = len / EXMAP_PAGE_SIZE;
		emu.mapped = calloc(emu.region_pages, 1);
		emu.region_map.addr = p;
	} else if ((off & 0xe000000000000000ull) == 0xe000000000000000ull) {
		uint64_t i = (off & ~0xe000000000000000ull) >> EXMAP_PAGE_SHIFT;

		if (emu.n_iface_maps < EXMAP_MAX_INTERFACES + 8)
			emu.iface_maps[emu.n_iface_maps++] = rec;
		if (!emu.setup_done || i >= (uint64_t)emu.setup.max_interfaces ||
		    len != EXMAP_PAGE_SIZE || (off & (EXMAP_PAGE_SIZE - 1)))
			goto out;
		if ((int)i == emu.fail_iface_map) {
			err = ENOMEM;
			goto out;
		}
		p = __real_mmap(NULL, len, prot, flags, emu.iface_memfd,
				(long)(i * sizeof(struct exmap_user_interface)));
		if (p == MAP_FAILED)
			err = errno;
		else
			emu.iface_maps[emu.n_iface_maps - 1].addr = p;
	}
out:
	pthread_mutex_unlock(&emu_lock);
	if (p == MAP_FAILED)
		errno = err;
	return p;
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, long off)
{
	if (fd >= 0 && fd == emu.fd)
		return emu_mmap(len, prot, flags, (uint64_t)off);
	return __real_mmap(addr, len, prot, flags, fd, off);
}

void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, long off)
{
	if (fd >= 0 && fd == emu.fd)
		return emu_mmap(len, prot, flags, (uint64_t)off);
	return __real_mmap64(addr, len, prot, flags, fd, off);
}

/* ---- pread: fault-in ---- */

static long emu_pread(void *buf, size_t count, uint64_t pos)
{
	unsigned iface = pos & 0xff, op = (pos >> 8) & 0xff;
	uint64_t first, n, got = 0;
	struct emu_pread *rec = NULL;
	long ret;

	pthread_mutex_lock(&emu_lock);
	if (emu.n_preads < EMU_MAX_PREADS) {
		rec = &emu.preads[emu.n_preads++];
		rec->pos = pos;
		rec->count = count;
		rec->buf = buf;
	}
	if ((op != EXMAP_OP_READ && op != EXMAP_OP_ALLOC) || !emu.setup_done || !emu.region ||
	    iface >= (unsigned)emu.setup.max_interfaces || (char *)buf < emu.region ||
	    ((char *)buf - emu.region) % EXMAP_PAGE_SIZE || count % EXMAP_PAGE_SIZE ||
	    (uint64_t)((char *)buf - emu.region) + count > emu.region_pages * EXMAP_PAGE_SIZE) {
		ret = -EINVAL;
		goto out;
	}
	first = (uint64_t)((char *)buf - emu.region) / EXMAP_PAGE_SIZE;
	n = count / EXMAP_PAGE_SIZE;
	/* Insert frames; a mapped page or an empty pool stops it short, and
	 * what was inserted stays (as upstream). */
	for (got = 0; got < n; got++)
		if (emu.mapped[first + got] || !map_page(first + got))
			break;
	if (got < n) {
		ret = 0;
		goto out;
	}
	if (op == EXMAP_OP_READ) {
		long r = emu.fail_reads ? -1
					: __real_pread64(emu.setup.fd, buf, count,
							 (long)(first * EXMAP_PAGE_SIZE));
		if (r != (long)count) {
			for (uint64_t p = first; p < first + n; p++)
				unmap_page(p);
			ret = 0;
			goto out;
		}
	}
	ret = (long)count;
out:
	if (rec)
		rec->ret = ret;
	pthread_mutex_unlock(&emu_lock);
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return ret;
}

long __wrap_pread(int fd, void *buf, size_t count, long pos)
{
	if (fd >= 0 && fd == emu.fd)
		return emu_pread(buf, count, (uint64_t)pos);
	return __real_pread(fd, buf, count, pos);
}

long __wrap_pread64(int fd, void *buf, size_t count, long pos)
{
	if (fd >= 0 && fd == emu.fd)
		return emu_pread(buf, count, (uint64_t)pos);
	return __real_pread64(fd, buf, count, pos);
}
