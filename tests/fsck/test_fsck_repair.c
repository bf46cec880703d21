/*
 * test_fsck_repair.c: fsck.virtuscale repairing precise damage.
 *
 * Each test builds a small filesystem with the fs library (no mount), damages
 * it in one way through the engine (bt_* on the filesystem tree, bm_alloc)
 * or by editing bytes of the image (bitmap bits, page bytes), and then runs
 * the real fsck binary ($VS_FSCK):
 *
 *   fsck -n   exits 4 and names the damage, and the image's bytes and mtime
 *             are unchanged;
 *   fsck      exits 1, prints the repair line, "N problems corrected, 0 left";
 *             (1 | 4 = 5 when something was repaired and something left)
 *   fsck      again exits 0 (and writes nothing);
 *
 * and finally mounts the image with the fs library to check that the files
 * read back and the counts are right. Damage fsck must not repair (bad
 * checksums in file data or in the tree) exits 4 in both modes and leaves
 * the image untouched. One test kills fsck at random moments during a
 * repair: every interrupted run must leave an image the next run finishes.
 *
 * Salvage: a tree of several hundred records (an inner root over leaves)
 * with its root, a leaf of directory entries or a leaf of inode records
 * zeroed or flipped on disk. fsck -n says what a repair would keep and
 * writes nothing; fsck rebuilds the tree (1), a second run is clean, and
 * every file whose records were not in the damaged page reads back as it
 * was, where it was or, its name gone, in /lost+found; what was lost is on
 * "lost:" lines.
 *
 * Without VS_FSCK the tests are skipped (exit 77).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/bm_fault.h"
#include "engine/btree.h"
#include "engine/btree_node.h"
#include "fs/fs.h"
#include "fs/keys.h"

#define MiB	    (UINT64_C(1) << 20)
#define IMAGE_BYTES (64 * MiB)
#define POOL_BYTES  (16 * MiB)
#define DT_DIR_	    (S_IFDIR >> 12)
#define DT_REG_	    (S_IFREG >> 12)

static const char *fsck_bin;
static char image[256];
static char out[1 << 16]; /* the last fsck run's output */
static const struct fs_cred root_cred = {0, 0};

/* Inodes of the standard tree (make_tree). */
static uint64_t ino_a, ino_small, ino_big, ino_d, ino_sub, ino_subfile, ino_lone, ino_sym;

/* ------------------------------------------------------------------ */
/* Image and fsck                                                     */

static struct fs *do_mount(void)
{
	struct fs_config cfg = {
	    .image = image, .pool_bytes = POOL_BYTES, .backend = BM_BACKEND_PLAIN};
	struct fs *fs = NULL;
	int r = fs_mount(&cfg, &fs);
	if (r < 0)
		fail_msg("mount: %s", strerror(-r));
	return fs;
}

static void pattern(uint8_t *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(i * 7 + seed * 13 + (i >> 12));
}

static uint64_t mk(struct fs *fs, uint64_t parent, const char *name, mode_t mode)
{
	struct stat st;
	int r = fs_mknod(fs, &root_cred, parent, name, mode, 0, &st);
	if (r < 0)
		fail_msg("mknod %s: %s", name, strerror(-r));
	return st.st_ino;
}

static void write_pattern(struct fs *fs, uint64_t ino, size_t n, unsigned seed)
{
	uint8_t *buf = malloc(n);
	assert_non_null(buf);
	pattern(buf, n, seed);
	assert_int_equal(fs_write(fs, ino, 0, buf, n), (ssize_t)n);
	free(buf);
}

/*
 *   /a/small        inline, "hello"
 *   /a/big          5 pages of pattern 1, xattr user.k, also named /hard
 *   /d/sub/file     2 pages of pattern 2
 *   /d/lone         3 pages of pattern 3
 *   /sym -> a/big
 */
static void make_tree(void)
{
	struct stat st;
	struct fs *fs = do_mount();

	ino_a = mk(fs, FS_INO_ROOT, "a", S_IFDIR | 0755);
	ino_small = mk(fs, ino_a, "small", S_IFREG | 0644);
	assert_int_equal(fs_write(fs, ino_small, 0, "hello", 5), 5);
	ino_big = mk(fs, ino_a, "big", S_IFREG | 0644);
	write_pattern(fs, ino_big, 5 * 4096, 1);
	assert_int_equal(fs_setxattr(fs, ino_big, "user.k", "value", 5, 0), 0);
	assert_int_equal(fs_link(fs, ino_big, FS_INO_ROOT, "hard", &st), 0);
	ino_d = mk(fs, FS_INO_ROOT, "d", S_IFDIR | 0755);
	ino_sub = mk(fs, ino_d, "sub", S_IFDIR | 0755);
	ino_subfile = mk(fs, ino_sub, "file", S_IFREG | 0600);
	write_pattern(fs, ino_subfile, 2 * 4096, 2);
	ino_lone = mk(fs, ino_d, "lone", S_IFREG | 0644);
	write_pattern(fs, ino_lone, 3 * 4096, 3);
	assert_int_equal(fs_symlink(fs, &root_cred, FS_INO_ROOT, "sym", "a/big", &st), 0);
	ino_sym = st.st_ino;
	assert_int_equal(fs_unmount(fs), 0);
}

static int setup(void **state)
{
	const char *tmp = getenv("VS_TEST_TMP") ? getenv("VS_TEST_TMP") : "/tmp";
	struct bm_config bc = {.pool_bytes = POOL_BYTES, .backend = BM_BACKEND_PLAIN};
	struct bm *bm;

	snprintf(image, sizeof(image), "%s/vs-fsck-repair.XXXXXX", tmp);
	int fd = mkstemp(image);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(bm_format(image, IMAGE_BYTES, true), 0);
	bc.path = image;
	assert_int_equal(bm_open(&bc, &bm), 0);
	assert_int_equal(fs_format(bm, getuid(), getgid()), 0);
	assert_int_equal(bm_close(bm), 0);
	make_tree();
	return 0;
}

