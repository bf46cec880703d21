/*
 * crash_fs.c: power loss and failing disks under the filesystem library, in
 * process, through the buffer manager's fault injection (engine/bm_fault.h).
 * Every request runs in a transaction, as the FUSE handlers run it.
 *
 *   power_loss  rounds of a random workload on one image (create, write,
 *               truncate, rename, link, unlink, mkdir, rmdir, unlink while
 *               open, release, fsync, fsyncdir), with now and then one
 *               failed write or sync (EIO, ENOSPC). In each round the disk
 *               dies at a random write or sync of a checkpoint (or the
 *               machine stops between requests); the requests go on a little
 *               (their fsyncs fail), then the filesystem is abandoned,
 *               writes since the last good sync are dropped and one is torn,
 *               and the image is mounted again. The tree found must be,
 *               name for name, inode for inode and byte for byte, the state
 *               after one request at or after the last fsync that returned
 *               0; fsck.virtuscale must find the image clean.
 *   transient   one write or sync fails inside an fsync: the fsync reports
 *               it (EIO or ENOSPC), the filesystem goes on serving, the next
 *               fsync succeeds and the data is there after a remount.
 *   dead_disk   every write fails from some point on: fsync fails, writes
 *               are refused once the pool holds all it can, reads go on,
 *               nothing hangs; when the disk comes back the next fsync
 *               makes everything accepted durable; a disk that never comes
 *               back leaves the image as of the last good fsync.
 *
 * Environment: VS_CRASH_ROUNDS (power_loss rounds, default 100),
 * VS_CRASH_SEED (first seed), VS_CRASH_VERBOSE=1 (each round and the
 * engine's log), VS_FSCK (fsck.virtuscale; set by meson), VS_TEST_TMP
 * (where the image goes; default /dev/shm, else /tmp).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/bm_fault.h"
#include "engine/log.h"
#include "fs/fs.h"
#include "fs/keys.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

#define IMAGE_BYTES (48 * MiB)
#define POOL_BYTES  (2 * MiB)	/* dirty limit: 256 pages */
#define MAX_ENT	    40		/* names in the model */
#define MAX_INO	    48		/* file inodes in the model (open orphans too) */
#define MAX_FILE    (192 * KiB) /* largest file the workload makes */
#define STREAM_FILE (1536 * KiB) /* ... in heavy rounds: past half the pool, so
				    * that large writes stream to the image
				    * (bm_write_through) and reads of it too */
#define MAX_TOTAL   (6 * MiB)	/* bytes of all files: never ENOSPC */
#define PATH_MAX_   24

static char image[256];
static const struct fs_cred root_cred = {0, 0};
static bool verbose;
static _Atomic unsigned long log_lines, log_no_fit;

static void quiet_sink(enum vs_log_level level, const char *msg)
{
	log_lines++;
	if (strstr(msg, "does not fit the journal"))
		log_no_fit++;
	if (verbose)
		fprintf(stderr, "  log: %s\n", msg);
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static unsigned rnd(uint64_t *s, unsigned n)
{
	return n ? (unsigned)(rng_next(s) % n) : 0;
}

static void fill_random(uint64_t *s, uint8_t *p, size_t n)
{
	while (n > 0) {
		uint64_t v = rng_next(s);
		size_t k = n < 8 ? n : 8;
		memcpy(p, &v, k);
		p += k;
		n -= k;
	}
}

/* ------------------------------------------------------------------ */
/* The image, mounting, fsck                                          */

static void image_create(void)
{
	const char *dir = getenv("VS_TEST_TMP");
	struct stat st;
	if (!dir)
		dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
	snprintf(image, sizeof(image), "%s/vs-crash-fs.XXXXXX", dir);
	int fd = mkstemp(image);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(bm_format(image, IMAGE_BYTES, true), 0);
	struct bm_config bc = {.path = image,
			       .pool_bytes = POOL_BYTES,
			       .backend = BM_BACKEND_PLAIN,
			       .no_direct = true};
	struct bm *bm;
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, 0, 0), 0);
	assert_int_equal(bm_close(bm), 0);
}

static int mount_try(struct bm_fault *f, struct fs **ret_fs)
{
	struct fs_config cfg = {.image = image,
				.pool_bytes = POOL_BYTES,
				.backend = BM_BACKEND_PLAIN,
				.fault = f,
				/* checkpoints only when asked or forced: the
				 * fault counts stay where the test puts them */
				.checkpoint_ms = 3600 * 1000};
	return fs_mount(&cfg, ret_fs);
}

static struct fs *mount_with(struct bm_fault *f)
{
	struct fs *fs = NULL;
	int r = mount_try(f, &fs);
	if (r < 0)
		fail_msg("mount of %s: %s", image, strerror(-r));
	return fs;
}

/* fsck.virtuscale -n on the image: 0 when clean. Without VS_FSCK, 0. */
static int run_fsck(const char *what)
{
	const char *fsck = getenv("VS_FSCK");
	char cmd[1024], log[300];
	if (!fsck || !*fsck)
		return 0;
	snprintf(log, sizeof(log), "%s.fsck", image);
	snprintf(cmd, sizeof(cmd), "'%s' -n '%s' >'%s' 2>&1", fsck, image, log);
	int st = system(cmd);
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	if (code != 0) {
		fprintf(stderr, "fsck after %s: exit %d\n", what, code);
		snprintf(cmd, sizeof(cmd), "tail -30 '%s' >&2", log);
		if (system(cmd) != 0)
			fprintf(stderr, "(no fsck log)\n");
	}
	unlink(log);
	return code;
}

/* Every request is one transaction, as fuse_ops.c runs them. */
#define TXN(fs, call)                                                                              \
	({                                                                                         \
		bm_txn_begin(fs_bm(fs));                                                           \
		__typeof__(call) r_ = (call);                                                      \
		bm_txn_end(fs_bm(fs));                                                             \
		r_;                                                                                \
	})

/* ------------------------------------------------------------------ */
/* The model: names -> inodes -> contents, contents shared copy-on-write */

struct content {
	unsigned ref;
	size_t len;
	uint8_t b[];
};

static struct content *content_new(size_t len)
{
	struct content *c = calloc(1, sizeof(*c) + len + 1);
	assert_non_null(c);
	c->ref = 1;
	c->len = len;
	return c;
}

static struct content *content_ref(struct content *c)
{
	if (c)
		c->ref++;
	return c;
}

static void content_put(struct content *c)
{
	if (c && --c->ref == 0)
		free(c);
}

struct ent {
	char path[PATH_MAX_]; /* "f12", "d3" or "d3/f12" */
	bool dir;
	uint64_t ino;
	struct content *c; /* files, in snapshots only */
};

