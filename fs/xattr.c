/*
 * xattr.c: extended attributes, as named records (names.c) of type XATTR.
 *
 * A value longer than fits beside its name in one record (BT_VAL_MAX) goes
 * on in chunk records keyed (ino, XATTR, slot, chunk 1..n), which sort right
 * after their head record:
 *
 *   head   (ino, XATTR, slot)          [n][name][u32 length][first bytes]
 *   chunk  (ino, XATTR, slot, 1)       next BT_VAL_MAX bytes
 *   ...
 *
 * Chunks are written before the head that makes them reachable, and removed
 * after it is gone or replaced, so a failed set leaves the old value whole.
 *
 * "user.virtuscale.residency" is virtual: computed on read, never stored,
 * not listed, not settable (see fs.h).
 *
 * POSIX ACLs (system.posix_acl_access / _default) are not supported: the
 * kernel would hand them to us as opaque bytes, and storing them without
 * keeping the mode in step (what FUSE_CAP_POSIX_ACL asks of a filesystem)
 * breaks permissions: cp -a would set a trivial ACL instead of chmod and
 * leave directories at the 0700 it created them with. EOPNOTSUPP makes
 * tools fall back to plain modes, as on any filesystem without ACLs.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "engine/log.h"

#define XATTR_LIST_LIMIT 65536 /* what listxattr(2) can return at most */

static const char residency_name[] = "user.virtuscale.residency";

static bool is_acl(const char *name)
{
	return strncmp(name, "system.posix_acl_", 17) == 0;
}

static void chunk_key(uint8_t *k, uint64_t ino, uint64_t slot, unsigned chunk)
{
	fs_key(k, ino, FS_REC_XATTR, slot);
	k[17] = (uint8_t)(chunk >> 8);
	k[18] = (uint8_t)chunk;
}

/* Bytes of the value the head record of a @nlen-byte name holds. */
static size_t head_room(unsigned nlen)
{
	return BT_VAL_MAX - 1 - nlen - FS_XATTR_HEAD;
}

static unsigned chunks_for(unsigned nlen, size_t vlen)
{
	size_t room = head_room(nlen);
	return vlen <= room ? 0 : (unsigned)((vlen - room + BT_VAL_MAX - 1) / BT_VAL_MAX);
}

static int check_name(const char *name, size_t *ret_len)
{
	size_t n = strnlen(name, FS_NAME_MAX + 1);
	*ret_len = n;
	if (n == 0)
		return -EINVAL;
	if (n > FS_NAME_MAX)
		return -ERANGE;
	return 0;
}

static int head_decode(uint64_t ino, const struct fs_slot *s, uint32_t *ret_len)
{
	unsigned nlen = s->val[0];
	if (s->vlen < 1 + nlen + FS_XATTR_HEAD)
		goto bad;
	uint32_t len = fs_get_le32(fs_slot_payload(s));
	size_t in_head = len < head_room(nlen) ? len : head_room(nlen);
	if (len > FS_XATTR_VALUE_MAX || s->vlen != 1 + nlen + FS_XATTR_HEAD + in_head)
		goto bad;
	*ret_len = len;
	return 0;
bad:
	return VS_CORRUPT("inode %llu: xattr record at slot %llu has %u bytes",
			  (unsigned long long)ino, (unsigned long long)s->slot, s->vlen);
}

