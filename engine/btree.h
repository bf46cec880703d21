/*
 * btree.h: B-trees of byte-string keys inside the buffer pool.
 *
 * Keys are byte strings ordered by memcmp (a shorter key that is a prefix of
 * a longer one sorts first). Values are byte strings. Several trees share one
 * pool; a tree is named by the pid of its root page, which never changes for
 * the life of the tree, so the layer above stores it once (for example in a
 * superblock slot, see bm_sb_set).
 *
 * Every call is one atomic operation on the tree (its own bm_run), safe to
 * call from any number of threads: readers descend with optimistic lock
 * coupling, writers take only the leaf (and parents on a split or merge)
 * exclusively, so operations on different leaves do not block each other.
 *
 * With a journal (bm_config.journal), each call that changes a tree is a
 * transaction of its own, or part of the caller's when one is open
 * (bm_txn_begin nests): a checkpoint sees all of it or none of it.
 *
 * Limits: keys 1..BT_KEY_MAX bytes, values 0..BT_VAL_MAX bytes.
 *
 * Errors (negative errno): -ENOENT (no such key), -EEXIST (bt_insert of an
 * existing key), -EINVAL (key or value length out of range), -ENOSPC (no
 * free page for a split), -EUCLEAN / -EIO (a page failed its checksum or
 * could not be read), -ENOBUFS (value larger than the caller's buffer; the
 * needed length is still returned).
 */
#ifndef VS_ENGINE_BTREE_H
#define VS_ENGINE_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/bm.h"

#define BT_KEY_MAX 1024u
#define BT_VAL_MAX 4000u

/* Entries with klen + vlen above this keep their value in an overflow page
 * of its own (one more page access per lookup, up to 4 KiB per value);
 * smaller ones sit in the leaf. */
#define BT_INLINE_MAX 1024u

struct bt {
	struct bm *bm;
	uint64_t root;
};

/* Create an empty tree; *ret_root names it from now on (left alone on
 * failure). Errors: -ENOSPC, -EIO. */
int bt_create(struct bm *bm, uint64_t *ret_root);

/* Free every page of the tree, overflow pages included. Nobody may use the
 * tree meanwhile, or after. A page that fails its checksum or does not look
 * like a node stops the walk with -EUCLEAN / -EIO (logged), and the pages
 * below it are left allocated rather than freed on a guess. */
int bt_destroy(struct bm *bm, uint64_t root);

/* Does the page (4096 bytes) look like a node of a tree: a header whose
 * type, level, count and heap bounds agree? A few loads and compares, for
 * the pool's metadata-first eviction (bm_config.is_meta); overflow pages and
 * free pages say false. A hint: bt_check and the tree's own reads decide
 * whether a node is sound. */
bool bt_page_is_node(const void *page);

/* A handle: just the pair (no allocation, nothing to close). */
static inline struct bt bt_open(struct bm *bm, uint64_t root)
{
	return (struct bt){ .bm = bm, .root = root };
}

/* Copy the value of @key into @buf (at most @buf_len bytes); *ret_len gets
 * its full length. -ENOENT when absent; -ENOBUFS when @buf_len is too small
 * (nothing useful copied). @ret_len may be NULL; @buf may be NULL with
 * @buf_len 0 to ask for the length only. Takes no lock and writes no shared
 * memory (optimistic reads, validated). */
int bt_lookup(struct bt *t, const void *key, unsigned klen, void *buf, unsigned buf_len,
	      unsigned *ret_len);

/* Insert a new key; -EEXIST if present. -ENOSPC when a split or an
 * overflow page (klen + vlen > BT_INLINE_MAX) needs a page and the image has
 * none; the contents are then unchanged (a split may have happened). */
int bt_insert(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen);

/* Insert or replace (errors as bt_insert, without -EEXIST). */
int bt_put(struct bt *t, const void *key, unsigned klen, const void *val, unsigned vlen);

/* Change the value of @key in place: @fn gets the value bytes (writable, held
 * exclusively) and its length; it must not change the length. @fn runs exactly
 * once if the key exists. Returns @fn's return value, or -ENOENT. @fn must
 * not use this tree (its leaf is locked: that would wait forever). */
typedef int (*bt_update_fn)(void *ctx, void *val, unsigned vlen);
int bt_update(struct bt *t, const void *key, unsigned klen, bt_update_fn fn, void *ctx);

/* Remove @key; -ENOENT if absent. Underfull nodes are merged (best effort:
 * a merge that fails, say on a read error, is logged and the removal still
 * stands). */
int bt_remove(struct bt *t, const void *key, unsigned klen);

/* Range scans. @fn is called once per entry, in order, with the leaf held
 * shared; it returns true to go on, false to stop. It must not write to this
 * tree (it may read other trees). Ascending scans start at the first key >=
 * @key; descending scans at the last key <= @key (klen 0 with a descending
 * scan starts at the very last key, with an ascending one at the first).
 * Returns 0, or an error. Writers to the leaf being delivered wait for @fn;
 * other leaves stay open to them, so a long scan sees each entry exactly
 * once, as it was when its leaf was reached, not a snapshot of the tree. The
 * key and value pointers are valid during the call only. */
typedef bool (*bt_scan_fn)(void *ctx, const void *key, unsigned klen, const void *val,
			   unsigned vlen);
int bt_scan_asc(struct bt *t, const void *key, unsigned klen, bt_scan_fn fn, void *ctx);
int bt_scan_desc(struct bt *t, const void *key, unsigned klen, bt_scan_fn fn, void *ctx);

/* Structure statistics and a full invariant check: every node well formed
 * (bounds, key order, heads, hints, prefix), keys within their fences,
 * fences equal to the parent's separators, levels consistent (so every leaf
 * at the same depth), every page allocated and reachable once (overflow
 * pages included). Returns 0, -EUCLEAN with a log line naming the page and
 * the problem, or -EIO / -ENOMEM. For tests and fsck: run it while nothing
 * writes to the tree, or it may report a change in flight as damage. */
struct bt_info {
	uint64_t entries;
	uint64_t leaves;
	uint64_t inners;
	uint64_t overflow_pages;
	unsigned height;
};
int bt_check(struct bt *t, struct bt_info *ret_info);

#endif
