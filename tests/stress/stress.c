/*
 * stress.c - vs_stress: a mixed, randomized load on a mounted filesystem,
 * checked byte for byte against an in-memory model, with a watchdog that
 * turns a stuck daemon into a stack dump instead of a silent CI timeout.
 *
 *   vs_stress MOUNTPOINT --seconds S --threads N --seed X [--daemon-pid PID]
 *             [--big-mb M] [--hang-seconds H] [--manifest FILE] [--lock-dump FILE]
 *   vs_stress MOUNTPOINT --verify FILE
 *
 * Layout on the (empty) mount:
 *   wI/f0..f3   worker I's data files: random pwrite/pread, truncate, fsync,
 *               O_DIRECT and mmap reads, unlink+recreate
 *   wI/big      worker I's big file, written and read sequentially in full
 *               (M MiB each, more than the pool holds)
 *   shared/     one directory all workers churn: wI-nK (create, unlink,
 *               rename, link, mkdir/rmdir of a small subtree) and wI-sK (a
 *               stable population that makes the directory big); every
 *               worker lists it with stat of each entry, as ls -l does
 *
 * Each worker touches only names it owns, so its model is exact; other
 * workers' names are only listed and stat'ed (ENOENT tolerated). Each
 * worker's operation sequence depends only on --seed and its number.
 *
 * The watchdog (a separate process, see watchdog_start) prints progress
 * every 10 s; after H/3 s without a completed operation a STALL snapshot
 * (each worker's current operation, the daemon's kernel stacks, its own
 * lock-holder table when --lock-dump names the file it writes it to, and
 * its gdb stacks), after H s (default 30) the HANG report (the same, plus
 * our own kernel stacks) and exit status 3.
 *
 * Exit status: 0 all checks passed, 1 a mismatch or unexpected error,
 * 2 usage, 3 hang.
 * --manifest writes every entry's type, size, link count and content hash
 * at the end; --verify walks a (remounted) filesystem against such a file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MiB	   (1024 * 1024)
#define NFILES	   4	       /* data files per worker */
#define MAX_FILE   (4 * MiB)   /* largest data file */
#define MAX_IO	   MiB	       /* largest single pwrite/pread */
#define NSLOTS	   48	       /* churned names per worker in shared/ */
#define NSTABLE	   128	       /* stable names per worker in shared/ */
#define SMALL_MAX  (16 * 1024) /* content of a shared/ file */
#define BIG_CHUNK  MiB
#define PATH_LEN   512
#define MAX_THREAD 64

/* clang-format off */
enum op_kind {
	OP_WRITE, OP_READ, OP_TRUNC, OP_FSYNC, OP_DIRECT, OP_MMAP, OP_RECREATE,
	OP_CREATE, OP_UNLINK, OP_RENAME, OP_LINK, OP_MKDIR, OP_RMDIR, OP_LS,
	OP_STAT, OP_BIGW, OP_BIGR, OP_STATS, OP_KINDS
};
static const char *const op_names[OP_KINDS] = {
	"write", "read", "trunc", "fsync", "direct", "mmap", "recreate", "create", "unlink",
	"rename", "link", "mkdir", "rmdir", "ls", "stat", "bigw", "bigr", "stats"};
/* clang-format on */

enum slot_type { S_NONE, S_FILE, S_DIR };

/* A file in shared/: content is regenerated from (seed, len); nlink counts
 * the slots naming it. A directory slot's subtree has one file, a/f. */
struct obj {
	uint64_t seed;
	uint32_t len, nlink;
};
struct slot {
	enum slot_type type;
	int obj; /* S_FILE: index into objs; S_DIR: the subtree file's object */
};

struct dfile {
	char path[PATH_LEN];
	int fd;
	size_t size;
	uint8_t *model; /* MAX_FILE bytes; zero past size, always */
};

struct worker {
	int id;
	uint64_t rng, big_seed;
	pthread_t thread;
	char *op; /* what it is doing now: its slot in the shared page */
	struct dfile files[NFILES];
	struct slot slots[NSLOTS];
	struct obj objs[2 * NSLOTS];
	char big_path[PATH_LEN];
	uint64_t big_gen;    /* 0: not written yet */
	uint8_t *buf, *buf2; /* MAX_IO each, 4 KiB aligned (O_DIRECT) */
	bool direct_ok;
	unsigned long n[OP_KINDS];
};

static struct {
	const char *mnt;
	double seconds;
	int threads, big_mb, hang_seconds;
	uint64_t seed;
	pid_t daemon;
	const char *manifest, *verify;
	const char *lock_dump; /* the daemon's VS_LOCKDUMP (engine/lockorder.h) */
} opt = {.seconds = 10, .threads = 4, .big_mb = 64, .hang_seconds = 30, .seed = 1};

#define OP_LEN (PATH_LEN + 128)

/* Shared with the watchdog process (see watchdog_start). */
struct shared {
	atomic_ulong progress; /* bumped by every completed operation */
	atomic_int hang;       /* the watchdog reported a hang */
	atomic_int done;       /* the run is over: the watchdog may exit */
	pid_t driver;
	char op[MAX_THREAD][OP_LEN];
};
static struct shared *sh;

static struct worker *workers;
static atomic_int g_running;	  /* workers not finished yet */
static atomic_ulong g_mismatches; /* wrong bytes, sizes, names */
static atomic_ulong g_errors;	  /* unexpected syscall failures */
static atomic_ulong g_stats_torn; /* see read_stats */
static atomic_bool g_stop;

/* ---- small helpers --------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t splitmix(uint64_t *s)
{
	return mix64(*s += 0x9e3779b97f4a7c15ULL);
}

static uint64_t rnd(struct worker *w, uint64_t below)
{
	return below ? splitmix(&w->rng) % below : 0;
}

/* Sizes from 1 byte to max, log-uniform: small and large I/O equally often. */
static size_t rnd_size(struct worker *w, size_t max)
{
	size_t cap = (size_t)1 << rnd(w, 21);
	size_t n = 1 + rnd(w, cap);

	return n > max ? max : n;
}

/* Deterministic content: the bytes of a splitmix stream from seed. */
static void fill_pattern(uint8_t *buf, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = splitmix(&seed);

		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

/* The big file's content: each 8-byte word a function of its offset and
 * the generation, so a full pass needs no model memory. */
static void fill_big(uint8_t *buf, uint64_t off, size_t len, uint64_t seed, uint64_t gen)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = mix64(seed ^ (gen * 0xd6e8feb86659fd93ULL) ^ ((off + i) / 8));

		memcpy(buf + i, &v, 8);
	}
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static void set_op(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	/* No lock: the watchdog reads it when the worker is stuck in a
	 * system call, and a torn string elsewhere would only be cosmetic. */
	va_start(ap, fmt);
	vsnprintf(w->op, OP_LEN, fmt, ap);
	va_end(ap);
}

