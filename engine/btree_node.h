/*
 * btree_node.h: the B-tree node: one 4096-byte slotted page. Internal to
 * engine/ (btree.c and the node tests); the layers above use btree.h.
 *
 * A node covers the half-open key range [lower fence, upper fence). An empty
 * lower fence means "from the smallest key" (every key has at least one
 * byte, so the empty string sorts below all of them); an empty upper fence
 * means "to infinity". Every key in the range begins with the common prefix
 * of the two fences, so that prefix is stored once (as part of the fences)
 * and each entry keeps only its key's suffix: prefix truncation.
 *
 * Leaf entries map a key to a value. The value sits in the page (inline)
 * when key + value <= BT_INLINE_MAX bytes, else in an overflow page of its
 * own and the entry holds that page's pid. Inner entries map a separator to
 * the child covering [previous separator, this separator); the child
 * covering [last separator, upper fence) is the node's `upper` pid.
 *
 * Page layout (integers little-endian, host order):
 *
 *   +--------+----------+-----------------------+------------+-----------------+
 *   | header | hint[16] | slot[0] .. slot[n-1]  | free space | heap (grows     |
 *   | 32 B   | 64 B     | 10 B each, key order  |            | down): fences,  |
 *   |        |          |                       |            | keys, payloads  |
 *   +--------+----------+-----------------------+------------+-----------------+
 *   0        32         96                96+10n         heap_top          4096
 *
 *   OFFSET SIZE MEANING
 *        0    1 type: BT_NODE_LEAF (1) or BT_NODE_INNER (2); 0 = not a node
 *        1    1 level: 0 for leaves, child level + 1 for inner nodes
 *        2    2 count: entries (slots)
 *        4    2 heap_top: lowest heap byte in use (4096 when the heap is empty)
 *        6    2 heap_used: live heap bytes (fences, keys, payloads); the
 *               difference to 4096 - heap_top is garbage left by removals,
 *               reclaimed by compaction
 *        8    2 lower_off: heap offset of the lower fence (the full key)
 *       10    2 lower_len: its length, 0 = no lower bound
 *       12    2 upper_off: heap offset of the upper fence (the full key)
 *       14    2 upper_len: its length, 0 = no upper bound
 *       16    2 prefix_len: bytes every key in the node shares (the common
 *               prefix of the fences; read from the lower fence)
 *       18    6 reserved, zero
 *       24    8 upper: inner nodes: pid of the rightmost child; leaves: 0
 *       32   64 hint[16]: heads of slots dist*(i+1), dist = count / 17, to
 *               narrow the binary search (vmcache's hint array); valid only
 *               when count > 32
 *       96  10n slots, in key order, each:
 *                 0  2 off: heap offset of the entry (suffix, then payload)
 *                 2  2 klen: suffix length (key length - prefix_len)
 *                 4  2 vlen: leaves: value length, bit 15 = BT_SLOT_OVERFLOW
 *                            (the payload is then an 8-byte overflow pid);
 *                            inner nodes: 8 (the child pid)
 *                 6  4 head: the suffix's first 4 bytes as a big-endian
 *                            number, zero-padded: compares like the suffix
 *                            whenever two heads differ
 *
 * Size limits that make every split possible: a fence is at most BT_KEY_MAX
 * bytes, so two fences take at most 2048; the largest leaf entry is
 * BT_INLINE_MAX + 10 (an overflow reference: 1024 + 8 + 10) and the largest
 * inner entry 1024 + 8 + 10. So a node with two worst-case fences still
 * holds one entry of either kind. A cut between two existing entries always
 * yields halves that hold their entries (the new fence is no longer than
 * the entry next to it, which leaves the node); the split planner measures
 * each candidate cut exactly and prefers one that also holds the entry
 * about to be inserted, so the insert succeeds at once or, in contrived
 * cases, after another round on a smaller node.
 *
 * Prefixes only grow on a split (a narrower range shares at least as much)
 * and only shrink on a merge, which is measured before it is done.
 *
 * Optimistic readers may see any bytes here. The accessors clamp every
 * count, offset and length read from the page to the page, so a torn read
 * yields wrong answers (caught by validation) but never an access outside
 * the page or an unbounded loop.
 */