static int teardown(void **state)
{
	unlink(image);
	return 0;
}

/* Run fsck with @args (NULL-terminated, before the image); output in out[]. */
static int run_fsck(const char *arg, ...)
{
	char path[300];
	const char *argv[8];
	int n = 0;
	va_list ap;

	argv[n++] = fsck_bin;
	va_start(ap, arg);
	for (const char *a = arg; a && n < 6; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n++] = image;
	argv[n] = NULL;
	snprintf(path, sizeof(path), "%s.out", image);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(127);
		execv(fsck_bin, (char *const *)argv);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	size_t len = fread(out, 1, sizeof(out) - 1, fp);
	out[len] = 0;
	fclose(fp);
	unlink(path);
	printf("---- fsck %s(exit %d)\n%s", arg ? arg : "", WEXITSTATUS(status), out);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void expect_out(const char *needle)
{
	if (!strstr(out, needle))
		fail_msg("fsck output lacks \"%s\"", needle);
}

struct digest {
	uint64_t hash;
	struct timespec mtime;
};

static struct digest digest(void)
{
	struct digest d;
	struct stat st;
	int fd = open(image, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	XXH3_state_t *s = XXH3_createState();
	XXH3_64bits_reset(s);
	static uint8_t buf[1 << 20];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		XXH3_64bits_update(s, buf, (size_t)n);
	close(fd);
	d.hash = XXH3_64bits_digest(s);
	XXH3_freeState(s);
	d.mtime = st.st_mtim;
	return d;
}

/* fsck -n: exit @code, and not one byte (nor the mtime) changed. */
static void check_readonly(int code)
{
	struct digest before = digest();
	assert_int_equal(run_fsck("-n", NULL), code);
	struct digest after = digest();
	assert_true(before.hash == after.hash);
	assert_true(before.mtime.tv_sec == after.mtime.tv_sec &&
		    before.mtime.tv_nsec == after.mtime.tv_nsec);
}

/* The standard sequence for repairable damage: -n reports (4), a repair
 * fixes (1) with @fixed in its output, @corrected problems in all, and a
 * second run finds it clean (0). */
static void check_repairs(const char *damage, const char *fixed, unsigned corrected)
{
	check_readonly(4);
	expect_out(damage);
	expect_out("(repairable)");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out(fixed);
	char summary[64];
	snprintf(summary, sizeof(summary), "\n%u problems corrected, 0 left\n", corrected);
	expect_out(summary);
	assert_int_equal(run_fsck(NULL), 0);
	expect_out("0 problems corrected, 0 left");
	check_readonly(0);
}

/* ------------------------------------------------------------------ */
/* Damage                                                             */

static struct bm *open_raw(void)
{
	struct bm_config bc = {
	    .path = image, .pool_bytes = POOL_BYTES, .backend = BM_BACKEND_PLAIN};
	struct bm *bm;
	assert_int_equal(bm_open(&bc, &bm), 0);
	return bm;
}

static struct bt tree_of(struct bm *bm)
{
	return bt_open(bm, bm_sb_get(bm, FS_SB_ROOT));
}

struct find_ctx {
	uint64_t dir;
	const char *name;
	uint64_t slot, child;
	bool found;
};

static bool find_fn(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct find_ctx *c = ctx;
	const uint8_t *k = key, *v = val;
	if (!fs_key_is(k, klen, c->dir, FS_REC_DIRENT))
		return fs_key_obj(k) == c->dir && k[8] < FS_REC_DIRENT;
	if (vlen >= 1 && v[0] == strlen(c->name) && memcmp(v + 1, c->name, v[0]) == 0) {
		c->slot = fs_key_off(k);
		c->child = fs_get_le64(v + 1 + v[0]);
		c->found = true;
		return false;
	}
	return true;
}

/* The slot of entry @name in directory @dir. */
static uint64_t dirent_slot(struct bm *bm, uint64_t dir, const char *name)
{
	struct bt t = tree_of(bm);
	struct find_ctx c = {.dir = dir, .name = name};
	uint8_t key[FS_KEY_LEN];
	fs_key(key, dir, 0, 0);
	assert_int_equal(bt_scan_asc(&t, key, sizeof(key), find_fn, &c), 0);
	if (!c.found)
		fail_msg("no entry %s in %llu", name, (unsigned long long)dir);
	return c.slot;
}

static void dirent_remove(struct bm *bm, uint64_t dir, const char *name)
{
	struct bt t = tree_of(bm);
	uint8_t key[FS_KEY_LEN];
	fs_key(key, dir, FS_REC_DIRENT, dirent_slot(bm, dir, name));
	assert_int_equal(bt_remove(&t, key, sizeof(key)), 0);
}

static void dirent_insert(struct bm *bm, uint64_t dir, uint64_t slot, const char *name,
			  uint64_t child, uint8_t type)
{
	struct bt t = tree_of(bm);
	uint8_t key[FS_KEY_LEN], v[300];
	unsigned n = (unsigned)strlen(name);
	v[0] = (uint8_t)n;
	memcpy(v + 1, name, n);
	fs_put_le64(v + 1 + n, child);
	v[1 + n + 8] = type;
	fs_key(key, dir, FS_REC_DIRENT, slot);
	assert_int_equal(bt_insert(&t, key, sizeof(key), v, 1 + n + 9), 0);
}

struct field {
	unsigned off, width; /* 4 or 8 */
	int64_t delta;	     /* added, or */
	bool set;
	uint64_t value; /* set */
};

static int field_fn(void *ctx, void *val, unsigned vlen)
{
	struct field *fd = ctx;
	uint8_t *v = val;
	assert_int_equal(vlen, FS_INODE_LEN);
	uint64_t cur = fd->width == 4 ? fs_get_le32(v + fd->off) : fs_get_le64(v + fd->off);
	uint64_t nv = fd->set ? fd->value : cur + (uint64_t)fd->delta;
	if (fd->width == 4)
		fs_put_le32(v + fd->off, (uint32_t)nv);
	else
		fs_put_le64(v + fd->off, nv);
	return 0;
}

#define OFF_NLINK 12
#define OFF_SIZE  16

static void inode_field(struct bm *bm, uint64_t ino, unsigned off, bool set, int64_t v)
{
	struct bt t = tree_of(bm);
	uint8_t key[FS_KEY_LEN];
	struct field fd = {off, off == OFF_NLINK ? 4 : 8, v, set, (uint64_t)v};
	fs_key(key, ino, FS_REC_INODE, 0);
	assert_int_equal(bt_update(&t, key, sizeof(key), field_fn, &fd), 0);
}

/* First pid of the first extent of @ino. */
static uint64_t first_data_pid(struct bm *bm, uint64_t ino)
{
	struct bt t = tree_of(bm);
	uint8_t key[FS_KEY_LEN], v[FS_EXTENT_LEN];
	unsigned len;
	fs_key(key, ino, FS_REC_EXTENT, 0);
	assert_int_equal(bt_lookup(&t, key, sizeof(key), v, sizeof(v), &len), 0);
	return fs_get_le64(v);
}

/* Raw bytes of the image. */
static void raw_rw(uint64_t off, void *buf, size_t n, bool wr)
{
	int fd = open(image, O_RDWR);
	assert_true(fd >= 0);
	ssize_t r = wr ? pwrite(fd, buf, n, (off_t)off) : pread(fd, buf, n, (off_t)off);
	assert_int_equal(r, (ssize_t)n);
	close(fd);
}

/* The allocation bitmap, edited behind the engine's back (superblock
 * offset 24: its first pid; one bit per pid, little-endian words). */
static void bitmap_bit(uint64_t pid, bool on)
{
	uint8_t sb[32], b;
	raw_rw(0, sb, sizeof(sb), false);
	uint64_t start;
	memcpy(&start, sb + 24, 8);
	uint64_t off = start * 4096 + pid / 8;
	raw_rw(off, &b, 1, false);
	b = on ? (uint8_t)(b | (1u << (pid % 8))) : (uint8_t)(b & ~(1u << (pid % 8)));
	raw_rw(off, &b, 1, true);
}

static void flip_byte(uint64_t pid, unsigned at)
{
	uint8_t b;
	raw_rw(pid * 4096 + at, &b, 1, false);
	b ^= 0x5a;
	raw_rw(pid * 4096 + at, &b, 1, true);
}

/* Damage tree node @pid: a byte flipped at @at, or (@at < 0) the whole page
 * zeroed; and its copy with it, on an image that keeps copies of nodes in
 * the page after them (the same bytes): the damage must be past what the
 * copy repairs. */
static void damage_node(uint64_t pid, int at)
{
	static const uint8_t zeros[4096];
	uint8_t a[4096], b[4096];
	raw_rw(pid * 4096, a, sizeof(a), false);
	raw_rw((pid + 1) * 4096, b, sizeof(b), false);
	bool copy = memcmp(a, b, sizeof(a)) == 0;
	for (uint64_t p = pid; p <= pid + copy; p++) {
		if (at >= 0)
			flip_byte(p, (unsigned)at);
		else
			raw_rw(p * 4096, (void *)zeros, sizeof(zeros), true);
	}
}

/* ------------------------------------------------------------------ */
/* Checks after repair                                                */

static void expect_data(struct fs *fs, uint64_t ino, size_t n, unsigned seed)
{
	uint8_t *want = malloc(n), *got = malloc(n + 1);
	assert_non_null(want);
	assert_non_null(got);
	pattern(want, n, seed);
	assert_int_equal(fs_read(fs, ino, 0, n + 1, got), (ssize_t)n);
	assert_memory_equal(got, want, n);
	free(want);
	free(got);
}

static uint64_t lookup(struct fs *fs, uint64_t dir, const char *name)
{
	struct stat st;
	int r = fs_lookup(fs, dir, name, &st);
	return r < 0 ? 0 : st.st_ino;
}

static struct stat attr(struct fs *fs, uint64_t ino)
{
	struct stat st;
	assert_int_equal(fs_getattr(fs, ino, &st), 0);
	return st;
}

static uint64_t free_pages(void)
{
	struct fs *fs = do_mount();
	struct statvfs sv;
	assert_int_equal(fs_statfs(fs, &sv), 0);
	assert_int_equal(fs_unmount(fs), 0);
	return sv.f_bfree;
}

/* Everything make_tree made, as it made it. */
static void expect_tree(struct fs *fs)
{
	char buf[16];
	assert_int_equal(lookup(fs, FS_INO_ROOT, "a"), ino_a);
	assert_int_equal(lookup(fs, ino_a, "small"), ino_small);
	assert_int_equal(fs_read(fs, ino_small, 0, sizeof(buf), buf), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(lookup(fs, ino_a, "big"), ino_big);
	assert_int_equal(lookup(fs, FS_INO_ROOT, "hard"), ino_big);
	expect_data(fs, ino_big, 5 * 4096, 1);
	assert_int_equal(attr(fs, ino_big).st_nlink, 2);
	assert_int_equal(lookup(fs, ino_d, "lone"), ino_lone);
	expect_data(fs, ino_lone, 3 * 4096, 3);
	assert_int_equal(lookup(fs, FS_INO_ROOT, "sym"), ino_sym);
}

/* ------------------------------------------------------------------ */
/* Tests                                                              */

/* A clean image: 0 in both modes, and neither writes. */
static void t_clean(void **state)
{
	check_readonly(0);
	expect_out("0 problems corrected, 0 left");
	struct digest before = digest();
	assert_int_equal(run_fsck(NULL), 0);
	struct digest after = digest();
	assert_true(before.hash == after.hash);
}

/* Pages allocated that nothing uses, one of them with a bad checksum. */
static void t_leaked_pages(void **state)
{
	uint64_t before = free_pages(), first;
	struct bm *bm = open_raw();
	assert_int_equal(bm_alloc(bm, 3, BM_PID_NONE, &first), 0);
	assert_int_equal(bm_close(bm), 0);
	assert_int_equal(free_pages(), before - 3);

	check_repairs("3 allocated pages belong to nothing (leaked)", "3 pages freed", 1);
	assert_int_equal(free_pages(), before);
	struct fs *fs = do_mount();
	expect_tree(fs);
	assert_int_equal(fs_unmount(fs), 0);
}

/* Bitmap bits flipped by hand: a free page marked used, a file's data page
 * and the tree's root page marked free. The superblock's free count no
 * longer matches the bitmap either. */
static void t_bitmap_bits(void **state)
{
	uint64_t before = free_pages();
	struct bm *bm = open_raw();
	uint64_t data = first_data_pid(bm, ino_lone) + 1;
	uint64_t root = bm_sb_get(bm, FS_SB_ROOT), spare;
	assert_int_equal(bm_alloc(bm, 1, BM_PID_NONE, &spare), 0);
	bm_free(bm, spare, 1); /* a page known to be free */
	assert_int_equal(bm_close(bm), 0);
	bitmap_bit(spare, true);
	bitmap_bit(data, false);
	bitmap_bit(root, false);

	check_readonly(4);
	char want[128];
	snprintf(want, sizeof(want), "tree: node %llu is in use but free in the bitmap",
		 (unsigned long long)root);
	expect_out(want);
	char want2[128];
	snprintf(want2, sizeof(want2), "(/d/lone): extent at 0: 1 of its pages %llu+3 is free",
		 (unsigned long long)(data - 1));
	expect_out(want2);
	expect_out("1 allocated page belongs to nothing (leaked)");
	expect_out("superblock: free page count");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("1 page marked in use");
	expect_out("1 page freed");
	expect_out("FIXED: superblock: free page count");
	expect_out(", 0 left\n");
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);
	assert_int_equal(free_pages(), before);
	struct fs *fs = do_mount();
	expect_tree(fs);
	assert_int_equal(fs_unmount(fs), 0);
}

/* Wrong link counts: a file with two names says 5, a directory with one
 * subdirectory says 7. */
static void t_nlink(void **state)
{
	struct bm *bm = open_raw();
	inode_field(bm, ino_big, OFF_NLINK, true, 5);
	inode_field(bm, ino_d, OFF_NLINK, true, 7);
	assert_int_equal(bm_close(bm), 0);

	check_readonly(4);
	expect_out("(/hard): nlink 5, but 2 entries name it"); /* the first name */
	expect_out("(/d): nlink 7, expected 3");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("nlink set to 2");
	expect_out("nlink set to 3");
	expect_out("2 problems corrected, 0 left");
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);
	struct fs *fs = do_mount();
	expect_tree(fs);
	assert_int_equal(attr(fs, ino_d).st_nlink, 3);
	assert_int_equal(fs_unmount(fs), 0);
}

/* A file whose last entry went but whose inode stayed, with nlink 0 and no
 * orphan record: freed with its extents and xattr. */
static void t_unnamed_nlink0(void **state)
{
	uint64_t before = free_pages();
	struct bm *bm = open_raw();
	dirent_remove(bm, ino_d, "lone");
	inode_field(bm, ino_d, OFF_SIZE, false, -1);
	inode_field(bm, ino_lone, OFF_NLINK, true, 0);
	assert_int_equal(bm_close(bm), 0);

	char want[128];
	snprintf(want, sizeof(want), "inode %llu (mode 0100644): nlink 0 and named by no entry",
		 (unsigned long long)ino_lone);
	check_repairs(want, "inode removed with its records, 3 data pages freed", 1);
	assert_true(free_pages() >= before + 3);
	struct fs *fs = do_mount();
	assert_int_equal(lookup(fs, ino_d, "lone"), 0);
	assert_int_equal(fs_getattr(fs, ino_lone, &(struct stat){0}), -ENOENT);
	assert_int_equal(attr(fs, ino_d).st_size, 1);
	assert_int_equal(fs_unmount(fs), 0);
}

/* A file and a directory that no entry names any more, nlink > 0: both go
 * to /lost+found (made), named by inode number, contents intact. */
static void t_lost_found(void **state)
{
	struct bm *bm = open_raw();
	dirent_remove(bm, ino_d, "lone");
	dirent_remove(bm, ino_d, "sub");
	inode_field(bm, ino_d, OFF_SIZE, false, -2);
	inode_field(bm, ino_d, OFF_NLINK, false, -1);
	assert_int_equal(bm_close(bm), 0);

	check_readonly(4);
	expect_out("named by no directory entry");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("note: created /lost+found");
	char want[64];
	snprintf(want, sizeof(want), "reconnected as /lost+found/#%llu",
		 (unsigned long long)ino_lone);
	expect_out(want);
	snprintf(want, sizeof(want), "reconnected as /lost+found/#%llu",
		 (unsigned long long)ino_sub);
	expect_out(want);
	expect_out("2 problems corrected, 0 left"); /* no counter fix-ups of its own */
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);

	struct fs *fs = do_mount();
	uint64_t lf = lookup(fs, FS_INO_ROOT, "lost+found");
	assert_true(lf != 0);
	struct stat st = attr(fs, lf);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(st.st_nlink, 3);
	assert_int_equal(st.st_size, 2);
	snprintf(want, sizeof(want), "#%llu", (unsigned long long)ino_lone);
	assert_int_equal(lookup(fs, lf, want), ino_lone);
	expect_data(fs, ino_lone, 3 * 4096, 3);
	assert_int_equal(attr(fs, ino_lone).st_nlink, 1);
	snprintf(want, sizeof(want), "#%llu", (unsigned long long)ino_sub);
	assert_int_equal(lookup(fs, lf, want), ino_sub);
	assert_int_equal(lookup(fs, ino_sub, "file"), ino_subfile);
	expect_data(fs, ino_subfile, 2 * 4096, 2);
	/* The inode counter knows about /lost+found: a new file gets a new
	 * number, and the image stays clean. */
	uint64_t f2 = mk(fs, FS_INO_ROOT, "new", S_IFREG | 0644);
	assert_true(f2 > lf);
	assert_int_equal(fs_unmount(fs), 0);
	assert_int_equal(run_fsck("-n", NULL), 0);
}

