/*
 * record.h: typed records over the byte-string B-tree.
 *
 * The B-tree (btree.h) orders keys with memcmp and stores values as opaque
 * bytes. This module lets the layers above think in typed tuples instead:
 *
 *   - a key builder and a key reader that fold integers and strings into
 *     bytes whose memcmp order is the order of the tuples;
 *   - record layouts: a table describing a C struct's fields, used to pack the
 *     struct into a key (ordered encoding) or into a value (fixed layout);
 *   - a typed table: a B-tree plus a key layout and a value layout, whose
 *     calls take key and record structs.
 *
 * Key encoding (order preserving)
 * -------------------------------
 * Each field is appended in turn; the encoding of a tuple is the
 * concatenation of its fields, and comparing two encodings with memcmp gives
 * the lexicographic order of the tuples (field by field, each in its natural
 * order).
 *
 *   TYPE          BYTES      ENCODING
 *   u8..u64       1,2,4,8    big-endian
 *   i8..i64       1,2,4,8    big-endian two's complement with the sign bit
 *                            flipped, so INT_MIN encodes as 00.. and -1 sorts
 *                            just below 0 (80..)
 *   fixed bytes   n          the n bytes as they are; the reader must know n
 *   string        2..2n+2    every byte as is, except 0x00 which becomes
 *                            00 FF; then the terminator 00 00
 *
 * Why the string encoding sorts: after a common prefix, a string that ends
 * has 00 00 where a longer one has either a byte >= 01 or (for an embedded
 * zero) 00 FF, and 00 00 is below both. So "ab" < "ab\0" < "ab\1" < "ab\1c",
 * and ("ab", 9) < ("abc", 1) holds for the whole tuple, as it must. A string
 * of n bytes takes n + 2 bytes when it holds no zero byte, 2n + 2 at worst.
 *
 * A prefix of a tuple's encoding is the encoding of the tuple's first fields,
 * so an ascending scan that starts at the encoding of (w, d) visits every key
 * beginning with (w, d) first. rec_key_str_prefix appends an unterminated
 * string for "every name beginning with ..." scans.
 *
 * Value encoding (fixed layout)
 * -----------------------------
 * Values are not compared, so they use the host-cheap little-endian order.
 * The fields of a layout are stored one after another with no padding, in
 * the order of the field table, each at a fixed offset:
 *
 *   TYPE          BYTES      ENCODING
 *   u8..u64       1,2,4,8    little-endian
 *   i8..i64       1,2,4,8    little-endian two's complement
 *   f64           8          IEEE 754 binary64 bits, little-endian
 *   fixed bytes   n          as they are
 *   C string      n - 1      (struct member char[n]) the string, then 0x00
 *                            up to n - 1 bytes; the terminator is implied
 *
 * Every packed value of one layout has the same length, rec_layout.val_size.
 *
 * Errors (negative errno)
 * -----------------------
 *   -E2BIG      a key would grow past BT_KEY_MAX (the builder keeps the
 *               error, see struct rec_key), or a value buffer is too small
 *   -EBADMSG    a reader met truncated or malformed bytes
 *   -ENOBUFS    a string field is longer than the caller's buffer
 *   -EINVAL     a bad layout, or a C string member without its terminator
 *   -EUCLEAN    a stored record does not decode with the table's layouts
 *               (logged); plus every error of btree.h from the table calls
 *
 * Thread safety: builders, readers and layouts are plain memory owned by the
 * caller; a layout may be shared read-only by any number of threads once
 * rec_layout_init returned. Table calls are as thread safe as btree.h.
 */
#ifndef VS_ENGINE_RECORD_H
#define VS_ENGINE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/btree.h"

/* ------------------------------------------------------------------ */
/* Key builder                                                        */

/*
 * An encoded key under construction. Appends past BT_KEY_MAX fail with
 * -E2BIG, leave the key as it was, and set @err; later appends do nothing
 * and return @err. So a caller may chain appends and check once: every call
 * that takes a struct rec_key (rec_table_*, rec_key_...) refuses a key whose
 * @err is set by returning it.
 */
struct rec_key {
	unsigned len;
	int err;
	uint8_t buf[BT_KEY_MAX];
};

/* Start an empty key. */
static inline void rec_key_init(struct rec_key *k)
{
	k->len = 0;
	k->err = 0;
}

/* Append an unsigned integer of 1, 2, 4 or 8 bytes (big-endian).
 * Returns 0 or -E2BIG. */
int rec_key_u8(struct rec_key *k, uint8_t v);
int rec_key_u16(struct rec_key *k, uint16_t v);
int rec_key_u32(struct rec_key *k, uint32_t v);
int rec_key_u64(struct rec_key *k, uint64_t v);

/* Append a signed integer (big-endian, sign bit flipped). 0 or -E2BIG. */
int rec_key_i8(struct rec_key *k, int8_t v);
int rec_key_i16(struct rec_key *k, int16_t v);
int rec_key_i32(struct rec_key *k, int32_t v);
int rec_key_i64(struct rec_key *k, int64_t v);