#ifndef VS_ENGINE_BTREE_NODE_H
#define VS_ENGINE_BTREE_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "engine/bm.h"
#include "engine/btree.h"

#define BT_NODE_LEAF  1
#define BT_NODE_INNER 2

#define BT_PAGE		 BM_PAGE_SIZE
#define BT_HDR_SIZE	 32u
#define BT_HINTS	 16u
#define BT_SLOTS_OFF	 (BT_HDR_SIZE + 4 * BT_HINTS)
#define BT_SLOT_SIZE	 10u
#define BT_SLOTS_MAX	 ((BT_PAGE - BT_SLOTS_OFF) / BT_SLOT_SIZE)
#define BT_PID_SIZE	 8u
#define BT_SLOT_OVERFLOW 0x8000u
#define BT_VLEN_MASK	 0x7fffu

/* Entries whose content (suffix + payload + slot) is below this make the
 * node a candidate for merging with a sibling. */
#define BT_UNDERFULL (BT_PAGE / 4)

struct bt_node {
	uint8_t type;
	uint8_t level;
	uint16_t count;
	uint16_t heap_top;
	uint16_t heap_used;
	uint16_t lower_off;
	uint16_t lower_len;
	uint16_t upper_off;
	uint16_t upper_len;
	uint16_t prefix_len;
	uint8_t reserved[6];
	uint64_t upper;
	uint32_t hint[BT_HINTS];
};

struct __attribute__((packed)) bt_slot {
	uint16_t off;
	uint16_t klen;
	uint16_t vlen;
	uint32_t head;
};

_Static_assert(sizeof(struct bt_node) == BT_SLOTS_OFF, "node header layout");
_Static_assert(sizeof(struct bt_slot) == BT_SLOT_SIZE, "slot layout");

static inline const struct bt_slot *bt_node_slots(const void *page)
{
	return (const struct bt_slot *)((const uint8_t *)page + BT_SLOTS_OFF);
}

/* The entry count, clamped to what a page can hold. */
static inline unsigned bt_node_count(const void *page)
{
	unsigned n = ((const struct bt_node *)page)->count;
	return n < BT_SLOTS_MAX ? n : BT_SLOTS_MAX;
}

static inline bool bt_node_is_leaf(const void *page)
{
	return ((const struct bt_node *)page)->type == BT_NODE_LEAF;
}

/* Clamp [off, off+len) to the page; returns the start and sets *len. */
static inline const uint8_t *bt_node_bytes(const void *page, unsigned off, unsigned *len)
{
	if (off > BT_PAGE)
		off = BT_PAGE;
	if (*len > BT_PAGE - off)
		*len = BT_PAGE - off;
	return (const uint8_t *)page + off;
}

static inline unsigned bt_node_prefix_len(const void *page)
{
	unsigned p = ((const struct bt_node *)page)->prefix_len;
	return p < BT_KEY_MAX ? p : BT_KEY_MAX;
}

/* The prefix shared by all keys of the node (the lower fence's start). */
static inline const uint8_t *bt_node_prefix(const void *page, unsigned *ret_len)
{
	const struct bt_node *n = page;
	*ret_len = bt_node_prefix_len(page);
	return bt_node_bytes(page, n->lower_off, ret_len);
}

static inline const uint8_t *bt_node_lower(const void *page, unsigned *ret_len)
{
	const struct bt_node *n = page;
	*ret_len = n->lower_len < BT_KEY_MAX ? n->lower_len : BT_KEY_MAX;
	return bt_node_bytes(page, n->lower_off, ret_len);
}