/* Entries naming inodes that do not exist: removed, and the directory's
 * size and link count follow. */
static void t_dangling(void **state)
{
	struct bm *bm = open_raw();
	uint64_t base = dirent_slot(bm, ino_a, "small");
	dirent_insert(bm, ino_a, base + 1000, "ghost", 999999, DT_REG_);
	dirent_insert(bm, ino_a, base + 2000, "ghostdir", 999998, DT_DIR_);
	inode_field(bm, ino_a, OFF_SIZE, false, 2);
	inode_field(bm, ino_a, OFF_NLINK, false, 1);
	assert_int_equal(bm_close(bm), 0);

	check_readonly(4);
	char want[128];
	snprintf(want, sizeof(want),
		 "inode %llu (/a): entry 'ghost' names inode 999999, which does not exist",
		 (unsigned long long)ino_a);
	expect_out(want);
	expect_out("entry 'ghostdir' names inode 999998");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("entry removed (directory size now 3, nlink 3)");
	expect_out("entry removed (directory size now 2, nlink 2)");
	expect_out("2 problems corrected, 0 left");
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);
	struct fs *fs = do_mount();
	assert_int_equal(lookup(fs, ino_a, "ghost"), 0);
	struct stat st = attr(fs, ino_a);
	assert_int_equal(st.st_size, 2);
	assert_int_equal(st.st_nlink, 2);
	expect_tree(fs);
	assert_int_equal(fs_unmount(fs), 0);
}

