/*
 * names.c: records found by name: directory entries and extended
 * attributes, keyed (object, type, slot) where the slot is a hash of the name
 * with linear probing (format in keys.h).
 *
 * Why probing and not a list per hash value: the slot is the readdir cookie,
 * and a cookie must name exactly one entry so a listing can resume between
 * any two entries. Why tombstones: a lookup stops at the first free slot, so
 * removing a record in the middle of a probe chain would hide the records
 * after it. With a 62-bit hash, chains longer than one are rare enough that
 * the tombstone bookkeeping costs nothing in practice; it exists so that
 * collisions, when they do happen, stay correct.
 *
 * Callers hold the owning inode's lock exclusively around find + insert and
 * around remove, so a slot found free is still free when they write it.
 */
#include "fs/fs_internal.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

#include "engine/log.h"

static uint64_t name_hash(const char *name, unsigned nlen)
{
	return FS_SLOT_MIN + (XXH64(name, nlen, 0) >> 2);
}

int fs_names_find(struct fs *fs, uint64_t obj, uint8_t type, const char *name, unsigned nlen,
		  struct fs_slot *ret)
{
	uint8_t key[FS_KEY_LEN];
	uint64_t h = name_hash(name, nlen), free_slot = 0;
	bool have_free = false;

	for (unsigned i = 0; i < FS_PROBE_MAX; i++) {
		uint64_t slot = h + i;
		unsigned len = 0;
		fs_key(key, obj, type, slot);
		int r = bt_lookup(&fs->tree, key, sizeof(key), ret->val, sizeof(ret->val), &len);
		if (r == -ENOENT) {
			ret->found = false;
			ret->slot = have_free ? free_slot : slot;
			ret->vlen = 0;
			return 0;
		}
		if (r < 0)
			return r;
		if (len < 1 || 1u + ret->val[0] > len)
			return VS_CORRUPT("object %llu: named record at slot %llu has %u bytes",
					  (unsigned long long)obj, (unsigned long long)slot, len);
		if (ret->val[0] == 0) {
			if (!have_free) {
				have_free = true;
				free_slot = slot;
			}
			continue;
		}
		if (ret->val[0] == nlen && memcmp(ret->val + 1, name, nlen) == 0) {
			ret->found = true;
			ret->slot = slot;
			ret->vlen = len;
			return 0;
		}
	}
	/* Thousands of names with one hash: only a damaged or hostile tree. */
	vs_log(VS_LOG_WARN, "object %llu: probe chain longer than %d", (unsigned long long)obj,
	       FS_PROBE_MAX);
	return -ENOSPC;
}

static bool slot_used(struct fs *fs, uint64_t obj, uint8_t type, uint64_t slot, int *ret_err)
{
	uint8_t key[FS_KEY_LEN], b[1];
	unsigned len;

	fs_key(key, obj, type, slot);
	int r = bt_lookup(&fs->tree, key, sizeof(key), b, sizeof(b), &len);
	*ret_err = (r == 0 || r == -ENOBUFS || r == -ENOENT) ? 0 : r;
	return r == 0 || r == -ENOBUFS;
}

static bool slot_is_tombstone(struct fs *fs, uint64_t obj, uint8_t type, uint64_t slot)
{
	uint8_t key[FS_KEY_LEN], b[1];
	unsigned len = 0;

	fs_key(key, obj, type, slot);
	int r = bt_lookup(&fs->tree, key, sizeof(key), b, sizeof(b), &len);
	return r == 0 && len == 1 && b[0] == 0;
}

int fs_names_remove(struct fs *fs, uint64_t obj, uint8_t type, uint64_t slot)
{
	uint8_t key[FS_KEY_LEN];
	int err;

	fs_key(key, obj, type, slot);
	if (slot_used(fs, obj, type, slot + 1, &err)) {
		/* Something may probe through this slot: leave a tombstone. */
		static const uint8_t tomb[1] = {0};
		return bt_put(&fs->tree, key, sizeof(key), tomb, sizeof(tomb));
	}
	if (err)
		return err;
	int r = bt_remove(&fs->tree, key, sizeof(key));
	if (r < 0)
		return r;
	/* Tombstones right before a free slot guard nothing any more. */
	for (uint64_t s = slot - 1; s >= FS_SLOT_MIN && slot_is_tombstone(fs, obj, type, s); s--) {
		fs_key(key, obj, type, s);
		r = bt_remove(&fs->tree, key, sizeof(key));
		if (r < 0)
			break; /* harmless: the tombstone just stays */
	}
	return 0;
}