struct mino {
	uint64_t ino; /* 0: free slot */
	struct content *c;
	unsigned nlink;
	bool open;
};

struct model {
	unsigned nent;
	struct ent e[MAX_ENT];
	struct mino f[MAX_INO];
	unsigned next_name;
	uint64_t total; /* bytes of all file contents */
};

struct snap {
	unsigned nent;
	struct ent e[MAX_ENT]; /* sorted by path, contents referenced */
};

static struct mino *mino_of(struct model *m, uint64_t ino)
{
	for (unsigned i = 0; i < MAX_INO; i++)
		if (m->f[i].ino == ino)
			return &m->f[i];
	return NULL;
}

static struct mino *mino_add(struct model *m, uint64_t ino)
{
	for (unsigned i = 0; i < MAX_INO; i++)
		if (m->f[i].ino == 0) {
			memset(&m->f[i], 0, sizeof(m->f[i]));
			m->f[i].ino = ino;
			m->f[i].c = content_new(0);
			return &m->f[i];
		}
	fail_msg("model: too many inodes");
	return NULL;
}

static unsigned mino_count(struct model *m)
{
	unsigned n = 0;
	for (unsigned i = 0; i < MAX_INO; i++)
		n += m->f[i].ino != 0;
	return n;
}

static void mino_drop(struct model *m, struct mino *mi)
{
	m->total -= mi->c->len;
	content_put(mi->c);
	memset(mi, 0, sizeof(*mi));
}

static void model_clear(struct model *m)
{
	for (unsigned i = 0; i < MAX_INO; i++)
		if (m->f[i].ino)
			mino_drop(m, &m->f[i]);
	m->nent = 0;
	m->total = 0;
}

static int ent_find(const struct model *m, const char *path)
{
	for (unsigned i = 0; i < m->nent; i++)
		if (strcmp(m->e[i].path, path) == 0)
			return (int)i;
	return -1;
}

static void ent_remove(struct model *m, unsigned i)
{
	m->e[i] = m->e[--m->nent];
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ent *)a)->path, ((const struct ent *)b)->path);
}

static void snap_take(const struct model *m, struct snap *s)
{
	s->nent = m->nent;
	for (unsigned i = 0; i < m->nent; i++) {
		s->e[i] = m->e[i];
		s->e[i].c = NULL;
		if (!m->e[i].dir)
			s->e[i].c = content_ref(mino_of((struct model *)m, m->e[i].ino)->c);
	}
	qsort(s->e, s->nent, sizeof(s->e[0]), ent_cmp);
}

static void snap_free(struct snap *s)
{
	for (unsigned i = 0; i < s->nent; i++)
		content_put(s->e[i].c);
	s->nent = 0;
}

/* The states the image may come back in: after the last acknowledged fsync
 * (cands[0]) and after every request since. */
struct cands {
	struct snap *s;
	unsigned n, cap;
};

static void cands_reset(struct cands *c, const struct model *m)
{
	for (unsigned i = 0; i < c->n; i++)
		snap_free(&c->s[i]);
	c->n = 0;
	if (!m)
		return;
	if (c->cap == 0) {
		c->cap = 64;
		c->s = malloc(c->cap * sizeof(*c->s));
		assert_non_null(c->s);
	}
	snap_take(m, &c->s[c->n++]);
}

static void cands_push(struct cands *c, const struct model *m)
{
	if (c->n == c->cap) {
		c->cap *= 2;
		c->s = realloc(c->s, c->cap * sizeof(*c->s));
		assert_non_null(c->s);
	}
	snap_take(m, &c->s[c->n++]);
}

/* ------------------------------------------------------------------ */
/* Reading the tree back                                              */

struct found {
	char path[PATH_MAX_];
	bool dir;
	uint64_t ino;
	nlink_t nlink;
	uint8_t *data;
	size_t len;
};

struct listing {
	unsigned n;
	struct found e[MAX_ENT + 8];
};

struct dir_ctx {
	char names[MAX_ENT + 8][FS_NAME_MAX + 1];
	uint64_t inos[MAX_ENT + 8];
	unsigned n;
	bool overflow;
};

static bool dir_sink(void *vctx, const char *name, uint64_t ino, mode_t type, uint64_t next,
		     const struct stat *st)
{
	struct dir_ctx *d = vctx;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return true;
	if (d->n == MAX_ENT + 8) {
		d->overflow = true;
		return false;
	}
	snprintf(d->names[d->n], sizeof(d->names[0]), "%s", name);
	d->inos[d->n++] = ino;
	return true;
}

static void list_dir(struct fs *fs, uint64_t dino, const char *prefix, struct listing *l)
{
	struct dir_ctx *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	assert_int_equal(fs_readdir(fs, dino, 0, false, dir_sink, d), 0);
	assert_false(d->overflow);
	for (unsigned i = 0; i < d->n; i++) {
		struct found *f = &l->e[l->n++];
		struct stat st;
		assert_true(l->n <= MAX_ENT + 8);
		memset(f, 0, sizeof(*f));
		snprintf(f->path, sizeof(f->path), "%s%s", prefix, d->names[i]);
		assert_int_equal(fs_getattr(fs, d->inos[i], &st), 0);
		f->ino = d->inos[i];
		f->dir = S_ISDIR(st.st_mode);
		f->nlink = st.st_nlink;
		if (f->dir) {
			char sub[PATH_MAX_ + 2];
			snprintf(sub, sizeof(sub), "%s/", f->path);
			list_dir(fs, f->ino, sub, l);
			continue;
		}
		f->len = (size_t)st.st_size;
		f->data = malloc(f->len + 1);
		assert_non_null(f->data);
		ssize_t got = fs_read(fs, f->ino, 0, f->len + 1, f->data);
		assert_int_equal(got, (ssize_t)f->len);
	}
	free(d);
}

static int found_cmp(const void *a, const void *b)
{
	return strcmp(((const struct found *)a)->path, ((const struct found *)b)->path);
}

static void listing_free(struct listing *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->e[i].data);
	l->n = 0;
}