/* Records of an inode that does not exist (its inode record removed): the
 * records go, their pages are freed, the entries naming it go. */
static void t_stray_records(void **state)
{
	uint64_t before = free_pages();
	struct bm *bm = open_raw();
	struct bt t = tree_of(bm);
	uint8_t key[FS_KEY_LEN];
	fs_key(key, ino_lone, FS_REC_INODE, 0);
	assert_int_equal(bt_remove(&t, key, sizeof(key)), 0);
	assert_int_equal(bm_close(bm), 0);

	check_readonly(4);
	char want[128];
	snprintf(want, sizeof(want), "inode %llu does not exist, but ",
		 (unsigned long long)ino_lone);
	expect_out(want);
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("1 record removed");
	expect_out("entry removed");
	expect_out("3 pages freed");
	expect_out(", 0 left\n");
	assert_int_equal(run_fsck(NULL), 0);
	assert_true(free_pages() >= before + 3);
}

/* A crash with a file unlinked but still open leaves it on the orphan list:
 * consistent (-n says 0), and a repair run frees it. */
static void t_orphan_list(void **state)
{
	uint64_t before = free_pages();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct fs *fs = do_mount();
		struct stat st;
		static uint8_t data[64 * 1024];
		if (fs_mknod(fs, &root_cred, FS_INO_ROOT, "orph", S_IFREG | 0644, 0, &st) < 0 ||
		    fs_open(fs, st.st_ino, O_RDWR) < 0 ||
		    fs_write(fs, st.st_ino, 0, data, sizeof(data)) != sizeof(data) ||
		    fs_unlink(fs, FS_INO_ROOT, "orph") < 0 || fs_sync(fs) < 0)
			_exit(1);
		_exit(0); /* no unmount: a crash */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	check_readonly(0);
	expect_out("1 inode on the orphan list");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("unlinked while open when the filesystem stopped (on the orphan list): inode "
		   "removed with its records, 16 data pages freed");
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);
	assert_int_equal(free_pages(), before);
	struct fs *fs = do_mount();
	expect_tree(fs);
	assert_int_equal(fs_unmount(fs), 0);
}