/* Append exactly @n bytes as they are: a fixed-length field (a hash, a
 * CHAR(n) column padded by the caller). The reader must be told @n.
 * 0 or -E2BIG. */
int rec_key_bytes(struct rec_key *k, const void *p, size_t n);

/* Append a variable-length string of @n bytes (any bytes, zeros included)
 * in the escaped, terminated form. 0 or -E2BIG. */
int rec_key_str(struct rec_key *k, const void *s, size_t n);

/* Append the escaped bytes of @s without the terminator: the result is a
 * lower bound of every key whose string field starts with @s (and a prefix
 * of each of them), for prefix scans. Nothing may be appended after it that
 * is meant to be a further field. 0 or -E2BIG. */
int rec_key_str_prefix(struct rec_key *k, const void *s, size_t n);

/* Does @key (of @klen bytes) begin with the bytes of @prefix? For ending a
 * prefix scan. */
bool rec_key_has_prefix(const void *key, unsigned klen, const struct rec_key *prefix);

/* ------------------------------------------------------------------ */
/* Key reader                                                         */

/*
 * Reads the fields of an encoded key in the order they were appended. Every
 * read checks the bytes left first and never touches a byte past the end.
 * A failed read returns -EBADMSG (or -ENOBUFS, see rec_rd_str), leaves its
 * output alone and sets @err; later reads return @err without reading.
 */
struct rec_reader {
	const uint8_t *p;
	unsigned len;
	unsigned pos;
	int err;
};

/* Start reading the @len bytes at @p. */
static inline void rec_rd_init(struct rec_reader *r, const void *p, unsigned len)
{
	r->p = (const uint8_t *)p;
	r->len = len;
	r->pos = 0;
	r->err = 0;
}

/* Read one integer field. 0 or -EBADMSG (too few bytes left). */
int rec_rd_u8(struct rec_reader *r, uint8_t *ret);
int rec_rd_u16(struct rec_reader *r, uint16_t *ret);
int rec_rd_u32(struct rec_reader *r, uint32_t *ret);
int rec_rd_u64(struct rec_reader *r, uint64_t *ret);
int rec_rd_i8(struct rec_reader *r, int8_t *ret);
int rec_rd_i16(struct rec_reader *r, int16_t *ret);
int rec_rd_i32(struct rec_reader *r, int32_t *ret);
int rec_rd_i64(struct rec_reader *r, int64_t *ret);

/* Read a fixed-length field of exactly @n bytes into @buf. 0 or -EBADMSG. */
int rec_rd_bytes(struct rec_reader *r, void *buf, size_t n);

/* Read a string field into @buf (at most @cap bytes; no terminator is
 * added); *ret_len gets its length. Errors: -EBADMSG (the terminator is
 * missing, or a 0x00 is followed by neither 00 nor FF); -ENOBUFS (the
 * string is longer than @cap: the reader stops, as for any error; size the
 * buffer with rec_rd_str_len first when the length is not bounded). @buf may
 * be NULL when @cap is 0. */
int rec_rd_str(struct rec_reader *r, void *buf, size_t cap, size_t *ret_len);

/* The decoded length of the string field at the reader's position, without
 * consuming it. 0 or -EBADMSG (the reader's error is set then). */
int rec_rd_str_len(struct rec_reader *r, size_t *ret_len);

/* Is the whole input consumed, with no error? Returns 0, the reader's
 * error, or -EBADMSG when bytes are left over. */
int rec_rd_end(const struct rec_reader *r);

/* ------------------------------------------------------------------ */
/* Record layouts                                                     */

enum rec_type {
	REC_U8 = 1,
	REC_U16,
	REC_U32,
	REC_U64,
	REC_I8,
	REC_I16,
	REC_I32,
	REC_I64,
	REC_F64,   /* values only: keys have no float encoding */
	REC_BYTES, /* fixed-length bytes (a uint8_t or char array member) */
	REC_CSTR,  /* a char[n] member holding a NUL-terminated string */
};

/* One member of a C struct. @size is the member's size in the struct. */
struct rec_field {
	uint16_t type; /* enum rec_type */
	uint16_t offset;
	uint16_t size;
};

/* A field table entry for member @m of struct type @T. */
#define REC_FIELD(rtype, T, m)                                                                     \
	{                                                                                          \
		.type = (rtype), .offset = offsetof(T, m), .size = sizeof(((T *)0)->m)             \
	}

/* Number of entries of a field table array. */
#define REC_NFIELDS(a) ((unsigned)(sizeof(a) / sizeof((a)[0])))

/* A checked field table. Fill it with rec_layout_init; treat it as
 * read-only after that. */
struct rec_layout {
	const struct rec_field *fields;
	unsigned nfields;
	unsigned struct_size;
	unsigned val_size; /* bytes of every packed value */
	unsigned key_max;  /* most bytes a packed key can take */
	bool key_ok;	   /* usable as a key layout (no REC_F64) */
};