/* Does the tree equal snapshot @s? Says why not into @why. */
static bool matches(const struct listing *l, const struct snap *s, char *why, size_t cap)
{
	if (l->n != s->nent) {
		snprintf(why, cap, "%u names, expected %u", l->n, s->nent);
		return false;
	}
	for (unsigned i = 0; i < l->n; i++) {
		const struct found *f = &l->e[i];
		const struct ent *e = &s->e[i];
		if (strcmp(f->path, e->path) != 0) {
			snprintf(why, cap, "name %s, expected %s", f->path, e->path);
			return false;
		}
		if (f->dir != e->dir || f->ino != e->ino) {
			snprintf(why, cap, "%s: inode %llu%s, expected %llu%s", f->path,
				 (unsigned long long)f->ino, f->dir ? " (dir)" : "",
				 (unsigned long long)e->ino, e->dir ? " (dir)" : "");
			return false;
		}
		if (e->dir)
			continue;
		unsigned links = 0;
		for (unsigned j = 0; j < s->nent; j++)
			links += s->e[j].ino == e->ino;
		if (f->nlink != links) {
			snprintf(why, cap, "%s: %u links, expected %u", f->path, (unsigned)f->nlink,
				 links);
			return false;
		}
		if (f->len != e->c->len || memcmp(f->data, e->c->b, f->len) != 0) {
			size_t k = 0;
			while (k < f->len && k < e->c->len && f->data[k] == e->c->b[k])
				k++;
			snprintf(why, cap, "%s: %zu bytes, expected %zu; first difference at %zu",
				 f->path, f->len, e->c->len, k);
			return false;
		}
	}
	return true;
}

/* Rebuild the model from the tree found (one lookup held per inode). */
static void model_from(struct fs *fs, struct model *m, const struct listing *l)
{
	model_clear(m);
	for (unsigned i = 0; i < l->n; i++) {
		const struct found *f = &l->e[i];
		struct ent *e = &m->e[m->nent++];
		memset(e, 0, sizeof(*e));
		snprintf(e->path, sizeof(e->path), "%s", f->path);
		e->dir = f->dir;
		e->ino = f->ino;
		struct mino *mi = f->dir ? NULL : mino_of(m, f->ino);
		if (!f->dir && !mi) {
			mi = mino_add(m, f->ino);
			content_put(mi->c);
			mi->c = content_new(f->len);
			memcpy(mi->c->b, f->data, f->len);
			m->total += f->len;
		}
		if (mi)
			mi->nlink++;
		/* the kernel's reference: one lookup per inode */
		char name[PATH_MAX_];
		const char *slash = strchr(f->path, '/');
		uint64_t parent = FS_INO_ROOT;
		if (slash) {
			snprintf(name, sizeof(name), "%.*s", (int)(slash - f->path), f->path);
			parent = m->e[ent_find(m, name)].ino;
		}
		if (f->dir || mi->nlink == 1) {
			struct stat st;
			assert_int_equal(fs_lookup(fs, parent, slash ? slash + 1 : f->path, &st),
					 0);
		}
	}
}

/* ------------------------------------------------------------------ */
/* The workload                                                       */

struct run {
	struct fs *fs;
	struct bm_fault *f;
	struct model *m;
	struct cands *cands;
	uint64_t *rng;
	bool armed; /* a fault was armed this round */
	bool heavy; /* large writes: enough to reach the dirty limit */
	unsigned acks, failed_syncs, fsync_errs[2], refused;
};

/* A request refused whole because the disk fails (see bm_txn_begin): only
 * once a fault was armed, and only with the disk's error. Anything else
 * must have succeeded. */
static bool refused(struct run *w, long r)
{
	if (r >= 0)
		return false;
	if (!w->armed || (r != -EIO && r != -ENOSPC))
		fail_msg("request failed: %s", strerror((int)-r));
	w->refused++;
	return true;
}

static uint64_t parent_ino(const struct model *m, const char *path, const char **ret_leaf)
{
	const char *slash = strchr(path, '/');
	if (!slash) {
		*ret_leaf = path;
		return FS_INO_ROOT;
	}
	char d[PATH_MAX_];
	snprintf(d, sizeof(d), "%.*s", (int)(slash - path), path);
	int i = ent_find(m, d);
	assert_true(i >= 0);
	*ret_leaf = slash + 1;
	return m->e[i].ino;
}

/* A random entry: files only, dirs only, or any. -1 when none. */
static int pick(struct run *w, int want_dir)
{
	int idx[MAX_ENT];
	unsigned n = 0;
	for (unsigned i = 0; i < w->m->nent; i++)
		if (want_dir < 0 || w->m->e[i].dir == (want_dir > 0))
			idx[n++] = (int)i;
	return n ? idx[rnd(w->rng, n)] : -1;
}

/* A fresh path for a file: in the root or in a random directory. */
static void new_file_path(struct run *w, char *out)
{
	int d = rnd(w->rng, 2) ? pick(w, 1) : -1;
	unsigned k = w->m->next_name++;
	if (d >= 0)
		snprintf(out, PATH_MAX_, "%s/f%u", w->m->e[d].path, k);
	else
		snprintf(out, PATH_MAX_, "f%u", k);
}

/* The kernel forgets an inode nobody names or holds open. */
static void maybe_forget(struct run *w, struct mino *mi)
{
	if (mi->nlink == 0 && !mi->open) {
		TXN(w->fs, (fs_forget(w->fs, mi->ino, 1), 0));
		mino_drop(w->m, mi);
	}
}

static bool op_create(struct run *w)
{
	char path[PATH_MAX_];
	const char *leaf;
	struct stat st;
	if (w->m->nent >= MAX_ENT || mino_count(w->m) >= MAX_INO)
		return false;
	new_file_path(w, path);
	uint64_t parent = parent_ino(w->m, path, &leaf);
	int r = TXN(w->fs, fs_mknod(w->fs, &root_cred, parent, leaf, S_IFREG | 0644, 0, &st));
	if (refused(w, r))
		return false;
	struct ent *e = &w->m->e[w->m->nent++];
	memset(e, 0, sizeof(*e));
	snprintf(e->path, sizeof(e->path), "%s", path);
	e->ino = st.st_ino;
	mino_add(w->m, st.st_ino)->nlink = 1;
	return true;
}

static struct mino *pick_file(struct run *w, bool with_open)
{
	struct mino *c[MAX_INO];
	unsigned n = 0;
	for (unsigned i = 0; i < MAX_INO; i++)
		if (w->m->f[i].ino && (with_open || w->m->f[i].nlink > 0))
			c[n++] = &w->m->f[i];
	return n ? c[rnd(w->rng, n)] : NULL;
}

static bool op_write(struct run *w)
{
	struct mino *mi = pick_file(w, true);
	if (!mi)
		return false;
	size_t max = w->heavy ? STREAM_FILE : MAX_FILE;
	size_t off = rnd(w->rng, (unsigned)mi->c->len + 8 * KiB);
	if (off >= max)
		return false;
	size_t len = w->heavy	      ? max - off
		     : rnd(w->rng, 4) ? 1 + rnd(w->rng, 16 * KiB)
				      : 1 + rnd(w->rng, 96 * KiB);
	if (off + len > max)
		len = max - off;
	size_t newlen = off + len > mi->c->len ? off + len : mi->c->len;
	if (w->m->total + newlen - mi->c->len > MAX_TOTAL)
		return false;
	struct content *c = content_new(newlen);
	memcpy(c->b, mi->c->b, mi->c->len);
	fill_random(w->rng, c->b + off, len);
	ssize_t n = TXN(w->fs, fs_write(w->fs, mi->ino, off, c->b + off, len));
	if (refused(w, n)) {
		content_put(c);
		return false;
	}
	assert_int_equal(n, (ssize_t)len);
	w->m->total += newlen - mi->c->len;
	content_put(mi->c);
	mi->c = c;
	return true;
}