static int chunks_remove(struct fs *fs, uint64_t ino, uint64_t slot, unsigned from, unsigned to)
{
	uint8_t key[FS_KEY_CHUNK_LEN];

	for (unsigned c = from; c <= to; c++) {
		chunk_key(key, ino, slot, c);
		int r = bt_remove(&fs->tree, key, sizeof(key));
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return 0;
}

static int residency_value(struct fs *fs, uint64_t ino, char *buf, size_t *ret_len)
{
	uint64_t resident, total;
	int r = fs_residency(fs, ino, &resident, &total);
	if (r == -EISDIR || r == -EINVAL)
		return -ENODATA; /* only regular files have it */
	if (r < 0)
		return r;
	*ret_len = (size_t)snprintf(buf, 48, "%llu %llu", (unsigned long long)resident,
				    (unsigned long long)total);
	return 0;
}

static int list_len(struct fs *fs, uint64_t ino, size_t *ret_len);

int fs_setxattr(struct fs *fs, uint64_t ino, const char *name, const void *value, size_t size,
		int flags)
{
	struct fs_inode in;
	struct fs_slot *s;
	uint8_t key[FS_KEY_CHUNK_LEN];
	size_t nlen;
	int r;

	r = check_name(name, &nlen);
	if (r < 0)
		return r;
	if (size > FS_XATTR_VALUE_MAX)
		return -E2BIG;
	if (is_acl(name))
		return -EOPNOTSUPP;
	if (flags & ~(XATTR_CREATE | XATTR_REPLACE))
		return -EINVAL;
	if (fs_is_ctl_ino(ino) || strcmp(name, residency_name) == 0)
		return -EPERM;
	if (fs->read_only)
		return -EROFS;
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;

	fs_ino_wrlock_txn(fs, ino);
	r = fs_inode_get(fs, ino, &in);
	if (r < 0)
		goto out;
	r = fs_names_find(fs, ino, FS_REC_XATTR, name, (unsigned)nlen, s);
	if (r < 0)
		goto out;
	unsigned old_chunks = 0;
	if (s->found) {
		uint32_t old_len = 0;
		if (flags & XATTR_CREATE) {
			r = -EEXIST;
			goto out;
		}
		r = head_decode(ino, s, &old_len);
		if (r < 0)
			goto out;
		old_chunks = chunks_for((unsigned)nlen, old_len);
	} else if (flags & XATTR_REPLACE) {
		r = -ENODATA;
		goto out;
	} else {
		/* A new name must leave every name listable: listxattr(2)
		 * returns at most XATTR_LIST_LIMIT bytes (as ext4 refuses). */
		size_t list = 0;
		r = list_len(fs, ino, &list);
		if (r == -E2BIG || (r == 0 && list + nlen + 1 > XATTR_LIST_LIMIT))
			r = -ENOSPC;
		if (r < 0)
			goto out;
	}

	/* Chunks, then the head that makes them reachable. */
	size_t in_head = size < head_room((unsigned)nlen) ? size : head_room((unsigned)nlen);
	unsigned chunks = chunks_for((unsigned)nlen, size);
	const uint8_t *v = value;
	for (unsigned c = 1; c <= chunks; c++) {
		size_t off = in_head + (size_t)(c - 1) * BT_VAL_MAX;
		size_t n = size - off < BT_VAL_MAX ? size - off : BT_VAL_MAX;
		chunk_key(key, ino, s->slot, c);
		r = bt_put(&fs->tree, key, sizeof(key), v + off, (unsigned)n);
		if (r < 0)
			goto out;
	}
	uint8_t *h = s->val; /* reuse the slot's buffer for the new head */
	h[0] = (uint8_t)nlen;
	memcpy(h + 1, name, nlen);
	fs_put_le32(h + 1 + nlen, (uint32_t)size);
	if (in_head)
		memcpy(h + 1 + nlen + FS_XATTR_HEAD, value, in_head);
	fs_key(key, ino, FS_REC_XATTR, s->slot);
	r = bt_put(&fs->tree, key, FS_KEY_LEN, h, (unsigned)(1 + nlen + FS_XATTR_HEAD + in_head));
	if (r < 0)
		goto out;
	if (old_chunks > chunks) {
		r = chunks_remove(fs, ino, s->slot, chunks + 1, old_chunks);
		if (r < 0)
			goto out;
	}
	fs_now(&in.ctime);
	r = fs_inode_put(fs, &in);
out:
	fs_ino_unlock(fs, ino);
	free(s);
	return r;
}

int fs_getxattr(struct fs *fs, uint64_t ino, const char *name, void *buf, size_t cap,
		size_t *ret_len)
{
	struct fs_slot *s;
	uint8_t key[FS_KEY_CHUNK_LEN];
	uint32_t len = 0;
	size_t nlen;
	int r;

	r = check_name(name, &nlen);
	if (r < 0)
		return r;
	if (is_acl(name))
		return -EOPNOTSUPP;
	if (fs_is_ctl_ino(ino))
		return -ENODATA;
	if (strcmp(name, residency_name) == 0) {
		char tmp[48];
		size_t n;
		r = residency_value(fs, ino, tmp, &n);
		if (r < 0)
			return r;
		if (cap && cap < n)
			return -ERANGE;
		if (cap)
			memcpy(buf, tmp, n);
		*ret_len = n;
		return 0;
	}
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	fs_ino_rdlock(fs, ino);
	r = fs_names_find(fs, ino, FS_REC_XATTR, name, (unsigned)nlen, s);
	if (r == 0 && !s->found) {
		/* No such attribute, or no such inode? */
		struct fs_inode in;
		r = fs_inode_get(fs, ino, &in);
		if (r == 0)
			r = -ENODATA;
	}
	if (r == 0)
		r = head_decode(ino, s, &len);
	if (r < 0 || cap == 0)
		goto out;
	if (cap < len) {
		r = -ERANGE;
		goto out;
	}
	size_t in_head = len < head_room((unsigned)nlen) ? len : head_room((unsigned)nlen);
	memcpy(buf, fs_slot_payload(s) + FS_XATTR_HEAD, in_head);
	unsigned chunks = chunks_for((unsigned)nlen, len);
	for (unsigned c = 1; c <= chunks && r == 0; c++) {
		size_t off = in_head + (size_t)(c - 1) * BT_VAL_MAX;
		unsigned want = (unsigned)(len - off < BT_VAL_MAX ? len - off : BT_VAL_MAX),
			 got = 0;
		chunk_key(key, ino, s->slot, c);
		r = bt_lookup(&fs->tree, key, sizeof(key), (uint8_t *)buf + off, want, &got);
		if (r == -ENOENT || r == -ENOBUFS || (r == 0 && got != want))
			r = VS_CORRUPT("inode %llu: xattr chunk %u missing or of %u bytes",
				       (unsigned long long)ino, c, got);
	}
out:
	fs_ino_unlock(fs, ino);
	if (r == 0)
		*ret_len = len;
	free(s);
	return r;
}

struct list_ctx {
	uint64_t ino;
	uint64_t last_slot;
	bool any;
	char *buf;
	size_t len;
	int err;
};

static bool list_fn(void *vctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct list_ctx *c = vctx;
	const uint8_t *v = val;

	if (klen < FS_KEY_LEN || !fs_key_is(key, klen, c->ino, FS_REC_XATTR))
		return false;
	if (klen != FS_KEY_LEN)
		return true; /* a chunk */
	uint64_t slot = fs_key_off(key);
	if (c->any && slot <= c->last_slot)
		return true; /* seen already */
	c->any = true;
	c->last_slot = slot;
	if (vlen < 1 || v[0] == 0)
		return true; /* tombstone */
	if (1u + v[0] > vlen) {
		c->err = VS_CORRUPT("inode %llu: xattr record at slot %llu has %u bytes",
				    (unsigned long long)c->ino, (unsigned long long)slot, vlen);
		return false;
	}
	if (c->len + v[0] + 1 > XATTR_LIST_LIMIT) {
		c->err = -E2BIG;
		return false;
	}
	if (c->buf) {
		memcpy(c->buf + c->len, v + 1, v[0]);
		c->buf[c->len + v[0]] = 0;
	}
	c->len += v[0] + 1u;
	return true;
}

/* Bytes listxattr would return for @ino (lock held); -E2BIG past
 * XATTR_LIST_LIMIT. */
static int list_len(struct fs *fs, uint64_t ino, size_t *ret_len)
{
	uint8_t key[FS_KEY_LEN];
	struct list_ctx c = {.ino = ino};

	fs_key(key, ino, FS_REC_XATTR, 0);
	int r = bt_scan_asc(&fs->tree, key, sizeof(key), list_fn, &c);
	if (r == 0)
		r = c.err;
	if (r == 0)
		*ret_len = c.len;
	return r;
}

int fs_listxattr(struct fs *fs, uint64_t ino, char *buf, size_t cap, size_t *ret_len)
{
	struct fs_inode in;
	uint8_t key[FS_KEY_LEN];
	struct list_ctx c = {.ino = ino};
	int r;

	if (fs_is_ctl_ino(ino)) {
		*ret_len = 0;
		return 0;
	}
	c.buf = malloc(XATTR_LIST_LIMIT);
	if (!c.buf)
		return -ENOMEM;
	fs_ino_rdlock(fs, ino);
	r = fs_inode_get(fs, ino, &in);
	if (r == 0) {
		fs_key(key, ino, FS_REC_XATTR, 0);
		r = bt_scan_asc(&fs->tree, key, sizeof(key), list_fn, &c);
		if (r == 0)
			r = c.err;
	}
	fs_ino_unlock(fs, ino);
	if (r == 0 && cap && cap < c.len)
		r = -ERANGE;
	if (r == 0) {
		if (cap)
			memcpy(buf, c.buf, c.len);
		*ret_len = c.len;
	}
	free(c.buf);
	return r;
}

int fs_removexattr(struct fs *fs, uint64_t ino, const char *name)
{
	struct fs_inode in;
	struct fs_slot *s;
	uint32_t len = 0;
	size_t nlen;
	int r;

	r = check_name(name, &nlen);
	if (r < 0)
		return r;
	if (is_acl(name))
		return -EOPNOTSUPP;
	if (fs_is_ctl_ino(ino) || strcmp(name, residency_name) == 0)
		return -EPERM;
	if (fs->read_only)
		return -EROFS;
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	fs_ino_wrlock_txn(fs, ino);
	r = fs_inode_get(fs, ino, &in);
	if (r == 0)
		r = fs_names_find(fs, ino, FS_REC_XATTR, name, (unsigned)nlen, s);
	if (r == 0 && !s->found)
		r = -ENODATA;
	if (r == 0)
		r = head_decode(ino, s, &len);
	if (r == 0)
		r = fs_names_remove(fs, ino, FS_REC_XATTR, s->slot);
	if (r == 0)
		r = chunks_remove(fs, ino, s->slot, 1, chunks_for((unsigned)nlen, len));
	if (r == 0) {
		fs_now(&in.ctime);
		r = fs_inode_put(fs, &in);
	}
	fs_ino_unlock(fs, ino);
	free(s);
	return r;
}