/* A flipped byte in file data: reported with the file's name, never
 * "repaired", the image left alone in both modes. */
static void t_bad_data_page(void **state)
{
	struct bm *bm = open_raw();
	uint64_t pid = first_data_pid(bm, ino_big) + 2;
	assert_int_equal(bm_close(bm), 0);
	flip_byte(pid, 100);

	char want[160];
	snprintf(want, sizeof(want),
		 "page %llu: checksum mismatch (data of inode %llu (/hard) at file offset 8192",
		 (unsigned long long)pid, (unsigned long long)ino_big);
	check_readonly(4);
	expect_out(want);
	struct digest d0 = digest();
	assert_int_equal(run_fsck(NULL), 4);
	expect_out(want);
	expect_out("0 problems corrected, 1 left");
	struct digest d1 = digest();
	assert_true(d0.hash == d1.hash);

	/* With repairable damage beside it: that is repaired, the data page
	 * stays bad, and the exit status says both (1 | 4). */
	struct bm *bm2 = open_raw();
	inode_field(bm2, ino_lone, OFF_NLINK, true, 4);
	assert_int_equal(bm_close(bm2), 0);
	assert_int_equal(run_fsck(NULL), 5);
	expect_out("nlink set to 1");
	expect_out("1 problems corrected, 1 left");
	assert_int_equal(run_fsck("-n", NULL), 4);
	expect_out(want);
	expect_out("0 problems corrected, 1 left\n");
}

/* A damaged tree whose only page is the damaged one: nothing can be
 * salvaged, so nothing is repaired, even repairable damage elsewhere, and
 * nothing is written. */