static bool op_truncate(struct run *w)
{
	struct mino *mi = pick_file(w, true);
	if (!mi)
		return false;
	size_t size = rnd(w->rng, 3) ? rnd(w->rng, (unsigned)mi->c->len + 1)
				     : mi->c->len + rnd(w->rng, 40 * KiB);
	if (size > (w->heavy ? STREAM_FILE : MAX_FILE) ||
	    w->m->total + size > MAX_TOTAL + mi->c->len)
		return false;
	struct fs_setattr sa = {.valid = FS_SET_SIZE, .size = size};
	struct stat st;
	int r = TXN(w->fs, fs_setattr(w->fs, mi->ino, &sa, &st));
	if (refused(w, r))
		return false;
	struct content *c = content_new(size);
	memcpy(c->b, mi->c->b, size < mi->c->len ? size : mi->c->len);
	w->m->total += size;
	w->m->total -= mi->c->len;
	content_put(mi->c);
	mi->c = c;
	return true;
}

static bool op_rename(struct run *w)
{
	int s = pick(w, -1);
	if (s < 0)
		return false;
	struct ent src = w->m->e[s];
	char to[PATH_MAX_];
	int d = -1;
	if (src.dir) {
		snprintf(to, sizeof(to), "d%u", w->m->next_name++);
	} else if (rnd(w->rng, 3) == 0 && (d = pick(w, 0)) >= 0 && d != s) {
		snprintf(to, sizeof(to), "%s", w->m->e[d].path); /* replace a file */
	} else {
		d = -1;
		new_file_path(w, to);
	}
	const char *l1, *l2;
	uint64_t p1 = parent_ino(w->m, src.path, &l1), p2 = parent_ino(w->m, to, &l2);
	int r = TXN(w->fs, fs_rename(w->fs, p1, l1, p2, l2, 0));
	if (refused(w, r))
		return false;
	if (d >= 0) {
		struct ent victim = w->m->e[d];
		if (victim.ino == src.ino) {
			/* rename over a link of the same inode: nothing happens */
			return true;
		}
		ent_remove(w->m, (unsigned)d);
		struct mino *mi = mino_of(w->m, victim.ino);
		mi->nlink--;
		maybe_forget(w, mi);
		s = ent_find(w->m, src.path);
	}
	if (src.dir) {
		size_t n = strlen(src.path);
		for (unsigned i = 0; i < w->m->nent; i++) {
			struct ent *e = &w->m->e[i];
			if (strncmp(e->path, src.path, n) == 0 && e->path[n] == '/') {
				char moved[2 * PATH_MAX_];
				snprintf(moved, sizeof(moved), "%s%s", to, e->path + n);
				assert_true(strlen(moved) < sizeof(e->path));
				memcpy(e->path, moved, strlen(moved) + 1);
			}
		}
	}
	snprintf(w->m->e[s].path, sizeof(w->m->e[s].path), "%s", to);
	return true;
}

static bool op_link(struct run *w)
{
	int s = pick(w, 0);
	char to[PATH_MAX_];
	const char *leaf;
	struct stat st;
	if (s < 0 || w->m->nent >= MAX_ENT)
		return false;
	new_file_path(w, to);
	uint64_t ino = w->m->e[s].ino, parent = parent_ino(w->m, to, &leaf);
	int r = TXN(w->fs, fs_link(w->fs, ino, parent, leaf, &st));
	if (refused(w, r))
		return false;
	TXN(w->fs, (fs_forget(w->fs, ino, 1), 0)); /* keep one lookup */
	struct ent *e = &w->m->e[w->m->nent++];
	memset(e, 0, sizeof(*e));
	snprintf(e->path, sizeof(e->path), "%s", to);
	e->ino = ino;
	mino_of(w->m, ino)->nlink++;
	return true;
}

static bool op_unlink(struct run *w, bool keep_open)
{
	int s = pick(w, 0);
	const char *leaf;
	if (s < 0)
		return false;
	struct ent e = w->m->e[s];
	struct mino *mi = mino_of(w->m, e.ino);
	if (keep_open && !mi->open) {
		if (refused(w, TXN(w->fs, fs_open(w->fs, e.ino, O_RDWR))))
			return false;
		mi->open = true;
	}
	uint64_t parent = parent_ino(w->m, e.path, &leaf);
	if (refused(w, TXN(w->fs, fs_unlink(w->fs, parent, leaf))))
		return false;
	ent_remove(w->m, (unsigned)s);
	mi->nlink--;
	maybe_forget(w, mi);
	return true;
}

static bool op_release(struct run *w)
{
	for (unsigned i = 0; i < MAX_INO; i++) {
		struct mino *mi = &w->m->f[i];
		if (mi->ino && mi->open) {
			TXN(w->fs, (fs_release(w->fs, mi->ino), 0));
			mi->open = false;
			maybe_forget(w, mi);
			return true;
		}
	}
	return false;
}

static bool op_mkdir(struct run *w)
{
	char path[PATH_MAX_];
	struct stat st;
	unsigned dirs = 0;
	for (unsigned i = 0; i < w->m->nent; i++)
		dirs += w->m->e[i].dir;
	if (dirs >= 4 || w->m->nent >= MAX_ENT)
		return false;
	snprintf(path, sizeof(path), "d%u", w->m->next_name++);
	int r = TXN(w->fs, fs_mknod(w->fs, &root_cred, FS_INO_ROOT, path, S_IFDIR | 0755, 0, &st));
	if (refused(w, r))
		return false;
	struct ent *e = &w->m->e[w->m->nent++];
	memset(e, 0, sizeof(*e));
	snprintf(e->path, sizeof(e->path), "%s", path);
	e->dir = true;
	e->ino = st.st_ino;
	return true;
}

static bool op_rmdir(struct run *w)
{
	int d = pick(w, 1);
	if (d < 0)
		return false;
	size_t n = strlen(w->m->e[d].path);
	for (unsigned i = 0; i < w->m->nent; i++)
		if (strncmp(w->m->e[i].path, w->m->e[d].path, n) == 0 && w->m->e[i].path[n] == '/')
			return false; /* not empty */
	uint64_t ino = w->m->e[d].ino;
	if (refused(w, TXN(w->fs, fs_rmdir(w->fs, FS_INO_ROOT, w->m->e[d].path))))
		return false;
	TXN(w->fs, (fs_forget(w->fs, ino, 1), 0));
	ent_remove(w->m, (unsigned)d);
	return true;
}

