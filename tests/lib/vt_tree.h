/*
 * vt_tree.h - snapshots of a directory tree, and their comparison.
 *
 * A snapshot records, for every entry below a root (sorted by path): type and
 * permission bits, owner, link count, size, device number, inode number,
 * mtime/ctime, a hash of the file's bytes, the symlink target and a hash of
 * the extended attributes (names and values; the filesystem's virtual
 * user.virtuscale.* attributes are left out).  Two snapshots are compared
 * field by field; which fields count is chosen with VT_CMP_* flags, so the
 * same code checks "the mount equals the ext4 reference" and "the mount is
 * unchanged by a remount".
 */
#ifndef VT_TREE_H
#define VT_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct vt_entry {
	char *path; /* relative to the root, "" for the root itself */
	mode_t mode;
	nlink_t nlink;
	uid_t uid;
	gid_t gid;
	off_t size;
	dev_t rdev;
	ino_t ino;
	struct timespec mtime, ctime;
	uint64_t data_hash;  /* regular files */
	char *target;	     /* symlinks */
	uint64_t xattr_hash; /* 0 when there are none */
	char *xattr_names;   /* sorted, comma separated (for messages) */
};

struct vt_snap {
	char root[1024];
	struct vt_entry *e;
	size_t n, cap;
};

/* Fields compared besides names, types, sizes, data, link counts, symlink
 * targets, permission bits and xattrs (always compared). */
#define VT_CMP_INO   0x1 /* identical inode numbers */
#define VT_CMP_TIMES 0x2 /* identical mtime and ctime */
#define VT_CMP_OWNER 0x4 /* identical uid/gid */
#define VT_CMP_RDEV  0x8 /* identical device numbers */
/* Hard-link structure: names sharing an inode on one side share one on the
 * other (a bijection between inode numbers). */
#define VT_CMP_LINKS 0x10

/* Walk @root (not following symlinks, not crossing into other mounts) and
 * record everything.  Entries whose name starts with @skip_prefix in the
 * root directory are left out (NULL: none).  Returns 0 or -1 (printed). */
int vt_snap_take(const char *root, const char *skip_prefix, struct vt_snap *ret);

/* Print up to @max_report differences to stderr (a differing file is
 * reported with its first differing offset).  Returns how many differences
 * there were. */
size_t vt_snap_compare(const struct vt_snap *a, const struct vt_snap *b, unsigned flags,
		       size_t max_report);

void vt_snap_free(struct vt_snap *s);

/* Hash of @len bytes, also usable incrementally (pass the previous value). */
uint64_t vt_hash(uint64_t h, const void *buf, size_t len);

#endif