/* Check a field table of @nfields entries describing a struct of
 * @struct_size bytes and fill @ret. The table must outlive the layout (it
 * is referenced, not copied). Errors: -EINVAL when a field has an unknown
 * type, a size that does not match its type (u32 must be 4 bytes; REC_CSTR
 * at least 1), or lies outside the struct, or when there are no fields. */
int rec_layout_init(struct rec_layout *ret, const struct rec_field *fields, unsigned nfields,
		    size_t struct_size);

/* Pack the struct at @rec as a value into @buf (@cap bytes). Returns the
 * packed length (l->val_size), or -E2BIG when @cap is smaller, or -EINVAL
 * when a REC_CSTR member has no terminator. */
int rec_val_pack(const struct rec_layout *l, const void *rec, void *buf, size_t cap);

/* Unpack a value of @len bytes into the struct at @ret_rec (only the
 * described members are written). -EBADMSG unless @len == l->val_size,
 * and then nothing is written. */
int rec_val_unpack(const struct rec_layout *l, const void *buf, size_t len, void *ret_rec);

/* Append the fields of the struct at @rec as key fields (ordered encoding)
 * to @k: the first @nfields fields, or all of them when @nfields is
 * REC_ALL_FIELDS or larger than the layout. REC_CSTR members are encoded
 * as strings (rec_key_str). Errors: -E2BIG, -EINVAL (REC_F64 field, or an
 * unterminated REC_CSTR), or @k's earlier error. */
#define REC_ALL_FIELDS UINT32_MAX
int rec_key_pack(struct rec_key *k, const struct rec_layout *l, const void *rec, unsigned nfields);

/* Decode a whole key of @len bytes into the struct at @ret_rec. Errors:
 * -EBADMSG (truncated, malformed, trailing bytes, or a string too long for
 * its member, or a zero byte inside a REC_CSTR string), -EINVAL (not a key
 * layout). After -EBADMSG the members before the bad field are already
 * written: decode into a scratch struct when that matters. */
int rec_key_unpack(const struct rec_layout *l, const void *key, size_t len, void *ret_rec);

/* ------------------------------------------------------------------ */
/* Typed tables                                                       */

/*
 * A B-tree whose keys are structs packed with @key and whose values are
 * structs packed with @val. A plain value: open it anywhere, nothing to
 * close; both layouts must outlive it.
 */
struct rec_table {
	struct bt bt;
	const struct rec_layout *key;
	const struct rec_layout *val;
};

/* Fill @ret for the tree rooted at @root. Errors: -EINVAL when @key is not
 * a key layout or may pack longer than BT_KEY_MAX, or when @val packs
 * longer than BT_VAL_MAX. */
int rec_table_open(struct rec_table *ret, struct bm *bm, uint64_t root,
		   const struct rec_layout *key, const struct rec_layout *val);

/* Insert record @rec under key struct @key. -EEXIST when present. */
int rec_table_insert(struct rec_table *t, const void *key, const void *rec);

/* Insert or replace. */
int rec_table_put(struct rec_table *t, const void *key, const void *rec);

/* Fetch the record of @key into @ret_rec. -ENOENT when absent, -EUCLEAN
 * when the stored value has the wrong length for the layout. */
int rec_table_lookup(struct rec_table *t, const void *key, void *ret_rec);

/* Read-modify-write one record in place, atomically: the stored record is
 * unpacked into @rec (the caller's scratch struct), @fn(@ctx, @rec) changes
 * it, and unless @fn returns an error the result is packed back. @fn runs at
 * most once, with the leaf held exclusively: it must be short and must not
 * touch this tree. On return @rec holds the record as stored (new or old).
 * Returns @fn's result, -ENOENT, or a packing error (nothing is written). */
typedef int (*rec_update_fn)(void *ctx, void *rec);
int rec_table_update(struct rec_table *t, const void *key, void *rec, rec_update_fn fn, void *ctx);

/* Remove the record of @key. -ENOENT when absent. */
int rec_table_remove(struct rec_table *t, const void *key);

/* Visit records in key order. The scan starts at the first key >= (asc) or
 * the last key <= (desc) the encoding of the first @from_fields fields of
 * the key struct @from (REC_ALL_FIELDS for all; @from NULL to start at the
 * first or last record). For each record, the key is unpacked into
 * @key_buf and the record into @rec_buf (caller's scratch structs) and
 * @fn(@ctx, @key_buf, @rec_buf) is called; it returns true to go on. @fn
 * runs with a leaf held shared: it must not write to this tree.
 * A key prefix sorts before every key that extends it, so an ascending scan
 * from a prefix sees all its keys, while a descending scan over a prefix
 * must start from a full key whose remaining fields hold their largest
 * values (and stop when the prefix changes).
 * Returns 0, -EUCLEAN when a stored key or value does not decode, or an
 * error of the B-tree. */
typedef bool (*rec_scan_fn)(void *ctx, const void *key, const void *rec);
int rec_table_scan(struct rec_table *t, bool descending, const void *from, unsigned from_fields,
		   void *key_buf, void *rec_buf, rec_scan_fn fn, void *ctx);

#endif