/* fsync or fsyncdir (the same call): the candidates restart from here when
 * it returns 0. */
static void op_fsync(struct run *w)
{
	int r = fs_sync(w->fs);
	if (r == 0) {
		w->acks++;
		cands_reset(w->cands, w->m);
		return;
	}
	if (r != -EIO && r != -ENOSPC)
		fail_msg("fsync failed with %s, expected EIO or ENOSPC", strerror(-r));
	w->failed_syncs++;
	w->fsync_errs[r == -ENOSPC]++;
}

static void step(struct run *w)
{
	unsigned k = rnd(w->rng, 100);
	bool changed;
	if (k < 12)
		changed = op_create(w);
	else if (k < 38)
		changed = op_write(w);
	else if (k < 45)
		changed = op_truncate(w);
	else if (k < 57)
		changed = op_rename(w);
	else if (k < 61)
		changed = op_link(w);
	else if (k < 68)
		changed = op_unlink(w, false);
	else if (k < 71)
		changed = op_unlink(w, true);
	else if (k < 74)
		changed = op_release(w);
	else if (k < 77)
		changed = op_mkdir(w);
	else if (k < 79)
		changed = op_rmdir(w);
	else {
		op_fsync(w);
		return;
	}
	if (changed)
		cands_push(w->cands, w->m);
}

/* ------------------------------------------------------------------ */
/* Fault plans                                                        */

/* One failed write or sync soon, with EIO or ENOSPC. */
static void arm_transient(struct bm_fault *f, uint64_t *rng)
{
	pthread_mutex_lock(&f->mu);
	int e = rnd(rng, 2) ? EIO : ENOSPC;
	if (rnd(rng, 2)) {
		f->fail_write_at = f->writes + 1 + rnd(rng, 24);
		f->fail_write_err = e;
		f->fail_writes_after = false;
	} else {
		f->fail_sync_at = f->syncs + 1 + rnd(rng, 3);
		f->fail_sync_err = e;
		f->fail_syncs_after = false;
	}
	pthread_mutex_unlock(&f->mu);
}

/* The disk dies soon: from a write on, or from a sync on. */
static void arm_death(struct bm_fault *f, uint64_t *rng, bool at_sync)
{
	pthread_mutex_lock(&f->mu);
	if (at_sync) {
		f->fail_sync_at = f->syncs + 1 + rnd(rng, 4);
		f->fail_sync_err = EIO;
		f->fail_syncs_after = true;
	} else {
		f->fail_write_at = f->writes + 1 + rnd(rng, 48);
		f->fail_write_err = rnd(rng, 2) ? EIO : ENOSPC;
		f->fail_writes_after = true;
	}
	pthread_mutex_unlock(&f->mu);
}

/* ------------------------------------------------------------------ */
/* Tests                                                              */

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *s = getenv(name);
	return s && *s ? (unsigned)strtoul(s, NULL, 0) : dflt;
}

static int setup(void **state)
{
	verbose = env_uint("VS_CRASH_VERBOSE", 0) != 0;
	vs_log_set_sink(quiet_sink);
	image_create();
	return 0;
}

static int teardown(void **state)
{
	unlink(image);
	vs_log_set_sink(NULL);
	return 0;
}

/* Check the tree against the candidates; rebuild the model from it. */
static unsigned verify_and_adopt(struct fs *fs, struct model *m, struct cands *cands,
				 unsigned round, uint64_t seed)
{
	struct listing *l = calloc(1, sizeof(*l));
	char why[256] = "", why0[256] = "";
	assert_non_null(l);
	list_dir(fs, FS_INO_ROOT, "", l);
	qsort(l->e, l->n, sizeof(l->e[0]), found_cmp);
	int hit = -1;
	for (int i = (int)cands->n - 1; i >= 0 && hit < 0; i--) {
		if (matches(l, &cands->s[i], why, sizeof(why)))
			hit = i;
		else if (i == 0)
			snprintf(why0, sizeof(why0), "%s", why);
	}
	if (hit < 0) {
		matches(l, &cands->s[cands->n - 1], why, sizeof(why));
		fail_msg("round %u (seed %llu): the tree after recovery is none of the %u states "
			 "since the last acknowledged fsync;\n  against the acknowledged state: "
			 "%s\n  against the latest state: %s",
			 round, (unsigned long long)seed, cands->n, why0, why);
	}
	model_from(fs, m, l);
	listing_free(l);
	free(l);
	return (unsigned)hit;
}