static void op_done(struct worker *w, enum op_kind k)
{
	w->n[k]++;
	atomic_fetch_add_explicit(&sh->progress, 1, memory_order_relaxed);
}

/* An unexpected error: report it and stop every worker. Returns -1. */
static int fail(struct worker *w, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL worker %d: %s\n", w ? w->id : -1, msg);
	atomic_fetch_add(&g_errors, 1);
	atomic_store(&g_stop, true);
	return -1;
}

static int sys_fail(struct worker *w, const char *what, const char *path)
{
	int e = errno;

	return fail(w, "%s %s: %s (errno %d)", what, path, strerror(e), e);
}

/* sys_fail for an error with a descriptor still open: errno survives close. */
static int sys_fail_close(struct worker *w, int fd, const char *what, const char *path)
{
	int e = errno;

	close(fd);
	errno = e;
	return sys_fail(w, what, path);
}

static void hex16(char *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && i < 16; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

/* Compares what was read with what the model says; on a difference prints
 * the file, the first differing offset and 16 bytes of each side. */
static int check_bytes(struct worker *w, const char *path, uint64_t off, const uint8_t *want,
		       const uint8_t *got, size_t len)
{
	char ws[40] = "", gs[40] = "";
	size_t i, last, ndiff = 0;

	if (memcmp(want, got, len) == 0)
		return 0;
	for (i = 0; want[i] == got[i]; i++)
		;
	for (last = i; last < len; last++)
		ndiff += want[last] != got[last];
	for (last = len - 1; want[last] == got[last]; last--)
		;
	hex16(ws, want + i, len - i);
	hex16(gs, got + i, len - i);
	fprintf(stderr,
		"MISMATCH worker %d: %s offset %" PRIu64 " (read of %zu at %" PRIu64 "): "
		"expected %s got %s; %zu bytes differ, last at offset %" PRIu64 "\n",
		w->id, path, off + i, len, off, ws, gs, ndiff, off + last);
	atomic_fetch_add(&g_mismatches, 1);
	atomic_store(&g_stop, true);
	return -1;
}

static int mismatch(struct worker *w, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "MISMATCH worker %d: %s\n", w->id, msg);
	atomic_fetch_add(&g_mismatches, 1);
	atomic_store(&g_stop, true);
	return -1;
}