static void t_bad_tree_page(void **state)
{
	struct bm *bm = open_raw();
	uint64_t root = bm_sb_get(bm, FS_SB_ROOT);
	inode_field(bm, ino_big, OFF_NLINK, true, 9);
	assert_int_equal(bm_close(bm), 0);
	damage_node(root, 4000);

	char want[128];
	snprintf(want, sizeof(want), "tree: page %llu: checksum mismatch",
		 (unsigned long long)root);
	check_readonly(4);
	expect_out(want);
	struct digest d0 = digest();
	assert_int_equal(run_fsck(NULL), 4);
	expect_out(want);
	expect_out("salvage: no inode record can be read (1 tree page unreadable): the tree "
		   "cannot be rebuilt");
	expect_out("0 problems corrected");
	struct digest d1 = digest();
	assert_true(d0.hash == d1.hash);
}

/* fsck killed at random moments while repairing much damage: each run
 * leaves an image the next run can open (replaying the journal if need be)
 * and carry on with; the last one ends clean. */
static void t_killed_during_repair(void **state)
{
	struct fs *fs = do_mount();
	uint64_t inos[200];
	char name[32];
	for (unsigned i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		inos[i] = mk(fs, ino_d, name, S_IFREG | 0644);
		if (i % 4 == 0)
			write_pattern(fs, inos[i], 4096, i);
	}
	assert_int_equal(fs_unmount(fs), 0);
	struct bm *bm = open_raw();
	for (unsigned i = 0; i < 200; i++)
		inode_field(bm, inos[i], OFF_NLINK, true, 3 + i % 5);
	for (unsigned i = 0; i < 200; i += 3) {
		snprintf(name, sizeof(name), "f%u", i);
		dirent_remove(bm, ino_d, name);
	}
	uint64_t first;
	assert_int_equal(bm_alloc(bm, 40, BM_PID_NONE, &first), 0);
	assert_int_equal(bm_close(bm), 0);

	/* A repair run checks the image about five times (read-only, each
	 * round, the verdict): kill anywhere in the first six checks' time. */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(run_fsck("-n", NULL), 4);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long check_us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
	srand((unsigned)time(NULL));
	unsigned killed = 0;
	for (unsigned round = 0; round < 12; round++) {
		const char *argv[] = {fsck_bin, image, NULL};
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);
			dup2(fd, 1);
			dup2(fd, 2);
			execv(fsck_bin, (char *const *)argv);
			_exit(127);
		}
		usleep((useconds_t)(rand() % (6 * check_us + 1)));
		kill(pid, SIGKILL);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (WIFSIGNALED(status))
			killed++;
		else
			assert_true(WEXITSTATUS(status) <= 1);
	}
	printf("fsck killed %u times of 12 (one check: %ld us)\n", killed, check_us);
	int code = run_fsck(NULL);
	assert_true(code == 0 || code == 1);
	expect_out(", 0 left\n");
	check_readonly(0);
	fs = do_mount();
	expect_tree(fs);
	for (unsigned i = 1; i < 200; i += 4) {
		if (i % 3 == 0)
			continue;
		snprintf(name, sizeof(name), "f%u", i);
		assert_int_equal(lookup(fs, ino_d, name), inos[i]);
		assert_int_equal(attr(fs, inos[i]).st_nlink, 1);
	}
	assert_int_equal(fs_unmount(fs), 0);
}

/* A crash after a checkpoint's commit point and before its home writes were
 * synced: the image needs its journal replayed. -n cannot (8, nothing
 * written); a repair run replays it (1), and what the checkpoint held is
 * there afterwards. */
static void t_journal_replay(void **state)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static struct bm_fault fault;
		bm_fault_init(&fault);
		fault.record = true;
		struct fs_config cfg = {.image = image,
					.pool_bytes = POOL_BYTES,
					.backend = BM_BACKEND_PLAIN,
					.fault = &fault,
					.checkpoint_ms = 3600 * 1000};
		struct fs *fs;
		struct stat st;
		static uint8_t data[2 * 4096];
		pattern(data, sizeof(data), 4);
		if (fs_mount(&cfg, &fs) < 0 ||
		    fs_mknod(fs, &root_cred, FS_INO_ROOT, "replayed", S_IFREG | 0644, 0, &st) < 0 ||
		    fs_write(fs, st.st_ino, 0, data, sizeof(data)) != sizeof(data))
			_exit(1);
		/* A checkpoint syncs the journal (its commit point), then the
		 * home pages: fail the second, and lose power, so that some
		 * home writes never happened (the undo is seeded: the same
		 * ones every run). */
		pthread_mutex_lock(&fault.mu);
		fault.fail_sync_at = fault.syncs + 2;
		pthread_mutex_unlock(&fault.mu);
		if (fs_sync(fs) == 0)
			_exit(2);
		bm_abandon(fs_bm(fs));
		if (bm_fault_power_loss(&fault, image, 7, false) <= 0)
			_exit(3);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	check_readonly(8);
	expect_out("needs its journal replayed");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("FIXED: journal: the image was left in the middle of a checkpoint");
	expect_out("1 problems corrected, 0 left");
	check_readonly(0);
	struct fs *fs = do_mount();
	uint64_t ino = lookup(fs, FS_INO_ROOT, "replayed");
	assert_true(ino != 0);
	expect_data(fs, ino, 2 * 4096, 4);
	expect_tree(fs);
	/* Counters recounted as a mount after a crash would: new numbers. */
	assert_true(mk(fs, FS_INO_ROOT, "after", S_IFREG | 0644) > ino);
	assert_int_equal(fs_unmount(fs), 0);
}

/* ------------------------------------------------------------------ */
/* Salvage                                                            */

#define MANY	100
#define SUBDIRS 24
#define INO_CAP 4096