static void t_power_loss(void **state)
{
	unsigned rounds = env_uint("VS_CRASH_ROUNDS", 100);
	uint64_t seed0 = env_uint("VS_CRASH_SEED", 1);
	struct model *m = calloc(1, sizeof(*m));
	struct cands cands = {0};
	unsigned acks = 0, failed = 0, errs[2] = {0, 0}, deaths[3] = {0, 0, 0}, newer = 0;
	unsigned replays = 0, ops = 0, refusals = 0, recovery_crashes = 0;
	uint64_t streamed = 0; /* pages moved past the pool */
	struct timespec t0, t1;

	assert_non_null(m);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned round = 0; round < rounds; round++) {
		uint64_t seed = seed0 + round, rng = seed * 0x100000001B3ull;
		struct bm_fault f = {0};
		bm_fault_init(&f);
		f.record = true;
		struct fs *fs = mount_with(&f);
		cands_reset(&cands, m);
		struct run w = {.fs = fs, .f = &f, .m = m, .cands = &cands, .rng = &rng};
		w.heavy = rnd(&rng, 8) == 0;

		unsigned steps = 8 + rnd(&rng, 48);
		unsigned plan = rnd(&rng, 5); /* 0: no death; 1, 2: at a sync; 3, 4: at a write */
		unsigned die_at = rnd(&rng, w.heavy ? steps / 4 : steps);
		bool transients = rnd(&rng, 2);
		deaths[plan == 0 ? 0 : plan <= 2 ? 1 : 2]++;
		for (unsigned s = 0; s < steps; s++) {
			if (plan && s == die_at) {
				arm_death(&f, &rng, plan <= 2);
				w.armed = true;
			} else if (transients && rnd(&rng, 8) == 0) {
				arm_transient(&f, &rng);
				w.armed = true;
			}
			step(&w);
			ops++;
		}
		struct bm_stats bs;
		bm_stats_get(fs_bm(fs), &bs);
		streamed += bs.write_through + bs.read_through;
		/* the crash: nothing more reaches the image */
		fs_abandon(fs);
		int undone = bm_fault_power_loss(&f, image, rng, true);
		assert_true(undone >= 0);
		bm_fault_fini(&f);

		/* Now and then the power fails again during the recovery. */
		if (rnd(&rng, 4) == 0) {
			memset(&f, 0, sizeof(f));
			bm_fault_init(&f);
			f.record = true;
			arm_death(&f, &rng, rnd(&rng, 2));
			f.fail_write_at = f.fail_write_at ? 1 + rnd(&rng, 6) : 0;
			f.fail_sync_at = f.fail_sync_at ? 1 + rnd(&rng, 2) : 0;
			if (mount_try(&f, &fs) == 0)
				fs_abandon(fs); /* the crash came after the mount */
			else
				recovery_crashes++;
			assert_true(bm_fault_power_loss(&f, image, rng, true) >= 0);
			bm_fault_fini(&f);
		}
		fs = mount_with(NULL);
		replays += bm_recovered_pages(fs_bm(fs)) > 0;
		unsigned hit = verify_and_adopt(fs, m, &cands, round, seed);
		newer += hit > 0;
		if (verbose)
			fprintf(stderr,
				"round %u: %u steps, plan %u, %u acks, %u failed fsyncs, %d "
				"writes undone, came back as state %u of %u\n",
				round, steps, plan, w.acks, w.failed_syncs, undone, hit, cands.n);
		acks += w.acks;
		refusals += w.refused;
		failed += w.failed_syncs;
		errs[0] += w.fsync_errs[0];
		errs[1] += w.fsync_errs[1];
		cands_reset(&cands, NULL);
		/* Close it cleanly now and then, crash straight from the
		 * recovered state otherwise (the next round's mount is the
		 * fsck then). */
		assert_int_equal(fs_unmount(fs), 0);
		char what[64];
		snprintf(what, sizeof(what), "round %u (seed %llu)", round,
			 (unsigned long long)seed);
		if (run_fsck(what) != 0)
			fail_msg("%s: fsck found the image damaged", what);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	model_clear(m);
	free(m);
	free(cands.s);
	if (rounds >= 50)
		assert_true(streamed > 0); /* the heavy rounds streamed */
	print_message("power loss: %u rounds, %u requests, %u acknowledged fsyncs, %u failed "
		      "(%u EIO, %u ENOSPC); deaths: %u none, %u at a sync, %u at a write; "
		      "%u requests refused; %u journal replays, %u mounts failed by a new "
		      "power loss; %u rounds came back newer than the last ack; %llu pages "
		      "streamed past the pool; %.1f s\n",
		      rounds, ops, acks, failed, errs[0], errs[1], deaths[0], deaths[1], deaths[2],
		      refusals, replays, recovery_crashes, newer, (unsigned long long)streamed,
		      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static void put_file(struct fs *fs, const char *name, const uint8_t *data, size_t len,
		     uint64_t *ret_ino)
{
	struct stat st;
	assert_int_equal(
	    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, name, S_IFREG | 0644, 0, &st)), 0);
	assert_int_equal(TXN(fs, fs_write(fs, st.st_ino, 0, data, len)), (ssize_t)len);
	*ret_ino = st.st_ino;
}

static void expect_file(struct fs *fs, const char *name, const uint8_t *data, size_t len)
{
	struct stat st;
	uint8_t *back = malloc(len + 1);
	assert_non_null(back);
	int r = fs_lookup(fs, FS_INO_ROOT, name, &st);
	if (r < 0)
		fail_msg("%s: %s", name, strerror(-r));
	assert_int_equal(st.st_size, (off_t)len);
	assert_int_equal(fs_read(fs, st.st_ino, 0, len + 1, back), (ssize_t)len);
	assert_memory_equal(back, data, len);
	fs_forget(fs, st.st_ino, 1);
	free(back);
}

static void expect_absent(struct fs *fs, const char *name)
{
	struct stat st;
	assert_int_equal(fs_lookup(fs, FS_INO_ROOT, name, &st), -ENOENT);
}

/* One failed write or sync at each point of an fsync's checkpoint, with
 * EIO and with ENOSPC: the fsync says so, the filesystem goes on, the next
 * fsync succeeds, and everything is there after a remount. */
static void t_transient(void **state)
{
	static uint8_t a[300 * 1024], b[200 * 1024];
	uint64_t rng = 77, ino;
	unsigned cases = 0, skipped = 0;

	fill_random(&rng, a, sizeof(a));
	struct fs *fs = mount_with(NULL);
	put_file(fs, "a", a, sizeof(a), &ino);
	assert_int_equal(fs_sync(fs), 0);
	assert_int_equal(fs_unmount(fs), 0);

	/* Where do the writes and syncs of one such fsync fall? */
	struct bm_fault f = {0};
	bm_fault_init(&f);
	fs = mount_with(&f);
	uint64_t w0 = f.writes, s0 = f.syncs;
	put_file(fs, "probe", b, sizeof(b), &ino);
	assert_int_equal(fs_sync(fs), 0);
	unsigned nw = (unsigned)(f.writes - w0), ns = (unsigned)(f.syncs - s0);
	assert_true(nw > 50 && ns == 2); /* commit, home (bm_journal.c) */
	assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "probe")), 0);
	fs_forget(fs, ino, 1);
	assert_int_equal(fs_sync(fs), 0);
	assert_int_equal(fs_unmount(fs), 0);
	bm_fault_fini(&f);

	for (unsigned at = 1; at <= nw + ns; at += at < 8 || at >= nw - 4 ? 1 : 7) {
		for (int e = 0; e < 2; e++) {
			int err = e ? ENOSPC : EIO;
			char name[32];
			memset(&f, 0, sizeof(f));
			bm_fault_init(&f);
			fs = mount_with(&f);
			snprintf(name, sizeof(name), "b%u%c", at, e ? 's' : 'e');
			fill_random(&rng, b, sizeof(b));
			put_file(fs, name, b, sizeof(b), &ino);
			pthread_mutex_lock(&f.mu);
			if (at <= nw) {
				f.fail_write_at = f.writes + at;
				f.fail_write_err = err;
			} else {
				f.fail_sync_at = f.syncs + (at - nw);
				f.fail_sync_err = err;
			}
			pthread_mutex_unlock(&f.mu);
			int r = fs_sync(fs);
			if (r == 0) {
				/* this checkpoint was shorter than the probe's */
				assert_true(f.writes < f.fail_write_at || f.syncs < f.fail_sync_at);
				skipped++;
			} else {
				assert_int_equal(r, -err);
			}
			/* still serving: old data, the new file, new requests */
			expect_file(fs, "a", a, sizeof(a));
			expect_file(fs, name, b, sizeof(b));
			uint64_t ino2;
			put_file(fs, "c", b, 5000, &ino2);
			assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "c")), 0);
			fs_forget(fs, ino2, 1);
			/* the disk is fine again */
			r = fs_sync(fs);
			if (r != 0)
				fail_msg("%s: the fsync after the fault: %s", name, strerror(-r));
			if (at & 1) {
				assert_int_equal(fs_unmount(fs), 0);
			} else {
				fs_abandon(fs); /* a crash right after the good fsync */
			}
			bm_fault_fini(&f);
			fs = mount_with(NULL);
			expect_file(fs, "a", a, sizeof(a));
			expect_file(fs, name, b, sizeof(b));
			expect_absent(fs, "c");
			assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, name)), 0);
			assert_int_equal(fs_unmount(fs), 0);
			if (run_fsck(name) != 0)
				fail_msg("%s: fsck found the image damaged", name);
			cases++;
		}
	}
	print_message("transient faults: %u cases over %u writes and %u syncs of a checkpoint "
		      "(%u past its end)\n",
		      cases, nw, ns, skipped);
	assert_true(skipped < cases / 4);
}