/* pread until len bytes or end of file; returns the count or -1. */
static ssize_t pread_full(int fd, uint8_t *buf, size_t len, off_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = pread(fd, buf + got, len - got, off + (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int pwrite_full(int fd, const uint8_t *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pwrite(fd, buf + done, len - done, off + (off_t)done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* ---- worker data files ----------------------------------------------------- */

static int op_write(struct worker *w, struct dfile *f)
{
	size_t len = rnd_size(w, MAX_IO);
	/* Mostly near the end of the file (extends, overwrites); sometimes
	 * anywhere, which leaves holes. */
	size_t span = rnd(w, 4) ? f->size + 64 * 1024 : MAX_FILE;
	size_t off;

	if (span > MAX_FILE - len)
		span = MAX_FILE - len;
	off = rnd(w, span + 1);
	fill_pattern(w->buf, len, splitmix(&w->rng));
	set_op(w, "pwrite %s off=%zu len=%zu", f->path, off, len);
	if (pwrite_full(f->fd, w->buf, len, (off_t)off) < 0)
		return sys_fail(w, "pwrite", f->path);
	memcpy(f->model + off, w->buf, len);
	if (off + len > f->size)
		f->size = off + len;
	op_done(w, OP_WRITE);
	return 0;
}

static int op_read(struct worker *w, struct dfile *f)
{
	size_t len = rnd_size(w, MAX_IO);
	size_t off = rnd(w, f->size + 4096);
	size_t want = off >= f->size ? 0 : (f->size - off < len ? f->size - off : len);
	ssize_t got;

	set_op(w, "pread %s off=%zu len=%zu", f->path, off, len);
	got = pread_full(f->fd, w->buf, len, (off_t)off);
	if (got < 0)
		return sys_fail(w, "pread", f->path);
	if ((size_t)got != want)
		return mismatch(w,
				"%s: pread of %zu at %zu returned %zd bytes, expected %zu "
				"(model size %zu)",
				f->path, len, off, got, want, f->size);
	if (check_bytes(w, f->path, off, f->model + off, w->buf, want))
		return -1;
	op_done(w, OP_READ);
	return 0;
}

static int op_trunc(struct worker *w, struct dfile *f)
{
	size_t size = rnd(w, 2) ? rnd(w, f->size + 1) : f->size + rnd(w, MAX_FILE - f->size + 1);
	struct stat st;

	set_op(w, "ftruncate %s %zu -> %zu", f->path, f->size, size);
	if (ftruncate(f->fd, (off_t)size) < 0)
		return sys_fail(w, "ftruncate", f->path);
	if (size < f->size)
		memset(f->model + size, 0, f->size - size);
	f->size = size;
	set_op(w, "fstat %s", f->path);
	if (fstat(f->fd, &st) < 0)
		return sys_fail(w, "fstat", f->path);
	if ((size_t)st.st_size != size)
		return mismatch(w, "%s: size %lld after ftruncate to %zu", f->path,
				(long long)st.st_size, size);
	op_done(w, OP_TRUNC);
	return 0;
}

static int op_fsync(struct worker *w, struct dfile *f)
{
	bool data = rnd(w, 2);

	set_op(w, "%s %s", data ? "fdatasync" : "fsync", f->path);
	if ((data ? fdatasync(f->fd) : fsync(f->fd)) < 0)
		return sys_fail(w, data ? "fdatasync" : "fsync", f->path);
	op_done(w, OP_FSYNC);
	return 0;
}

/* O_DIRECT read of whole 4 KiB blocks through a second descriptor: the
 * kernel writes cached dirty pages back first, so it must see the model. */
static int op_direct(struct worker *w, struct dfile *f)
{
	size_t blocks = f->size / 4096, off, len, want;
	ssize_t got;
	int fd;

	if (!w->direct_ok || blocks == 0)
		return op_read(w, f);
	off = 4096 * rnd(w, blocks);
	len = 4096 * (1 + rnd(w, 64));
	want = f->size - off < len ? f->size - off : len;
	set_op(w, "open O_DIRECT %s", f->path);
	fd = open(f->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		w->direct_ok = false;
		return 0;
	}
	if (fd < 0)
		return sys_fail(w, "open O_DIRECT", f->path);
	set_op(w, "pread O_DIRECT %s off=%zu len=%zu", f->path, off, len);
	got = pread_full(fd, w->buf2, len, (off_t)off);
	close(fd);
	if (got < 0)
		return sys_fail(w, "pread O_DIRECT", f->path);
	if ((size_t)got != want)
		return mismatch(w, "%s: O_DIRECT pread of %zu at %zu returned %zd, expected %zu",
				f->path, len, off, got, want);
	if (check_bytes(w, f->path, off, f->model + off, w->buf2, want))
		return -1;
	op_done(w, OP_DIRECT);
	return 0;
}

static int op_mmap(struct worker *w, struct dfile *f)
{
	size_t pages = (f->size + 4095) / 4096, off, len;
	uint8_t *p;
	int r;

	if (pages == 0)
		return op_read(w, f);
	off = 4096 * rnd(w, pages);
	len = rnd_size(w, 256 * 1024);
	if (len > f->size - off)
		len = f->size - off;
	set_op(w, "mmap %s off=%zu len=%zu", f->path, off, len);
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, f->fd, (off_t)off);
	if (p == MAP_FAILED)
		return sys_fail(w, "mmap", f->path);
	r = check_bytes(w, f->path, off, f->model + off, p, len);
	munmap(p, len);
	if (r == 0)
		op_done(w, OP_MMAP);
	return r;
}

/* unlink + O_EXCL create, or open with O_TRUNC: the file starts empty. */
static int op_recreate(struct worker *w, struct dfile *f)
{
	bool unlink_first = rnd(w, 2);

	set_op(w, "close+%s %s", unlink_first ? "unlink+create" : "O_TRUNC", f->path);
	close(f->fd);
	if (unlink_first && unlink(f->path) < 0)
		return sys_fail(w, "unlink", f->path);
	f->fd =
	    open(f->path, O_RDWR | O_CREAT | O_CLOEXEC | (unlink_first ? O_EXCL : O_TRUNC), 0644);
	if (f->fd < 0)
		return sys_fail(w, "open", f->path);
	memset(f->model, 0, f->size);
	f->size = 0;
	op_done(w, OP_RECREATE);
	return 0;
}

/* ---- the big file: streams past the pool ----------------------------------- */

static int open_big(struct worker *w, int flags, bool *direct)
{
	int fd = -1;

	*direct = w->direct_ok && rnd(w, 3) == 0;
	if (*direct) {
		fd = open(w->big_path, flags | O_DIRECT | O_CLOEXEC, 0644);
		if (fd < 0 && errno == EINVAL)
			*direct = w->direct_ok = false;
	}
	if (!*direct)
		fd = open(w->big_path, flags | O_CLOEXEC, 0644);
	return fd;
}

/* A whole pass, never abandoned half way (the model is one generation for
 * the whole file), one progress tick per chunk. */
static int op_big(struct worker *w)
{
	uint64_t size = (uint64_t)opt.big_mb * MiB;
	bool write = w->big_gen == 0 || rnd(w, 2), direct;
	int fd = open_big(w, write ? O_WRONLY | O_CREAT : O_RDONLY, &direct);

	if (fd < 0)
		return sys_fail(w, "open", w->big_path);
	if (write)
		w->big_gen++;
	for (uint64_t off = 0; off < size && !atomic_load(&g_errors); off += BIG_CHUNK) {
		set_op(w, "%s%s %s off=%" PRIu64 " len=%d (gen %" PRIu64 ")",
		       write ? "pwrite" : "pread", direct ? " O_DIRECT" : "", w->big_path, off,
		       BIG_CHUNK, w->big_gen);
		if (write) {
			fill_big(w->buf, off, BIG_CHUNK, w->big_seed, w->big_gen);
			if (pwrite_full(fd, w->buf, BIG_CHUNK, (off_t)off) < 0)
				return sys_fail_close(w, fd, "pwrite", w->big_path);
			op_done(w, OP_BIGW);
			continue;
		}
		ssize_t got = pread_full(fd, w->buf2, BIG_CHUNK, (off_t)off);

		if (got < 0)
			return sys_fail_close(w, fd, "pread", w->big_path);
		if (got != BIG_CHUNK) {
			close(fd);
			return mismatch(w, "%s: pread at %" PRIu64 " returned %zd", w->big_path,
					off, got);
		}
		fill_big(w->buf, off, BIG_CHUNK, w->big_seed, w->big_gen);
		if (check_bytes(w, w->big_path, off, w->buf, w->buf2, BIG_CHUNK)) {
			close(fd);
			return -1;
		}
		op_done(w, OP_BIGR);
	}
	set_op(w, "close %s", w->big_path);
	if (close(fd) < 0)
		return sys_fail(w, "close", w->big_path);
	return 0;
}

/* ---- shared/: namespace churn ---------------------------------------------- */

static void slot_path(char *out, int wid, int k, const char *sub)
{
	snprintf(out, PATH_LEN, "%s/shared/w%d-n%d%s", opt.mnt, wid, k, sub);
}

static int new_obj(struct worker *w)
{
	for (int i = 0; i < 2 * NSLOTS; i++)
		if (w->objs[i].nlink == 0) {
			w->objs[i].seed = splitmix(&w->rng);
			w->objs[i].len = (uint32_t)rnd(w, SMALL_MAX + 1);
			return i;
		}
	abort(); /* at most NSLOTS files and NSLOTS subtree files exist */
}

/* Creates path with an object's content (O_EXCL: the name must be free). */
static int write_small(struct worker *w, const char *path, const struct obj *o)
{
	int fd;

	set_op(w, "create %s", path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return sys_fail(w, "create", path);
	fill_pattern(w->buf, o->len, o->seed);
	set_op(w, "write %s len=%u", path, o->len);
	if (pwrite_full(fd, w->buf, o->len, 0) < 0)
		return sys_fail_close(w, fd, "write", path);
	if (close(fd) < 0)
		return sys_fail(w, "close", path);
	return 0;
}

/* stat + read back a file the model knows (size, link count, bytes). */
static int check_small(struct worker *w, const char *path, const struct obj *o)
{
	struct stat st;
	ssize_t got;
	int fd;

	set_op(w, "stat %s", path);
	if (stat(path, &st) < 0)
		return sys_fail(w, "stat", path);
	if (!S_ISREG(st.st_mode) || st.st_size != o->len || st.st_nlink != o->nlink) {
		/* The kernel may have answered from its attribute cache: ask
		 * the daemon too, to tell a stale cache from a wrong answer. */
		struct statx sx = {0};
		int r = statx(AT_FDCWD, path, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx);

		return mismatch(w,
				"%s: mode 0%o size %lld nlink %lu, expected a file of %u "
				"bytes with %u links; asked again with AT_STATX_FORCE_SYNC: "
				"%s mode 0%o size %llu nlink %u",
				path, st.st_mode, (long long)st.st_size, (unsigned long)st.st_nlink,
				o->len, o->nlink, r ? strerror(errno) : "", sx.stx_mode,
				(unsigned long long)sx.stx_size, sx.stx_nlink);
	}
	set_op(w, "read %s", path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sys_fail(w, "open", path);
	got = pread_full(fd, w->buf2, SMALL_MAX + 1, 0);
	close(fd);
	if (got < 0)
		return sys_fail(w, "read", path);
	if ((size_t)got != o->len)
		return mismatch(w, "%s: read %zd bytes, expected %u", path, got, o->len);
	fill_pattern(w->buf, o->len, o->seed);
	return check_bytes(w, path, 0, w->buf, w->buf2, o->len);
}

static int ns_create(struct worker *w, int k, const char *p)
{
	int o = new_obj(w);

	w->objs[o].nlink = 1;
	if (write_small(w, p, &w->objs[o]))
		return -1;
	w->slots[k] = (struct slot){S_FILE, o};
	op_done(w, OP_CREATE);
	return 0;
}

static int ns_mkdir(struct worker *w, int k, const char *p)
{
	char sub[PATH_LEN];
	int o = new_obj(w);

	set_op(w, "mkdir %s{,/a,/b}", p);
	if (mkdir(p, 0755) < 0)
		return sys_fail(w, "mkdir", p);
	slot_path(sub, w->id, k, "/a");
	if (mkdir(sub, 0755) < 0)
		return sys_fail(w, "mkdir", sub);
	slot_path(sub, w->id, k, "/b");
	if (mkdir(sub, 0755) < 0)
		return sys_fail(w, "mkdir", sub);
	w->objs[o].nlink = 1;
	slot_path(sub, w->id, k, "/a/f");
	if (write_small(w, sub, &w->objs[o]))
		return -1;
	w->slots[k] = (struct slot){S_DIR, o};
	op_done(w, OP_MKDIR);
	return 0;
}

static int ns_rmdir(struct worker *w, int k, const char *p)
{
	static const char *const parts[] = {"/a/f", "/a", "/b", ""};
	char sub[PATH_LEN];

	for (int i = 0; i < 4; i++) {
		slot_path(sub, w->id, k, parts[i]);
		set_op(w, "%s %s", i ? "rmdir" : "unlink", sub);
		if ((i ? rmdir(sub) : unlink(sub)) < 0)
			return sys_fail(w, i ? "rmdir" : "unlink", sub);
	}
	w->objs[w->slots[k].obj].nlink = 0;
	w->slots[k].type = S_NONE;
	op_done(w, OP_RMDIR);
	return 0;
}

static int ns_unlink(struct worker *w, int k, const char *p)
{
	set_op(w, "unlink %s", p);
	if (unlink(p) < 0)
		return sys_fail(w, "unlink", p);
	w->objs[w->slots[k].obj].nlink--;
	w->slots[k].type = S_NONE;
	op_done(w, OP_UNLINK);
	return 0;
}

/* rename k -> j: a file over a free name or another file (which loses a
 * link; two links of one file: nothing happens), a directory to a free name. */
static int ns_rename(struct worker *w, int k, const char *p)
{
	int j = (int)rnd(w, NSLOTS);
	struct slot *s = &w->slots[k], *d = &w->slots[j];
	char q[PATH_LEN];

	if (j == k || d->type == S_DIR || (s->type == S_DIR && d->type != S_NONE))
		return 0;
	slot_path(q, w->id, j, "");
	set_op(w, "rename %s %s", p, q);
	if (rename(p, q) < 0)
		return sys_fail(w, "rename", p);
	if (d->type == S_FILE && d->obj == s->obj) {
		op_done(w, OP_RENAME);
		return 0;
	}
	if (d->type == S_FILE)
		w->objs[d->obj].nlink--;
	*d = *s;
	s->type = S_NONE;
	op_done(w, OP_RENAME);
	return 0;
}

static int ns_link(struct worker *w, int k, const char *p)
{
	int j = (int)rnd(w, NSLOTS);
	char q[PATH_LEN];

	if (w->slots[j].type != S_NONE)
		return 0;
	slot_path(q, w->id, j, "");
	set_op(w, "link %s %s", p, q);
	if (link(p, q) < 0)
		return sys_fail(w, "link", p);
	w->slots[j] = w->slots[k];
	w->objs[w->slots[k].obj].nlink++;
	op_done(w, OP_LINK);
	return 0;
}

/* One operation on a random own slot, chosen by what the slot holds. */
static int op_namespace(struct worker *w)
{
	int k = (int)rnd(w, NSLOTS), r = (int)rnd(w, 8);
	char p[PATH_LEN];

	slot_path(p, w->id, k, "");
	switch (w->slots[k].type) {
	case S_NONE:
		return r < 6 ? ns_create(w, k, p) : ns_mkdir(w, k, p);
	case S_FILE:
		return r < 3 ? ns_unlink(w, k, p) : r < 6 ? ns_rename(w, k, p) : ns_link(w, k, p);
	case S_DIR:
		return r < 5 ? ns_rmdir(w, k, p) : ns_rename(w, k, p);
	}
	return 0;
}

/* Parses "wI-nK" / "wI-sK"; returns 'n', 's' or 0. */
static int parse_name(const char *name, int *wid, int *k)
{
	char kind;
	int end = 0;

	if (sscanf(name, "w%d-%c%d%n", wid, &kind, k, &end) != 3 || name[end] != 0)
		return 0;
	return kind == 'n' || kind == 's' ? kind : 0;
}

/* ls -l shared/: readdir + fstatat of every entry. Other workers' names
 * may vanish under us (ENOENT); ours are stable while we list, so each
 * must show exactly once, as the model says. */
static int op_ls(struct worker *w)
{
	char dir[PATH_LEN];
	unsigned char seen[NSLOTS + NSTABLE] = {0};
	struct dirent *de;
	DIR *d;
	int err = 0;

	snprintf(dir, sizeof(dir), "%s/shared", opt.mnt);
	set_op(w, "opendir %s", dir);
	d = opendir(dir);
	if (!d)
		return sys_fail(w, "opendir", dir);
	for (;;) {
		struct stat st;
		int wid = -1, k = -1, kind;

		set_op(w, "readdir %s", dir);
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		set_op(w, "fstatat %s/%s", dir, de->d_name);
		kind = parse_name(de->d_name, &wid, &k);
		if (!kind)
			wid = -1;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
		    (errno != ENOENT || wid == w->id)) {
			err = sys_fail(w, "fstatat", de->d_name);
			break;
		}
		if (!kind || wid < 0 || wid >= opt.threads || k < 0) {
			err = mismatch(w, "%s: unexpected entry %s", dir, de->d_name);
			break;
		}
		if (wid != w->id)
			continue;
		int idx = kind == 'n' ? k : NSLOTS + k;
		bool known = kind == 'n' ? k < NSLOTS && w->slots[k].type != S_NONE : k < NSTABLE;
		bool isdir = kind == 'n' && known && w->slots[k].type == S_DIR;

		if (!known || seen[idx]++ || S_ISDIR(st.st_mode) != isdir) {
			err = mismatch(w, "%s: entry %s listed %s (model: %s)", dir, de->d_name,
				       known && seen[idx] > 1 ? "twice" : "wrongly",
				       !known  ? "absent"
				       : isdir ? "directory"
					       : "file");
			break;
		}
	}
	if (!de && errno && !err)
		err = sys_fail(w, "readdir", dir);
	closedir(d);
	for (int i = 0; i < NSLOTS + NSTABLE && !err; i++) {
		bool present = i >= NSLOTS || w->slots[i].type != S_NONE;

		if (present && !seen[i])
			err = mismatch(w, "%s: w%d-%c%d missing from the listing", dir, w->id,
				       i < NSLOTS ? 'n' : 's', i < NSLOTS ? i : i - NSLOTS);
	}
	if (!err)
		op_done(w, OP_LS);
	return err;
}

/* stat a random name: one of ours (checked against the model, content
 * included) or another worker's (anything but ENOENT must succeed). */
static int op_stat(struct worker *w)
{
	int wid = (int)rnd(w, opt.threads), k = (int)rnd(w, NSLOTS);
	char p[PATH_LEN];
	struct stat st;
	int r = 0;

	slot_path(p, wid, k, "");
	if (wid != w->id) {
		set_op(w, "stat %s", p);
		if (stat(p, &st) < 0 && errno != ENOENT)
			return sys_fail(w, "stat", p);
	} else if (w->slots[k].type == S_FILE) {
		r = check_small(w, p, &w->objs[w->slots[k].obj]);
	} else if (w->slots[k].type == S_DIR) {
		slot_path(p, wid, k, "/a/f");
		r = check_small(w, p, &w->objs[w->slots[k].obj]);
	} else {
		set_op(w, "stat %s (absent)", p);
		if (stat(p, &st) == 0 || errno != ENOENT)
			return mismatch(w, "%s: stat gives %s, expected ENOENT", p,
					errno == ENOENT ? "an entry" : strerror(errno));
	}
	if (r == 0)
		op_done(w, OP_STAT);
	return r;
}

/* ---- the stats file ---------------------------------------------------------- */

/* One "name[{labels}] value" line of the Prometheus text format. */
static bool stats_line_ok(const char *l)
{
	const char *p = l;
	char *end;

	if (*l == 0 || *l == '#')
		return true;
	while (*p == '_' || *p == ':' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
	       (p > l && *p >= '0' && *p <= '9'))
		p++;
	if (p == l)
		return false;
	if (*p == '{') {
		p = strchr(p, '}');
		if (!p)
			return false;
		p++;
	}
	if (*p != ' ')
		return false;
	strtod(p + 1, &end);
	return end != p + 1 && *end == 0;
}

/* The file is rendered afresh by every read request, so only the first
 * read(2) (one request: the file is under 64 KiB) is one consistent
 * snapshot; a later read at its end returns the tail of a new rendering
 * if that one came out longer. We count those (stats_torn) and parse
 * only the first read. */
static int op_stats(struct worker *w)
{
	char path[PATH_LEN], buf[128 * 1024], *line, *save;
	ssize_t n, more;
	int fd;

	snprintf(path, sizeof(path), "%s/.virtuscale/stats", opt.mnt);
	set_op(w, "read %s", path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sys_fail(w, "open", path);
	n = read(fd, buf, sizeof(buf) - 1);
	more = n > 0 ? read(fd, w->buf2, 4096) : 0;
	close(fd);
	if (n < 0 || more < 0)
		return sys_fail(w, "read", path);
	if (n == 0 || buf[n - 1] != '\n')
		return mismatch(w, "%s: %zd bytes, not ending in a newline", path, n);
	if (more > 0 && atomic_fetch_add(&g_stats_torn, 1) < 3)
		printf("note: %s: a read at its end (%zd) returned %zd more bytes\n", path, n,
		       more);
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (!stats_line_ok(line))
			return mismatch(w, "%s: line does not parse: '%s'", path, line);
	op_done(w, OP_STATS);
	return 0;
}

/* ---- worker lifecycle -------------------------------------------------------- */

static int worker_setup(struct worker *w)
{
	char p[PATH_LEN];

	snprintf(p, sizeof(p), "%s/w%d", opt.mnt, w->id);
	set_op(w, "mkdir %s", p);
	if (mkdir(p, 0755) < 0)
		return sys_fail(w, "mkdir", p);
	for (int i = 0; i < NFILES; i++) {
		struct dfile *f = &w->files[i];

		snprintf(f->path, sizeof(f->path), "%s/w%d/f%d", opt.mnt, w->id, i);
		f->model = calloc(1, MAX_FILE);
		f->fd = open(f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (!f->model || f->fd < 0)
			return sys_fail(w, "create", f->path);
	}
	snprintf(w->big_path, sizeof(w->big_path), "%s/w%d/big", opt.mnt, w->id);
	/* The stable population: content derived from the name. */
	for (int k = 0; k < NSTABLE; k++) {
		struct obj o = {w->big_seed ^ (uint64_t)k, (uint32_t)(k * 37 % 4000), 1};

		snprintf(p, sizeof(p), "%s/shared/w%d-s%d", opt.mnt, w->id, k);
		if (write_small(w, p, &o))
			return -1;
		op_done(w, OP_CREATE);
	}
	return 0;
}

static int run_one(struct worker *w)
{
	/* Weights out of 1000. A big pass is big-mb MiB of I/O: 1 in 500
	 * keeps it to about a third of the time with the defaults. */
	int r = (int)rnd(w, 1000);
	struct dfile *f = &w->files[rnd(w, NFILES)];

	if (r < 200)
		return op_write(w, f);
	if (r < 400)
		return op_read(w, f);
	if (r < 440)
		return op_trunc(w, f);
	if (r < 460)
		return op_fsync(w, f);
	if (r < 510)
		return op_direct(w, f);
	if (r < 560)
		return op_mmap(w, f);
	if (r < 570)
		return op_recreate(w, f);
	if (r < 780)
		return op_namespace(w);
	if (r < 800)
		return op_ls(w);
	if (r < 988)
		return op_stat(w);
	if (r < 998)
		return op_stats(w);
	return op_big(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	if (worker_setup(w) == 0)
		while (!atomic_load(&g_stop) && run_one(w) == 0)
			;
	set_op(w, "finished");
	atomic_fetch_sub(&g_running, 1);
	return NULL;
}

/* ---- the watchdog ------------------------------------------------------------ */

static void cat_file(const char *label, const char *path)
{
	char buf[16384];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	printf("%s: %s%s", label, buf, n && buf[n - 1] == '\n' ? "" : "\n");
}

/* comm, wchan and kernel stack of every thread of a process. */
static void dump_tasks(pid_t pid)
{
	char dir[64], p[PATH_LEN];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	d = opendir(dir);
	if (!d) {
		printf("(%s: %s)\n", dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		printf("--- task %s\n", de->d_name);
		snprintf(p, sizeof(p), "%s/%s/comm", dir, de->d_name);
		cat_file("comm", p);
		snprintf(p, sizeof(p), "%s/%s/wchan", dir, de->d_name);
		cat_file("wchan", p);
		snprintf(p, sizeof(p), "%s/%s/stack", dir, de->d_name);
		cat_file("stack", p);
	}
	closedir(d);
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[PATH_LEN];

	for (path = path ? path : "/usr/bin:/bin"; *path;) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (access(buf, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* gdb's backtrace of every daemon thread, when gdb is installed; killed
 * after two minutes so that a wedged gdb cannot hide the verdict.
 * posix_spawn, not fork: our workers are stuck in the kernel, and fork
 * would copy (and lock) this whole process. The executable goes by its
 * /proc link, found even if the file was rebuilt since the daemon started. */
static void dump_gdb(pid_t pid)
{
	char spid[32], exe[64];
	char *argv[] = {"gdb", "-batch", "-ex", "thread apply all bt", exe, spid, NULL};
	posix_spawn_file_actions_t fa;
	pid_t g;
	int st;

	if (!in_path("gdb")) {
		printf("(no gdb: user-space stacks not available)\n");
		return;
	}
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
	fflush(stdout);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	st = posix_spawnp(&g, "gdb", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (st != 0) {
		printf("(gdb: %s)\n", strerror(st));
		return;
	}
	for (int i = 0; i < 1200; i++) {
		if (waitpid(g, &st, WNOHANG) == g)
			return;
		usleep(100000);
	}
	kill(g, SIGKILL);
	waitpid(g, &st, 0);
	printf("(gdb killed after 120 s)\n");
}

/*
 * The daemon's own lock-holder table (engine/lockorder.h): who holds the
 * transaction, inode locks, rename_mu, and who waits for what since when.
 * SIGUSR2 makes the daemon append one to its VS_LOCKDUMP file (--lock-dump);
 * shown from where the file ended before, once the end line is there (5 s
 * at most). Without --lock-dump no signal: a daemon without the handler
 * would die of it.
 */
static void dump_locks(pid_t pid)
{
	static char buf[1 << 16];
	struct stat st;
	off_t from = 0;
	ssize_t n = 0;

	if (!opt.lock_dump) {
		printf("(no --lock-dump: the daemon's lock-holder table not asked for)\n");
		return;
	}
	if (stat(opt.lock_dump, &st) == 0)
		from = st.st_size;
	if (kill(pid, SIGUSR2) < 0) {
		printf("(SIGUSR2 to %d: %s)\n", (int)pid, strerror(errno));
		return;
	}
	for (int i = 0; i < 50; i++) {
		int fd = open(opt.lock_dump, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, from) : -1;
		if (fd >= 0)
			close(fd);
		buf[n > 0 ? n : 0] = 0;
		if (strstr(buf, "end of lock-holder table\n"))
			break;
		usleep(100000);
	}
	fputs(buf, stdout);
	if (!strstr(buf, "end of lock-holder table\n"))
		printf("(no whole lock-holder table in %s after 5 s)\n", opt.lock_dump);
}

static void print_worker_ops(void)
{
	for (int i = 0; i < opt.threads; i++)
		printf("worker %d is in: %.*s\n", i, OP_LEN, sh->op[i]);
}

/* The kernel stacks first: reading them does not disturb the daemon, while
 * gdb's attach stops it and interrupts what it waits in (an io_uring wait
 * returns EINTR), which can end the very state we want to see. */
static void hang_report(double idle)
{
	printf("HANG: no operation completed for %.0f s (%lu completed before)\n", idle,
	       atomic_load(&sh->progress));
	print_worker_ops();
	if (opt.daemon > 0) {
		printf("==== daemon %d: kernel stacks\n", (int)opt.daemon);
		dump_tasks(opt.daemon);
	}
	printf("==== vs_stress %d: kernel stacks\n", (int)sh->driver);
	dump_tasks(sh->driver);
	if (opt.daemon > 0) {
		printf("==== daemon %d: lock-holder table\n", (int)opt.daemon);
		dump_locks(opt.daemon);
		printf("==== daemon %d: gdb thread apply all bt\n", (int)opt.daemon);
		dump_gdb(opt.daemon);
	} else {
		printf("(no --daemon-pid: daemon stacks not dumped)\n");
	}
	printf("HANG: end of report\n");
	fflush(stdout);
}

/* A third of the way to a hang: a first look at the daemon's stacks, while
 * it is still in the state that stalls it (a wait that ends in a timeout
 * and an error would be over by the hang report). */
static void stall_report(double idle)
{
	printf("STALL: no operation completed for %.0f s\n", idle);
	print_worker_ops();
	if (opt.daemon > 0) {
		printf("==== daemon %d: kernel stacks\n", (int)opt.daemon);
		dump_tasks(opt.daemon);
		printf("==== daemon %d: lock-holder table\n", (int)opt.daemon);
		dump_locks(opt.daemon);
		printf("==== daemon %d: gdb thread apply all bt\n", (int)opt.daemon);
		dump_gdb(opt.daemon);
	}
	printf("STALL: end of snapshot\n");
	fflush(stdout);
}

/* Ticks once a second: progress lines every 10 s, a stall snapshot, and the
 * hang verdict. */
static void watchdog_loop(void)
{
	double start = now_s(), last_change = start, last_print = start;
	unsigned long last = atomic_load(&sh->progress);
	bool stall_shown = false;

	/* getppid: a driver that died leaves us to init at once. */
	while (!atomic_load(&sh->done) && getppid() == sh->driver) {
		double t;
		unsigned long cur;

		sleep(1);
		t = now_s();
		cur = atomic_load(&sh->progress);
		if (cur != last) {
			last = cur;
			last_change = t;
			stall_shown = false;
		}
		if (t - last_print >= 10) {
			printf("t=%.0fs ops=%lu\n", t - start, cur);
			fflush(stdout);
			last_print = t;
		}
		if (!stall_shown && opt.hang_seconds >= 3 &&
		    t - last_change >= opt.hang_seconds / 3) {
			stall_report(t - last_change);
			stall_shown = true;
		}
		if (t - last_change >= opt.hang_seconds) {
			hang_report(t - last_change);
			atomic_store(&sh->hang, 1);
			return;
		}
	}
}

/*
 * The watchdog is a process of its own, forked before any thread or file
 * on the mount exists. Inside the driver it could be stuck itself: a worker
 * whose munmap waits for the daemon (fuse_vma_close writes the inode back)
 * holds this process's mmap lock, and then a first malloc in another
 * thread, a fork or a posix_spawn (each maps memory) waits too. It sees the
 * progress counter and the workers' current operations in a shared page.
 */
static pid_t watchdog_start(void)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		watchdog_loop();
		_exit(0);
	}
	return pid;
}

/* ---- manifest and --verify ----------------------------------------------------- */

static void manifest_file(FILE *m, const char *rel, uint64_t size, unsigned nlink, uint64_t h)
{
	fprintf(m, "f %" PRIu64 " %u %016" PRIx64 " %s\n", size, nlink, h, rel);
}

static void manifest_obj(FILE *m, struct worker *w, const char *rel, const struct obj *o)
{
	fill_pattern(w->buf, o->len, o->seed);
	manifest_file(m, rel, o->len, o->nlink, fnv1a(FNV_INIT, w->buf, o->len));
}

static void manifest_worker(FILE *m, struct worker *w)
{
	char rel[PATH_LEN];
	uint64_t h = FNV_INIT, big = w->big_gen ? (uint64_t)opt.big_mb * MiB : 0;

	fprintf(m, "d w%d\n", w->id);
	for (int i = 0; i < NFILES; i++) {
		snprintf(rel, sizeof(rel), "w%d/f%d", w->id, i);
		manifest_file(m, rel, w->files[i].size, 1,
			      fnv1a(FNV_INIT, w->files[i].model, w->files[i].size));
	}
	for (uint64_t off = 0; off < big; off += BIG_CHUNK) {
		fill_big(w->buf, off, BIG_CHUNK, w->big_seed, w->big_gen);
		h = fnv1a(h, w->buf, BIG_CHUNK);
	}
	snprintf(rel, sizeof(rel), "w%d/big", w->id);
	if (w->big_gen)
		manifest_file(m, rel, big, 1, h);
	for (int k = 0; k < NSTABLE; k++) {
		struct obj o = {w->big_seed ^ (uint64_t)k, (uint32_t)(k * 37 % 4000), 1};

		snprintf(rel, sizeof(rel), "shared/w%d-s%d", w->id, k);
		manifest_obj(m, w, rel, &o);
	}
	for (int k = 0; k < NSLOTS; k++) {
		struct slot *s = &w->slots[k];
		const char *fmt[] = {"shared/w%d-n%d", "shared/w%d-n%d/a", "shared/w%d-n%d/b"};

		if (s->type == S_NONE)
			continue;
		snprintf(rel, sizeof(rel), fmt[0], w->id, k);
		if (s->type == S_FILE) {
			manifest_obj(m, w, rel, &w->objs[s->obj]);
			continue;
		}
		for (int i = 0; i < 3; i++) {
			snprintf(rel, sizeof(rel), fmt[i], w->id, k);
			fprintf(m, "d %s\n", rel);
		}
		snprintf(rel, sizeof(rel), "shared/w%d-n%d/a/f", w->id, k);
		manifest_obj(m, w, rel, &w->objs[s->obj]);
	}
}

static int write_manifest(void)
{
	FILE *m = fopen(opt.manifest, "w");

	if (!m) {
		perror(opt.manifest);
		return -1;
	}
	fprintf(m, "d shared\n");
	for (int i = 0; i < opt.threads; i++)
		manifest_worker(m, &workers[i]);
	return fclose(m);
}

struct entry {
	char type;
	uint64_t size, hash;
	unsigned nlink;
	bool found;
	char rel[PATH_LEN];
};
static struct entry *ents;
static size_t nents, verify_bad;

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->rel, ((const struct entry *)b)->rel);
}

static void verify_bad_entry(const char *rel, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "MISMATCH after remount: %s: ", rel);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	verify_bad++;
}

static void verify_file(const char *path, const char *rel, const struct stat *st,
			const struct entry *e)
{
	static uint8_t buf[MiB];
	uint64_t h = FNV_INIT, total = 0;
	ssize_t n;
	int fd;

	if ((uint64_t)st->st_size != e->size || st->st_nlink != e->nlink) {
		verify_bad_entry(rel, "size %lld nlink %lu, expected %" PRIu64 " and %u",
				 (long long)st->st_size, (unsigned long)st->st_nlink, e->size,
				 e->nlink);
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		verify_bad_entry(rel, "open: %s", strerror(errno));
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		h = fnv1a(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	close(fd);
	if (n < 0)
		verify_bad_entry(rel, "read: %s", strerror(errno));
	else if (total != e->size || h != e->hash)
		verify_bad_entry(rel,
				 "content differs (%" PRIu64 " bytes read, hash %016" PRIx64
				 ", expected %016" PRIx64 ")",
				 total, h, e->hash);
}

static void verify_dir(const char *path, const char *rel)
{
	struct dirent *de;
	DIR *d = opendir(path);

	if (!d) {
		verify_bad_entry(rel[0] ? rel : ".", "opendir: %s", strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		char p[PATH_LEN], r[PATH_LEN];
		struct entry key, *e;
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (!rel[0] && !strcmp(de->d_name, "lost+found")))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		snprintf(r, sizeof(r), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		snprintf(key.rel, sizeof(key.rel), "%s", r);
		e = bsearch(&key, ents, nents, sizeof(*ents), entry_cmp);
		if (lstat(p, &st) < 0) {
			verify_bad_entry(r, "lstat: %s", strerror(errno));
			continue;
		}
		if (!e) {
			verify_bad_entry(r, "not in the manifest (a name that should be gone)");
			continue;
		}
		if (e->found)
			verify_bad_entry(r, "listed twice");
		e->found = true;
		if (e->type == 'd' && S_ISDIR(st.st_mode))
			verify_dir(p, r);
		else if (e->type == 'f' && S_ISREG(st.st_mode))
			verify_file(p, r, &st, e);
		else
			verify_bad_entry(r, "mode 0%o, expected a %s", st.st_mode,
					 e->type == 'd' ? "directory" : "file");
	}
	closedir(d);
}

static int load_manifest(void)
{
	FILE *m = fopen(opt.verify, "r");
	char line[PATH_LEN];
	size_t cap = 0;

	if (!m) {
		perror(opt.verify);
		return -1;
	}
	while (fgets(line, sizeof(line), m)) {
		struct entry e = {0};
		int n = 0;

		line[strcspn(line, "\n")] = 0;
		if (line[0] == 'd' && line[1] == ' ')
			snprintf(e.rel, sizeof(e.rel), "%s", line + 2), e.type = 'd';
		else if (sscanf(line, "f %" SCNu64 " %u %" SCNx64 " %n", &e.size, &e.nlink, &e.hash,
				&n) == 3 &&
			 n > 0)
			snprintf(e.rel, sizeof(e.rel), "%s", line + n), e.type = 'f';
		else {
			fprintf(stderr, "%s: bad line '%s'\n", opt.verify, line);
			fclose(m);
			return -1;
		}
		if (nents == cap && !(ents = realloc(ents, (cap = cap * 2 + 256) * sizeof(e))))
			abort();
		ents[nents++] = e;
	}
	fclose(m);
	qsort(ents, nents, sizeof(*ents), entry_cmp);
	return 0;
}

/* Walks the whole mount: every name the manifest lists must be there with
 * its content, and no other name may be. */
static int verify_main(void)
{
	size_t files = 0;

	if (load_manifest() < 0)
		return 1;
	verify_dir(opt.mnt, "");
	for (size_t i = 0; i < nents; i++) {
		files += ents[i].type == 'f';
		if (!ents[i].found)
			verify_bad_entry(ents[i].rel, "missing");
	}
	printf("vs_stress verify: %zu entries (%zu files), %zu bad\n", nents, files, verify_bad);
	return verify_bad ? 1 : 0;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: vs_stress MOUNTPOINT --seconds S --threads N --seed X [--daemon-pid PID]\n"
		"                 [--big-mb M] [--hang-seconds H] [--manifest FILE]\n"
		"                 [--lock-dump FILE]\n"
		"       vs_stress MOUNTPOINT --verify FILE\n");
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (a[0] != '-') {
			if (opt.mnt)
				usage();
			opt.mnt = a;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--seconds"))
			opt.seconds = atof(v);
		else if (!strcmp(a, "--threads"))
			opt.threads = atoi(v);
		else if (!strcmp(a, "--seed"))
			opt.seed = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--daemon-pid"))
			opt.daemon = atoi(v);
		else if (!strcmp(a, "--big-mb"))
			opt.big_mb = atoi(v);
		else if (!strcmp(a, "--hang-seconds"))
			opt.hang_seconds = atoi(v);
		else if (!strcmp(a, "--manifest"))
			opt.manifest = v;
		else if (!strcmp(a, "--lock-dump"))
			opt.lock_dump = v;
		else if (!strcmp(a, "--verify"))
			opt.verify = v;
		else
			usage();
	}
	if (!opt.mnt || opt.threads < 1 || opt.threads > MAX_THREAD || opt.big_mb < 1 ||
	    opt.seconds <= 0 || opt.hang_seconds < 1)
		usage();
}

/* The model assumes it made every name: refuse a mount that has any. */
static int check_empty(void)
{
	char p[PATH_LEN];
	struct dirent *de;
	DIR *d = opendir(opt.mnt);

	if (!d) {
		perror(opt.mnt);
		return -1;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    strcmp(de->d_name, "lost+found")) {
			fprintf(stderr, "vs_stress: %s is not empty (%s)\n", opt.mnt, de->d_name);
			closedir(d);
			return -1;
		}
	closedir(d);
	snprintf(p, sizeof(p), "%s/shared", opt.mnt);
	if (mkdir(p, 0755) < 0) {
		perror(p);
		return -1;
	}
	return 0;
}

static void summary(double secs)
{
	unsigned long tot[OP_KINDS] = {0}, all = 0;

	for (int i = 0; i < opt.threads; i++)
		for (int k = 0; k < OP_KINDS; k++)
			tot[k] += workers[i].n[k];
	printf("vs_stress: %s seconds=%.1f threads=%d seed=%" PRIu64 " ops:",
	       g_mismatches || g_errors ? "FAIL" : "PASS", secs, opt.threads, opt.seed);
	for (int k = 0; k < OP_KINDS; k++) {
		printf(" %s=%lu", op_names[k], tot[k]);
		all += tot[k];
	}
	printf(" total=%lu (%.0f/s) mismatches=%lu errors=%lu stats_torn=%lu\n", all, all / secs,
	       atomic_load(&g_mismatches), atomic_load(&g_errors), atomic_load(&g_stats_torn));
}

/* The end of the run. Workers stuck for good never come back, so wait
 * for them only while the watchdog has not reported a hang. */
static void wait_workers(void)
{
	atomic_store(&g_stop, true);
	while (atomic_load(&g_running) > 0 && !atomic_load(&sh->hang))
		usleep(100000);
	if (atomic_load(&sh->hang))
		_exit(3);
	for (int i = 0; i < opt.threads; i++)
		pthread_join(workers[i].thread, NULL);
}

int main(int argc, char **argv)
{
	double start, end;
	pid_t wd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv);
	if (opt.verify)
		return verify_main();
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	sh->driver = getpid();
	workers = calloc((size_t)opt.threads, sizeof(*workers));
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];

		w->id = i;
		w->rng = mix64(opt.seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i + 1);
		w->big_seed = splitmix(&w->rng);
		w->direct_ok = true;
		for (int f = 0; f < NFILES; f++)
			w->files[f].fd = -1;
		w->op = sh->op[i];
		snprintf(w->op, OP_LEN, "starting");
		if (posix_memalign((void **)&w->buf, 4096, MAX_IO) ||
		    posix_memalign((void **)&w->buf2, 4096, MAX_IO))
			abort();
	}
	wd = watchdog_start();
	if (check_empty() < 0) {
		atomic_store(&sh->done, 1);
		return 1;
	}
	start = now_s();
	atomic_store(&g_running, opt.threads);
	for (int i = 0; i < opt.threads; i++)
		pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
	while (!atomic_load(&g_stop) && now_s() - start < opt.seconds)
		usleep(100000);
	wait_workers();
	end = now_s();
	/* Close the data files under the watchdog: close flushes. After a
	 * failure (a dead mount) the closes' errors would only repeat it. */
	for (int i = 0; i < opt.threads; i++)
		for (int f = 0; f < NFILES; f++)
			if (workers[i].files[f].fd >= 0 && close(workers[i].files[f].fd) < 0 &&
			    !g_errors && !g_mismatches)
				sys_fail(&workers[i], "close", workers[i].files[f].path);
	if (atomic_load(&sh->hang))
		_exit(3);
	atomic_store(&sh->done, 1);
	waitpid(wd, NULL, 0);
	if (opt.manifest && !g_mismatches && !g_errors && write_manifest() < 0)
		atomic_fetch_add(&g_errors, 1);
	summary(end - start);
	return g_mismatches || g_errors ? 1 : 0;
}