static uint64_t ino_many, many_inos[MANY], sub_inos[SUBDIRS], subf_inos[SUBDIRS];

static size_t many_size(unsigned i)
{
	return i % 4 == 0 ? 6000 + i : 200 + i; /* extents, else inline */
}

/* /many: MANY files f0.. and SUBDIRS directories s0.., each holding one
 * file "inner"; enough records for a tree of an inner root over leaves. */
static void make_many(void)
{
	struct fs *fs = do_mount();
	char name[32];
	ino_many = mk(fs, FS_INO_ROOT, "many", S_IFDIR | 0755);
	for (unsigned i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "f%u-with-a-longer-name-%u", i, i * 7919);
		many_inos[i] = mk(fs, ino_many, name, S_IFREG | 0644);
		write_pattern(fs, many_inos[i], many_size(i), 100 + i);
		assert_true(many_inos[i] < INO_CAP);
	}
	for (unsigned j = 0; j < SUBDIRS; j++) {
		snprintf(name, sizeof(name), "s%u", j);
		sub_inos[j] = mk(fs, ino_many, name, S_IFDIR | 0755);
		subf_inos[j] = mk(fs, sub_inos[j], "inner", S_IFREG | 0600);
		write_pattern(fs, subf_inos[j], 3000, 500 + j);
		assert_true(subf_inos[j] < INO_CAP);
	}
	assert_int_equal(fs_unmount(fs), 0);
}

static void raw_page(uint64_t pid, uint8_t *page)
{
	raw_rw(pid * 4096, page, 4096, false);
}

static uint64_t tree_root(void)
{
	struct bm *bm = open_raw();
	uint64_t root = bm_sb_get(bm, FS_SB_ROOT);
	assert_int_equal(bm_close(bm), 0);
	return root;
}

/* The leaf that holds @key, by the tree as it is on disk. */
static uint64_t leaf_of(uint64_t obj, uint8_t type, uint64_t off)
{
	uint8_t page[4096] __attribute__((aligned(8))), key[FS_KEY_LEN];
	uint64_t pid = tree_root();
	fs_key(key, obj, type, off);
	for (unsigned depth = 0; depth < 8; depth++) {
		raw_page(pid, page);
		if (bt_node_is_leaf(page))
			return pid;
		pid = bt_node_child(page, bt_node_child_pos(page, key, sizeof(key), false));
	}
	fail_msg("no leaf for inode %llu", (unsigned long long)obj);
	return 0;
}

/* What the records of one leaf were, by inode number. */
struct leaf_loss {
	bool inode[INO_CAP]; /* its inode record */
	bool data[INO_CAP];  /* inline data or an extent */
	bool name[INO_CAP];  /* an entry naming it */
	uint64_t first_obj;
};

static void leaf_records(uint64_t pid, struct leaf_loss *l)
{
	uint8_t page[4096] __attribute__((aligned(8))), key[BT_KEY_MAX];
	memset(l, 0, sizeof(*l));
	raw_page(pid, page);
	assert_true(bt_node_is_leaf(page));
	unsigned n = bt_node_count(page);
	assert_true(n > 0);
	for (unsigned i = 0; i < n; i++) {
		unsigned klen = bt_node_key(page, i, key), plen;
		const uint8_t *v = bt_node_payload(page, i, &plen);
		uint64_t obj = fs_key_obj(key);
		assert_true(klen >= FS_KEY_LEN);
		if (i == 0)
			l->first_obj = obj;
		if (obj >= INO_CAP)
			continue;
		if (key[8] == FS_REC_INODE)
			l->inode[obj] = true;
		if (key[8] == FS_REC_INLINE || key[8] == FS_REC_EXTENT)
			l->data[obj] = true;
		if (key[8] == FS_REC_DIRENT && plen > 1 && v[0]) {
			uint64_t child = fs_get_le64(v + 1 + v[0]);
			if (child < INO_CAP)
				l->name[child] = true;
		}
	}
}

/* File @ino (named @name in @dir before the damage; @size 0: a directory),
 * after the repair: at its name, or in /lost+found as #ino, or gone and
 * listed as lost. Returns the directory it is in now (0: gone). */
static uint64_t expect_survivor(struct fs *fs, const struct leaf_loss *l, uint64_t dir,
				const char *name, uint64_t ino, size_t size, unsigned seed)
{
	uint64_t lf = lookup(fs, FS_INO_ROOT, "lost+found");
	char want[128], hash[32];
	snprintf(hash, sizeof(hash), "#%llu", (unsigned long long)ino);
	if (l->inode[ino] && size == 0) {
		/* A directory whose inode record is gone is made again when
		 * entries of it survive: at its name, or in /lost+found. */
		if (lookup(fs, dir, name) == ino)
			return dir;
		return lf && lookup(fs, lf, hash) == ino ? lf : 0;
	}
	if (l->inode[ino]) {
		/* Its inode record is gone: no name left, listed unless its
		 * entry went with it. */
		assert_int_equal(lookup(fs, dir, name), 0);
		if (!l->name[ino] && !l->inode[dir]) {
			snprintf(want, sizeof(want), "/%s (inode %llu): its inode record is gone",
				 name, (unsigned long long)ino);
			expect_out(want);
		}
		return 0;
	}
	if (l->data[ino]) {
		/* Part of its data is gone: what is left is in /lost+found. */
		assert_int_equal(lookup(fs, dir, name), 0);
		assert_true(lf != 0);
		assert_int_equal(lookup(fs, lf, hash), ino);
		if (!l->name[ino] && !l->inode[dir]) {
			snprintf(want, sizeof(want), "/%s (inode %llu): ", name,
				 (unsigned long long)ino);
			expect_out(want);
		}
		return lf;
	}
	if (l->name[ino] || l->inode[dir]) {
		/* Its name is gone (or its directory's inode): /lost+found
		 * holds the file itself, whole. */
		if (l->name[ino]) {
			assert_int_equal(lookup(fs, dir, name), 0);
			assert_true(lf != 0);
			assert_int_equal(lookup(fs, lf, hash), ino);
			snprintf(want, sizeof(want), "reconnected as /lost+found/%s", hash);
			expect_out(want);
			dir = lf;
		}
	} else {
		assert_int_equal(lookup(fs, dir, name), ino);
	}
	if (size)
		expect_data(fs, ino, size, seed);
	return dir;
}