static void on_alarm(int sig)
{
	static const char msg[] = "crash_fs: hung (no progress for 120 s)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(1);
}

/* A disk that fails every write from some point on. */
static void t_dead_disk(void **state)
{
	static uint8_t a[256 * 1024], chunk[64 * 1024];
	uint64_t rng = 99, ino_a, ino_b, ino_c;
	struct stat st;

	signal(SIGALRM, on_alarm);
	fill_random(&rng, a, sizeof(a));
	for (int round = 0; round < 2; round++) {
		int err = round ? ENOSPC : EIO;
		struct bm_fault f = {0};
		bm_fault_init(&f);
		struct fs *fs = mount_with(&f);
		put_file(fs, "a", a, sizeof(a), &ino_a);
		assert_int_equal(fs_sync(fs), 0);

		pthread_mutex_lock(&f.mu);
		f.fail_write_at = f.writes + 1;
		f.fail_write_err = err;
		f.fail_writes_after = true;
		pthread_mutex_unlock(&f.mu);
		put_file(fs, "b", a, 10000, &ino_b);
		assert_int_equal(fs_sync(fs), -err);

		/* Keep writing far past what the pool and the journal hold:
		 * no hang; sooner or later the writes are refused. */
		assert_int_equal(
		    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, "c", S_IFREG | 0644, 0, &st)), 0);
		ino_c = st.st_ino;
		uint64_t accepted = 0;
		ssize_t n = 0;
		alarm(120);
		for (uint64_t off = 0; off < 4 * IMAGE_BYTES / 5; off += sizeof(chunk)) {
			fill_random(&rng, chunk, sizeof(chunk));
			n = TXN(fs, fs_write(fs, ino_c, off, chunk, sizeof(chunk)));
			if (n != (ssize_t)sizeof(chunk))
				break;
			accepted += (uint64_t)n;
		}
		alarm(0);
		if (n >= 0)
			fail_msg("%llu bytes accepted by a dead disk, never refused",
				 (unsigned long long)accepted);
		assert_int_equal(n, -err);
		/* reads go on */
		expect_file(fs, "a", a, sizeof(a));
		assert_int_equal(fs_getattr(fs, ino_c, &st), 0);
		assert_int_equal((uint64_t)st.st_size, accepted);
		assert_int_equal(fs_sync(fs), -err);

		if (round == 0) {
			/* the disk comes back: the next fsync takes it all */
			pthread_mutex_lock(&f.mu);
			f.fail_write_at = 0;
			pthread_mutex_unlock(&f.mu);
			assert_int_equal(fs_sync(fs), 0);
			fill_random(&rng, chunk, sizeof(chunk));
			assert_int_equal(TXN(fs, fs_write(fs, ino_c, accepted, chunk, 100)), 100);
			accepted += 100;
			assert_int_equal(fs_unmount(fs), 0);
			bm_fault_fini(&f);
			fs = mount_with(NULL);
			expect_file(fs, "a", a, sizeof(a));
			expect_file(fs, "b", a, 10000);
			assert_int_equal(fs_lookup(fs, FS_INO_ROOT, "c", &st), 0);
			assert_int_equal((uint64_t)st.st_size, accepted);
			fs_forget(fs, st.st_ino, 1);
		} else {
			/* it never does: the unmount fails, the image stays as of
			 * the last good fsync */
			assert_int_equal(fs_unmount(fs), -err);
			bm_fault_fini(&f);
			fs = mount_with(NULL);
			expect_file(fs, "a", a, sizeof(a));
			expect_absent(fs, "b");
			expect_absent(fs, "c");
		}
		/* clean up for the next round */
		assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "a")), 0);
		if (round == 0) {
			assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "b")), 0);
			assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "c")), 0);
		}
		assert_int_equal(fs_unmount(fs), 0);
		if (run_fsck(round ? "dead disk" : "disk back") != 0)
			fail_msg("fsck found the image damaged");
		print_message("dead disk (%s): %llu bytes accepted, then refused%s\n",
			      strerror(err), (unsigned long long)accepted,
			      round ? "; the disk never came back" : "; the disk came back");
	}
}

struct writer {
	struct fs *fs;
	uint64_t ino;
	unsigned id;
	int err;
};

#define WRITERS	     8
#define WRITER_FILE  (6 * MiB)
#define WRITER_BYTES (48 * MiB)

static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	uint8_t *buf = malloc(MiB);
	uint64_t rng = wr->id;
	if (!buf) {
		wr->err = -ENOMEM;
		return NULL;
	}
	fill_random(&rng, buf, MiB);
	for (uint64_t done = 0; done < WRITER_BYTES && wr->err == 0; done += MiB) {
		buf[0] = (uint8_t)done;
		ssize_t n = TXN(wr->fs, fs_write(wr->fs, wr->ino, done % WRITER_FILE, buf, MiB));
		if (n != (ssize_t)MiB)
			wr->err = n < 0 ? (int)n : -EIO;
		if ((done / MiB) % 7 == (uint64_t)wr->id % 7) {
			int r = fs_sync(wr->fs);
			if (r < 0)
				wr->err = r;
		}
	}
	free(buf);
	return NULL;
}

/* Writers at once, each 1 MiB per request (the kernel's writeback sends a
 * dozen of those at a time): the pages they change together must never
 * outgrow what one checkpoint can journal, or no fsync could succeed again. */