/* The upper fence; *ret_len 0 means no upper bound. */
static inline const uint8_t *bt_node_upper(const void *page, unsigned *ret_len)
{
	const struct bt_node *n = page;
	*ret_len = n->upper_len < BT_KEY_MAX ? n->upper_len : BT_KEY_MAX;
	return bt_node_bytes(page, n->upper_off, ret_len);
}

/* Entry @i's key suffix (without the node prefix). */
static inline const uint8_t *bt_node_suffix(const void *page, unsigned i, unsigned *ret_len)
{
	const struct bt_slot *s = &bt_node_slots(page)[i];
	*ret_len = s->klen;
	return bt_node_bytes(page, s->off, ret_len);
}

/* Entry @i's payload: the inline value, an overflow pid or a child pid.
 * *ret_len is the number of bytes in the page. */
static inline const uint8_t *bt_node_payload(const void *page, unsigned i, unsigned *ret_len)
{
	const struct bt_slot *s = &bt_node_slots(page)[i];
	unsigned off = (unsigned)s->off + s->klen;
	*ret_len = (s->vlen & BT_SLOT_OVERFLOW) ? BT_PID_SIZE : (s->vlen & BT_VLEN_MASK);
	return bt_node_bytes(page, off, ret_len);
}

static inline bool bt_node_is_overflow(const void *page, unsigned i)
{
	return (bt_node_slots(page)[i].vlen & BT_SLOT_OVERFLOW) != 0;
}

/* The value length of leaf entry @i (inline or not). */
static inline unsigned bt_node_vlen(const void *page, unsigned i)
{
	return bt_node_slots(page)[i].vlen & BT_VLEN_MASK;
}

static inline uint64_t bt_node_read_pid(const uint8_t *p, unsigned len)
{
	uint64_t v = 0;
	memcpy(&v, p, len < 8 ? len : 8);
	return v;
}

/* The pid in entry @i's payload (a child, or an overflow page). */
static inline uint64_t bt_node_payload_pid(const void *page, unsigned i)
{
	unsigned len;
	const uint8_t *p = bt_node_payload(page, i, &len);
	return bt_node_read_pid(p, len);
}

/* Inner nodes: the child at position @i (i == count: the upper child). */
static inline uint64_t bt_node_child(const void *page, unsigned i)
{
	if (i >= bt_node_count(page))
		return ((const struct bt_node *)page)->upper;
	return bt_node_payload_pid(page, i);
}

/* Free bytes once garbage is compacted away. */
static inline unsigned bt_node_free_space(const void *page)
{
	const struct bt_node *n = page;
	unsigned used = BT_SLOTS_OFF + bt_node_count(page) * BT_SLOT_SIZE + n->heap_used;
	return used < BT_PAGE ? BT_PAGE - used : 0;
}

/* Bytes entries take (slots, suffixes, payloads), fences excluded. */
static inline unsigned bt_node_content(const void *page)
{
	const struct bt_node *n = page;
	unsigned fences = n->lower_len + n->upper_len;
	unsigned heap = n->heap_used > fences ? n->heap_used - fences : 0;
	return bt_node_count(page) * BT_SLOT_SIZE + heap;
}

/* ------------------------------------------------------------------ */
/* Reading                                                            */

/* Index of the first entry whose key is >= @key; *ret_found tells whether it
 * is equal. @key is a full key (with the node prefix). Safe on garbage. */
unsigned bt_node_lower_bound(const void *page, const uint8_t *key, unsigned klen, bool *ret_found);

/* Inner nodes: the child position whose range holds @key (first separator >
 * @key), or, with @before, the child holding the keys just below @key (first
 * separator >= @key). Returns a position in 0..count. Safe on garbage. */
unsigned bt_node_child_pos(const void *page, const uint8_t *key, unsigned klen, bool before);

/* Copy entry @i's full key (prefix + suffix) to @buf (BT_KEY_MAX bytes);
 * returns its length. */
unsigned bt_node_key(const void *page, unsigned i, uint8_t *buf);

/* ------------------------------------------------------------------ */
/* Changing (the caller holds the page exclusively)                   */