/* Every file of /many, and of make_tree when the damage was past it. */
static void expect_many(const struct leaf_loss *l)
{
	char name[64];
	struct fs *fs = do_mount();
	if (l->first_obj >= ino_many)
		expect_tree(fs);
	for (unsigned i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "f%u-with-a-longer-name-%u", i, i * 7919);
		expect_survivor(fs, l, ino_many, name, many_inos[i], many_size(i), 100 + i);
	}
	for (unsigned j = 0; j < SUBDIRS; j++) {
		snprintf(name, sizeof(name), "s%u", j);
		uint64_t dir = expect_survivor(fs, l, ino_many, name, sub_inos[j], 0, 0);
		/* A directory that lost its name went to /lost+found whole:
		 * its entries with it. */
		if (dir)
			expect_survivor(fs, l, sub_inos[j], "inner", subf_inos[j], 3000, 500 + j);
	}
	assert_int_equal(fs_unmount(fs), 0);
}

/* Repair after damage to a tree page: -n reports what it would do and
 * writes nothing; the repair rebuilds; then clean. */
static void check_salvage(void)
{
	check_readonly(4);
	expect_out("would rebuild the tree from");
	expect_out("(repairable)");
	assert_int_equal(run_fsck(NULL), 1);
	expect_out("FIXED: tree: rebuilt from");
	expect_out(", 0 left\n");
	char lost[sizeof(out)];
	memcpy(lost, out, sizeof(out));
	assert_int_equal(run_fsck(NULL), 0);
	check_readonly(0);
	memcpy(out, lost, sizeof(out)); /* the repair's lines, for the callers */
}

/* The root (an inner node) fails its checksum: every leaf is found by
 * scanning, nothing is lost, nothing moves. */
static void t_salvage_root(void **state)
{
	make_many();
	uint64_t root = tree_root();
	uint8_t page[4096] __attribute__((aligned(8)));
	raw_page(root, page);
	assert_false(bt_node_is_leaf(page));
	damage_node(root, 40);

	check_salvage();
	expect_out("salvage: 0 paths lost, 0 values lost, 0 inodes without a name");
	struct leaf_loss none;
	memset(&none, 0, sizeof(none));
	none.first_obj = UINT64_MAX;
	expect_many(&none);
	struct fs *fs = do_mount();
	assert_int_equal(lookup(fs, FS_INO_ROOT, "lost+found"), 0);
	assert_int_equal(fs_unmount(fs), 0);
}

/* A leaf in the middle of /many's entries is zeroed: the files and
 * directories it named go to /lost+found, whole (a directory with its
 * entries); everything else stays where it was. */
static void t_salvage_dirent_leaf(void **state)
{
	make_many();
	uint8_t key[FS_KEY_LEN];
	struct leaf_loss l;
	/* The entry in the middle of the directory's slots. */
	struct bm *bm = open_raw();
	struct bt t = tree_of(bm);
	struct find_ctx c = {.dir = ino_many, .name = "f50-with-a-longer-name-395950"};
	fs_key(key, ino_many, 0, 0);
	assert_int_equal(bt_scan_asc(&t, key, sizeof(key), find_fn, &c), 0);
	assert_true(c.found);
	assert_int_equal(bm_close(bm), 0);
	uint64_t leaf = leaf_of(ino_many, FS_REC_DIRENT, c.slot);
	leaf_records(leaf, &l);
	damage_node(leaf, -1);

	check_salvage();
	expect_out("FIXED: tree: rebuilt");
	expect_many(&l);
	unsigned moved = 0;
	for (unsigned i = 0; i < INO_CAP; i++)
		moved += l.name[i] && !l.inode[i] && !l.data[i];
	assert_true(moved > 0);
	struct fs *fs = do_mount();
	uint64_t lf = lookup(fs, FS_INO_ROOT, "lost+found");
	assert_true(lf != 0);
	struct stat st = attr(fs, lf);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_true(st.st_size >= moved);
	assert_int_equal(fs_unmount(fs), 0);
}

/* A leaf of inode records (and inline data) of /many's files is flipped:
 * those files are listed as lost, the rest read back. */
static void t_salvage_inode_leaf(void **state)
{
	make_many();
	struct leaf_loss l;
	uint64_t leaf = leaf_of(many_inos[MANY / 2], FS_REC_INODE, 0);
	leaf_records(leaf, &l);
	damage_node(leaf, 2000);

	check_salvage();
	expect_out("lost: ");
	expect_many(&l);
}

static void t_usage(void **state)
{
	/* fsck(8): 16 is a usage or syntax error. */
	assert_int_equal(run_fsck("--bogus", NULL), 16);
	/* fsck(8) passes -a / -p / -y: accepted, repair as usual. */
	assert_int_equal(run_fsck("-p", NULL), 0);
	assert_int_equal(run_fsck("-y", NULL), 0);
}

int main(void)
{
	fsck_bin = getenv("VS_FSCK");
	if (!fsck_bin || access(fsck_bin, X_OK) != 0) {
		printf("SKIP: VS_FSCK not set or not executable\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(t_clean, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_leaked_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_bitmap_bits, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_nlink, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_unnamed_nlink0, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_lost_found, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_dangling, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_stray_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_orphan_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_bad_data_page, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_bad_tree_page, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_salvage_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_salvage_dirent_leaf, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_salvage_inode_leaf, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_killed_during_repair, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_journal_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(t_usage, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