static void t_concurrent_room(void **state)
{
	struct writer wr[WRITERS];
	pthread_t th[WRITERS];
	struct fs_config cfg = {
	    .image = image, .pool_bytes = 32 * MiB, .backend = BM_BACKEND_PLAIN};
	struct fs *fs = NULL;
	struct bm_stats s;

	unlink(image);
	int fd = open(image, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(bm_format(image, 96 * MiB, true), 0);
	struct bm_config bc = {.path = image,
			       .pool_bytes = POOL_BYTES,
			       .backend = BM_BACKEND_PLAIN,
			       .no_direct = true};
	struct bm *bm;
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, 0, 0), 0);
	assert_int_equal(bm_close(bm), 0);

	assert_int_equal(fs_mount(&cfg, &fs), 0);
	log_no_fit = 0;
	for (unsigned i = 0; i < WRITERS; i++) {
		char name[16];
		struct stat st;
		snprintf(name, sizeof(name), "w%u", i);
		assert_int_equal(
		    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, name, S_IFREG | 0644, 0, &st)),
		    0);
		wr[i] = (struct writer){.fs = fs, .ino = st.st_ino, .id = i};
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &wr[i]), 0);
	}
	for (unsigned i = 0; i < WRITERS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		if (wr[i].err)
			fail_msg("writer %u: %s", i, strerror(-wr[i].err));
	}
	bm_stats_get(fs_bm(fs), &s);
	assert_int_equal(log_no_fit, 0);
	assert_int_equal(fs_sync(fs), 0);
	assert_int_equal(fs_unmount(fs), 0);
	if (run_fsck("concurrent writers") != 0)
		fail_msg("fsck found the image damaged");
	print_message("concurrent writers: %u x %llu MiB in 1 MiB requests, %llu checkpoints, "
		      "dirty limit %llu pages\n",
		      WRITERS, (unsigned long long)(WRITER_BYTES / MiB),
		      (unsigned long long)s.checkpoints, (unsigned long long)s.dirty_limit);
}

/* A full image: every kind of request that needs space fails with ENOSPC
 * and leaves nothing half done (fsck: link counts, inode count, extents,
 * leaked pages); deleting makes room again. */
static void t_full_image(void **state)
{
	static uint8_t chunk[256 * 1024];
	uint64_t rng = 5, big, size = 0;
	unsigned made = 0, refused = 0;
	struct stat st;
	char name[FS_NAME_MAX + 1], longname[200];

	unlink(image);
	int fd = open(image, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(bm_format(image, 24 * MiB, true), 0);
	struct bm_config bc = {.path = image,
			       .pool_bytes = POOL_BYTES,
			       .backend = BM_BACKEND_PLAIN,
			       .no_direct = true};
	struct bm *bm;
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, 0, 0), 0);
	assert_int_equal(bm_close(bm), 0);

	struct fs *fs = mount_with(NULL);
	assert_int_equal(
	    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, "big", S_IFREG | 0644, 0, &st)), 0);
	big = st.st_ino;
	assert_int_equal(
	    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, "d", S_IFDIR | 0755, 0, &st)), 0);
	uint64_t dir = st.st_ino;
	assert_int_equal(
	    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, "small", S_IFREG | 0644, 0, &st)), 0);
	uint64_t small = st.st_ino;
	/* fill it with data */
	for (uint64_t off = 0;; off += sizeof(chunk)) {
		fill_random(&rng, chunk, sizeof(chunk));
		ssize_t n = TXN(fs, fs_write(fs, big, off, chunk, sizeof(chunk)));
		if (n > 0)
			size = off + (uint64_t)n;
		if (n == (ssize_t)sizeof(chunk))
			continue;
		assert_true(n == -ENOSPC || (n >= 0 && n < (ssize_t)sizeof(chunk)));
		break;
	}
	/* a little room back, for the names to fill up */
	struct fs_setattr sa = {.valid = FS_SET_SIZE, .size = size - 100 * 4096};
	assert_int_equal(TXN(fs, fs_setattr(fs, big, &sa, &st)), 0);
	assert_int_equal(fs_sync(fs), 0);
	/* then names, links, symlinks, directories, attributes until nothing
	 * fits: each either succeeds or fails with ENOSPC */
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	for (unsigned i = 0; i < 4000 && refused < 200; i++) {
		int r;
		snprintf(name, sizeof(name), "%.*s%u", (int)(i % 150), longname, i);
		switch (i % 5) {
		case 0:
			r = TXN(fs, fs_mknod(fs, &root_cred, dir, name, S_IFREG | 0644, 0, &st));
			break;
		case 1:
			r = TXN(fs, fs_symlink(fs, &root_cred, dir, name, longname, &st));
			break;
		case 2:
			r = TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, name, S_IFDIR | 0755, 0,
					     &st));
			break;
		case 3:
			r = TXN(fs, fs_link(fs, small, dir, name, &st));
			break;
		default:
			r = TXN(fs, fs_setxattr(fs, big, "user.x", chunk, 1 + i % 4000, 0));
			if (r == -EEXIST || r == 0)
				r = TXN(fs, fs_setxattr(fs, dir, name, chunk, 60, 0));
			if (r == -EOPNOTSUPP || r == -ERANGE)
				r = 0;
			break;
		}
		if (r == -ENOSPC) {
			refused++;
			continue;
		}
		if (r < 0)
			fail_msg("request %u: %s, expected success or ENOSPC", i, strerror(-r));
		if (i % 5 != 4) {
			fs_forget(fs, st.st_ino, 1);
			made++;
		}
	}
	assert_true(refused > 0);
	assert_int_equal(fs_sync(fs), 0);
	assert_int_equal(fs_unmount(fs), 0);
	if (run_fsck("a full image") != 0)
		fail_msg("fsck found the full image damaged");
	/* deleting gives the space back, and writing works again */
	fs = mount_with(NULL);
	assert_int_equal(TXN(fs, fs_unlink(fs, FS_INO_ROOT, "big")), 0);
	assert_int_equal(fs_sync(fs), 0);
	assert_int_equal(
	    TXN(fs, fs_mknod(fs, &root_cred, FS_INO_ROOT, "again", S_IFREG | 0644, 0, &st)), 0);
	assert_int_equal(TXN(fs, fs_write(fs, st.st_ino, 0, chunk, sizeof(chunk))),
			 (ssize_t)sizeof(chunk));
	assert_int_equal(fs_unmount(fs), 0);
	if (run_fsck("a full image, emptied") != 0)
		fail_msg("fsck found the image damaged after the delete");
	print_message("full image: %u names made, then %u requests refused with ENOSPC\n", made,
		      refused);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(t_concurrent_room, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_full_image, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_transient, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_dead_disk, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_power_loss, setup, teardown),
	};
	if (getenv("VS_CRASH_ONLY")) /* e.g. t_power_loss */
		cmocka_set_test_filter(getenv("VS_CRASH_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