/* Format @page as an empty node. @lower / @upper are full keys (length 0:
 * unbounded). */
void bt_node_init(void *page, bool leaf, unsigned level, const uint8_t *lower, unsigned llen,
		  const uint8_t *upper, unsigned ulen);

/* Bytes an entry with a @klen-byte full key and @plen-byte payload needs. */
unsigned bt_node_entry_size(const void *page, unsigned klen, unsigned plen);

/* Would the entry fit (after compaction)? When @key is present in a leaf, its
 * entry counts as free space (the entry is about to be replaced). */
bool bt_node_has_room(const void *page, const uint8_t *key, unsigned klen, unsigned plen);

/* Insert at position @pos (from bt_node_lower_bound) the entry @key (full
 * key) -> @payload. @vflags is BT_SLOT_OVERFLOW for an overflow reference
 * (then @payload is the pid and @vlen the value length), else 0 and
 * @vlen == @plen. Compacts when needed. Returns 0 or -ENOSPC. */
int bt_node_insert_at(void *page, unsigned pos, const uint8_t *key, unsigned klen,
		      const void *payload, unsigned plen, unsigned vlen, unsigned vflags);

/* Append an entry after every other one (builders: keys come in order). */
int bt_node_append(void *page, const uint8_t *key, unsigned klen, const void *payload,
		   unsigned plen, unsigned vlen, unsigned vflags);

/* Append entry @i of @src (which may have another prefix) to @dst. */
int bt_node_append_from(void *dst, const void *src, unsigned i);

void bt_node_remove_at(void *page, unsigned pos);

/* Rewrite the node without garbage. */
void bt_node_compact(void *page);

/* Recompute the hint array (after the slots changed). */
void bt_node_make_hints(void *page);

/* ------------------------------------------------------------------ */
/* Split and merge                                                    */

struct bt_split {
	unsigned left_count; /* real entries that go left (leaves) */
	unsigned promote;    /* inner nodes: index of the separator moving up */
	unsigned sep_len;
	uint8_t sep[BT_KEY_MAX];
};

/* Plan a split of @page that also makes room for an entry @key (@plen
 * payload bytes) about to be inserted: the sizes of both halves are
 * balanced counting that entry, and the separator falls between it and its
 * neighbour when that is where the halves meet. Leaves get the shortest
 * separator s with left keys < s <= right keys; inner nodes promote one of
 * their separators. Returns 0, or -ENOSPC when the node cannot be split (fewer
 * than two entries counting the new one; for inner nodes, no separator). */
int bt_node_split_plan(const void *page, const uint8_t *key, unsigned klen, unsigned plen,
		       struct bt_split *plan);

/* Build the two halves of @page as @plan says into @left and @right (whole
 * pages, may not alias @page). For inner nodes, @left's upper child is the
 * child left of the promoted separator. Returns 0 or -ENOSPC (a half does
 * not fit: the plan was bad). */
int bt_node_split_build(const void *page, const struct bt_split *plan, void *left, void *right);

/* Build into @dst the merge of siblings @left and @right; @sep / @seplen is
 * the parent's separator between them (inner nodes pull it down). Returns 0
 * or -ENOSPC when the result does not fit. */
int bt_node_merge_build(const void *left, const void *right, const uint8_t *sep, unsigned seplen,
			void *dst);

/* ------------------------------------------------------------------ */
/* Checking                                                           */

/* Check everything one node can say about itself: header bounds, slots and
 * heap inside the page and not overlapping, keys strictly increasing, heads
 * and hints right, prefix equal to the fences' common prefix, every key
 * within the fences, value lengths consistent. Returns 0, or -EUCLEAN with a
 * reason in @why (@why_len bytes). */
int bt_node_verify(const void *page, char *why, size_t why_len);

/* memcmp order on byte strings, a proper prefix sorting first. */
static inline int bt_key_cmp(const uint8_t *a, unsigned alen, const uint8_t *b, unsigned blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

#endif
