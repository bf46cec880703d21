/*
 * record.c: order-preserving key encoding, fixed-layout values, typed tables.
 * The encodings are specified in record.h; this file only implements them.
 */
#include "engine/record.h"

#include <errno.h>
#include <string.h>

#include "engine/log.h"

/* ------------------------------------------------------------------ */
/* Key builder                                                        */

/* A failed append poisons the key, so a chain of appends can be checked
 * once at the end (see struct rec_key). */
static int key_fail(struct rec_key *k, int err)
{
	k->err = err;
	return err;
}

static int key_put(struct rec_key *k, const void *p, size_t n)
{
	if (k->err)
		return k->err;
	if (n > BT_KEY_MAX - k->len)
		return key_fail(k, -E2BIG);
	if (n)
		memcpy(k->buf + k->len, p, n);
	k->len += (unsigned)n;
	return 0;
}

static int key_put_be(struct rec_key *k, uint64_t v, unsigned width)
{
	uint8_t b[8];
	for (unsigned i = 0; i < width; i++)
		b[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
	return key_put(k, b, width);
}

/* Flipping the sign bit maps the two's complement range onto the unsigned
 * range in the same order: INT_MIN -> 0, -1 -> 0x7f.., 0 -> 0x80... */
static uint64_t sign_flip(uint64_t v, unsigned width)
{
	return v ^ (UINT64_C(1) << (8 * width - 1));
}

int rec_key_u8(struct rec_key *k, uint8_t v)
{
	return key_put_be(k, v, 1);
}

int rec_key_u16(struct rec_key *k, uint16_t v)
{
	return key_put_be(k, v, 2);
}

int rec_key_u32(struct rec_key *k, uint32_t v)
{
	return key_put_be(k, v, 4);
}

int rec_key_u64(struct rec_key *k, uint64_t v)
{
	return key_put_be(k, v, 8);
}

int rec_key_i8(struct rec_key *k, int8_t v)
{
	return key_put_be(k, sign_flip((uint8_t)v, 1), 1);
}

int rec_key_i16(struct rec_key *k, int16_t v)
{
	return key_put_be(k, sign_flip((uint16_t)v, 2), 2);
}

int rec_key_i32(struct rec_key *k, int32_t v)
{
	return key_put_be(k, sign_flip((uint32_t)v, 4), 4);
}

int rec_key_i64(struct rec_key *k, int64_t v)
{
	return key_put_be(k, sign_flip((uint64_t)v, 8), 8);
}

int rec_key_bytes(struct rec_key *k, const void *p, size_t n)
{
	return key_put(k, p, n);
}

/* Append @n bytes of @s with every 0x00 escaped as 00 FF, plus the 00 00
 * terminator when @terminate. The size is worked out first so that a key
 * that would overflow is left exactly as it was. */
static int key_put_escaped(struct rec_key *k, const uint8_t *s, size_t n, bool terminate)
{
	if (k->err)
		return k->err;
	size_t need = n + (terminate ? 2 : 0);
	for (const uint8_t *z = s; n && (z = memchr(z, 0, (size_t)(s + n - z))); z++)
		need++;
	if (need > BT_KEY_MAX - k->len)
		return key_fail(k, -E2BIG);

	uint8_t *out = k->buf + k->len;
	const uint8_t *end = s + n;
	while (s < end) {
		const uint8_t *z = memchr(s, 0, (size_t)(end - s));
		size_t run = z ? (size_t)(z - s) : (size_t)(end - s);
		memcpy(out, s, run);
		out += run;
		s += run;
		if (z) {
			*out++ = 0x00;
			*out++ = 0xff;
			s++;
		}
	}
	if (terminate) {
		*out++ = 0x00;
		*out++ = 0x00;
	}
	k->len += (unsigned)need;
	return 0;
}

int rec_key_str(struct rec_key *k, const void *s, size_t n)
{
	return key_put_escaped(k, s, n, true);
}

int rec_key_str_prefix(struct rec_key *k, const void *s, size_t n)
{
	return key_put_escaped(k, s, n, false);
}

bool rec_key_has_prefix(const void *key, unsigned klen, const struct rec_key *prefix)
{
	return klen >= prefix->len && memcmp(key, prefix->buf, prefix->len) == 0;
}

/* ------------------------------------------------------------------ */
/* Key reader                                                         */

static int rd_fail(struct rec_reader *r, int err)
{
	r->err = err;
	return err;
}

/* Hand out the next @n bytes, or fail without moving. */
static int rd_take(struct rec_reader *r, size_t n, const uint8_t **ret)
{
	if (r->err)
		return r->err;
	if (n > r->len - r->pos)
		return rd_fail(r, -EBADMSG);
	if (n == 0) {
		*ret = r->p; /* no arithmetic on a possibly NULL empty input */
		return 0;
	}
	*ret = r->p + r->pos;
	r->pos += (unsigned)n;
	return 0;
}

static int rd_be(struct rec_reader *r, unsigned width, uint64_t *ret)
{
	const uint8_t *b;
	int err = rd_take(r, width, &b);
	if (err)
		return err;
	uint64_t v = 0;
	for (unsigned i = 0; i < width; i++)
		v = v << 8 | b[i];
	*ret = v;
	return 0;
}

/* The integer readers differ only in width and sign; each converts through
 * the unsigned type of its width, which is well defined for the signed
 * results too (gcc defines out-of-range conversion as modulo 2^N). */
#define REC_RD_UINT(name, T, width)                                                                \
	int name(struct rec_reader *r, T *ret)                                                     \
	{                                                                                          \
		uint64_t v;                                                                        \
		int err = rd_be(r, width, &v);                                                     \
		if (!err)                                                                          \
			*ret = (T)v;                                                               \
		return err;                                                                        \
	}
#define REC_RD_SINT(name, T, UT, width)                                                            \
	int name(struct rec_reader *r, T *ret)                                                     \
	{                                                                                          \
		uint64_t v;                                                                        \
		int err = rd_be(r, width, &v);                                                     \
		if (!err)                                                                          \
			*ret = (T)(UT)sign_flip(v, width);                                         \
		return err;                                                                        \
	}

REC_RD_UINT(rec_rd_u8, uint8_t, 1)
REC_RD_UINT(rec_rd_u16, uint16_t, 2)
REC_RD_UINT(rec_rd_u32, uint32_t, 4)
REC_RD_UINT(rec_rd_u64, uint64_t, 8)
REC_RD_SINT(rec_rd_i8, int8_t, uint8_t, 1)
REC_RD_SINT(rec_rd_i16, int16_t, uint16_t, 2)
REC_RD_SINT(rec_rd_i32, int32_t, uint32_t, 4)
REC_RD_SINT(rec_rd_i64, int64_t, uint64_t, 8)

int rec_rd_bytes(struct rec_reader *r, void *buf, size_t n)
{
	const uint8_t *b;
	int err = rd_take(r, n, &b);
	if (!err && n)
		memcpy(buf, b, n);
	return err;
}

/* Walk the escaped string at the reader's position without consuming it:
 * *ret_len gets the decoded length, *ret_enc the encoded one (terminator
 * included). Every 0x00 must be followed by 00 (end) or FF (a zero byte). */
static int str_measure(struct rec_reader *r, size_t *ret_len, size_t *ret_enc)
{
	if (r->err)
		return r->err;
	if (r->len - r->pos < 2)
		return rd_fail(r, -EBADMSG);
	const uint8_t *start = r->p + r->pos;
	const uint8_t *end = r->p + r->len;
	const uint8_t *s = start;
	size_t zeros = 0;
	for (;;) {
		const uint8_t *z = memchr(s, 0, (size_t)(end - s));
		if (!z || end - z < 2)
			return rd_fail(r, -EBADMSG);
		if (z[1] == 0x00) {
			size_t enc = (size_t)(z + 2 - start);
			*ret_enc = enc;
			*ret_len = enc - 2 - zeros;
			return 0;
		}
		if (z[1] != 0xff)
			return rd_fail(r, -EBADMSG);
		zeros++;
		s = z + 2;
	}
}

int rec_rd_str_len(struct rec_reader *r, size_t *ret_len)
{
	size_t len, enc;
	int err = str_measure(r, &len, &enc);
	if (!err)
		*ret_len = len;
	return err;
}

int rec_rd_str(struct rec_reader *r, void *buf, size_t cap, size_t *ret_len)
{
	size_t len, enc;
	int err = str_measure(r, &len, &enc);
	if (err)
		return err;
	if (len > cap)
		return rd_fail(r, -ENOBUFS);

	/* The measure pass proved the form; copy runs between the escapes. */
	const uint8_t *s = r->p + r->pos;
	uint8_t *out = buf;
	size_t left = len;
	while (left) {
		const uint8_t *z = memchr(s, 0, left);
		size_t run = z ? (size_t)(z - s) : left;
		memcpy(out, s, run);
		out += run;
		s += run;
		left -= run;
		if (z) {
			*out++ = 0;
			s += 2;
			left--;
		}
	}
	r->pos += (unsigned)enc;
	*ret_len = len;
	return 0;
}

int rec_rd_end(const struct rec_reader *r)
{
	if (r->err)
		return r->err;
	return r->pos == r->len ? 0 : -EBADMSG;
}

/* ------------------------------------------------------------------ */
/* Layouts                                                            */

/* Bytes of an integer or float type; 0 for the others. */
static unsigned scalar_width(unsigned type)
{
	switch (type) {
	case REC_U8:
	case REC_I8:
		return 1;
	case REC_U16:
	case REC_I16:
		return 2;
	case REC_U32:
	case REC_I32:
		return 4;
	case REC_U64:
	case REC_I64:
	case REC_F64:
		return 8;
	default:
		return 0;
	}
}

static bool type_signed(unsigned type)
{
	return type >= REC_I8 && type <= REC_I64;
}

int rec_layout_init(struct rec_layout *ret, const struct rec_field *fields, unsigned nfields,
		    size_t struct_size)
{
	if (!fields || nfields == 0 || struct_size == 0 || struct_size > UINT32_MAX)
		return -EINVAL;
	uint64_t val_size = 0, key_max = 0;
	bool key_ok = true;
	for (unsigned i = 0; i < nfields; i++) {
		const struct rec_field *f = &fields[i];
		if ((size_t)f->offset + f->size > struct_size || f->size == 0)
			return -EINVAL;
		unsigned w = scalar_width(f->type);
		if (w) {
			if (f->size != w)
				return -EINVAL;
			val_size += w;
			key_max += w;
			if (f->type == REC_F64)
				key_ok = false;
		} else if (f->type == REC_BYTES) {
			val_size += f->size;
			key_max += f->size;
		} else if (f->type == REC_CSTR) {
			/* n - 1 characters: stored as is in a value; in a key
			 * at worst every one escaped, plus the terminator. */
			val_size += f->size - 1u;
			key_max += 2u * f->size;
		} else {
			return -EINVAL;
		}
	}
	if (val_size > UINT32_MAX || key_max > UINT32_MAX)
		return -EINVAL;
	*ret = (struct rec_layout){
	    .fields = fields,
	    .nfields = nfields,
	    .struct_size = (unsigned)struct_size,
	    .val_size = (unsigned)val_size,
	    .key_max = (unsigned)key_max,
	    .key_ok = key_ok,
	};
	return 0;
}

/* Struct members are read and written through memcpy of their exact width:
 * the struct may be packed or the member misaligned, and the field table is
 * all we know about it. */
static uint64_t member_get(const uint8_t *p, unsigned width)
{
	switch (width) {
	case 1:
		return *p;
	case 2: {
		uint16_t v;
		memcpy(&v, p, 2);
		return v;
	}
	case 4: {
		uint32_t v;
		memcpy(&v, p, 4);
		return v;
	}
	default: {
		uint64_t v;
		memcpy(&v, p, 8);
		return v;
	}
	}
}

static void member_set(uint8_t *p, unsigned width, uint64_t v)
{
	switch (width) {
	case 1:
		*p = (uint8_t)v;
		break;
	case 2: {
		uint16_t x = (uint16_t)v;
		memcpy(p, &x, 2);
		break;
	}
	case 4: {
		uint32_t x = (uint32_t)v;
		memcpy(p, &x, 4);
		break;
	}
	default:
		memcpy(p, &v, 8);
		break;
	}
}

/* Length of the C string in a char[size] member, or -EINVAL when the member
 * holds no terminator. */
static int cstr_len(const uint8_t *m, unsigned size, size_t *ret_len)
{
	const uint8_t *z = memchr(m, 0, size);
	if (!z)
		return -EINVAL;
	*ret_len = (size_t)(z - m);
	return 0;
}

int rec_val_pack(const struct rec_layout *l, const void *rec, void *buf, size_t cap)
{
	if (cap < l->val_size)
		return -E2BIG;
	const uint8_t *in = rec;
	uint8_t *out = buf;
	for (unsigned i = 0; i < l->nfields; i++) {
		const struct rec_field *f = &l->fields[i];
		const uint8_t *m = in + f->offset;
		unsigned w = scalar_width(f->type);
		if (w) {
			uint64_t v = member_get(m, w);
			for (unsigned b = 0; b < w; b++)
				*out++ = (uint8_t)(v >> (8 * b));
		} else if (f->type == REC_BYTES) {
			memcpy(out, m, f->size);
			out += f->size;
		} else {
			size_t n;
			if (cstr_len(m, f->size, &n))
				return -EINVAL;
			memcpy(out, m, n);
			memset(out + n, 0, f->size - 1u - n);
			out += f->size - 1u;
		}
	}
	return (int)l->val_size;
}

int rec_val_unpack(const struct rec_layout *l, const void *buf, size_t len, void *ret_rec)
{
	if (len != l->val_size)
		return -EBADMSG;
	const uint8_t *in = buf;
	uint8_t *out = ret_rec;
	for (unsigned i = 0; i < l->nfields; i++) {
		const struct rec_field *f = &l->fields[i];
		uint8_t *m = out + f->offset;
		unsigned w = scalar_width(f->type);
		if (w) {
			uint64_t v = 0;
			for (unsigned b = 0; b < w; b++)
				v |= (uint64_t)in[b] << (8 * b);
			member_set(m, w, v);
			in += w;
		} else if (f->type == REC_BYTES) {
			memcpy(m, in, f->size);
			in += f->size;
		} else {
			memcpy(m, in, f->size - 1u);
			m[f->size - 1u] = 0;
			in += f->size - 1u;
		}
	}
	return 0;
}

int rec_key_pack(struct rec_key *k, const struct rec_layout *l, const void *rec, unsigned nfields)
{
	if (k->err)
		return k->err;
	if (!l->key_ok)
		return key_fail(k, -EINVAL);
	unsigned saved = k->len;
	unsigned n = nfields < l->nfields ? nfields : l->nfields;
	const uint8_t *in = rec;
	int err = 0;
	for (unsigned i = 0; i < n && !err; i++) {
		const struct rec_field *f = &l->fields[i];
		const uint8_t *m = in + f->offset;
		unsigned w = scalar_width(f->type);
		if (w) {
			uint64_t v = member_get(m, w);
			if (type_signed(f->type))
				v = sign_flip(v, w);
			err = key_put_be(k, v, w);
		} else if (f->type == REC_BYTES) {
			err = key_put(k, m, f->size);
		} else {
			size_t len;
			err = cstr_len(m, f->size, &len);
			if (!err)
				err = key_put_escaped(k, m, len, true);
		}
	}
	if (err) {
		/* Leave no half-written tuple behind, but keep the key
		 * poisoned: the caller's chain must still see the error. */
		k->len = saved;
		return key_fail(k, err);
	}
	return 0;
}

int rec_key_unpack(const struct rec_layout *l, const void *key, size_t len, void *ret_rec)
{
	if (!l->key_ok)
		return -EINVAL;
	if (len > UINT32_MAX)
		return -EBADMSG;
	struct rec_reader r;
	rec_rd_init(&r, key, (unsigned)len);
	uint8_t *out = ret_rec;
	for (unsigned i = 0; i < l->nfields; i++) {
		const struct rec_field *f = &l->fields[i];
		uint8_t *m = out + f->offset;
		unsigned w = scalar_width(f->type);
		if (w) {
			uint64_t v;
			if (rd_be(&r, w, &v))
				return -EBADMSG;
			if (type_signed(f->type))
				v = sign_flip(v, w);
			member_set(m, w, v);
		} else if (f->type == REC_BYTES) {
			if (rec_rd_bytes(&r, m, f->size))
				return -EBADMSG;
		} else {
			/* A C string member cannot hold a zero byte, so a key
			 * whose string has one did not come from rec_key_pack. */
			size_t n;
			if (rec_rd_str(&r, m, f->size - 1u, &n) || memchr(m, 0, n))
				return -EBADMSG;
			memset(m + n, 0, f->size - n);
		}
	}
	return rec_rd_end(&r) ? -EBADMSG : 0;
}

/* ------------------------------------------------------------------ */
/* Tables                                                             */

int rec_table_open(struct rec_table *ret, struct bm *bm, uint64_t root,
		   const struct rec_layout *key, const struct rec_layout *val)
{
	if (!key->key_ok || key->key_max > BT_KEY_MAX || val->val_size > BT_VAL_MAX)
		return -EINVAL;
	*ret = (struct rec_table){.bt = bt_open(bm, root), .key = key, .val = val};
	return 0;
}

static int table_key(const struct rec_table *t, const void *key, struct rec_key *ret)
{
	rec_key_init(ret);
	return rec_key_pack(ret, t->key, key, REC_ALL_FIELDS);
}

static int table_write(struct rec_table *t, const void *key, const void *rec, bool replace)
{
	struct rec_key k;
	uint8_t v[BT_VAL_MAX];
	int err = table_key(t, key, &k);
	if (err)
		return err;
	int n = rec_val_pack(t->val, rec, v, sizeof(v));
	if (n < 0)
		return n;
	if (replace)
		return bt_put(&t->bt, k.buf, k.len, v, (unsigned)n);
	return bt_insert(&t->bt, k.buf, k.len, v, (unsigned)n);
}

int rec_table_insert(struct rec_table *t, const void *key, const void *rec)
{
	return table_write(t, key, rec, false);
}

int rec_table_put(struct rec_table *t, const void *key, const void *rec)
{
	return table_write(t, key, rec, true);
}

static int corrupt_value(const struct rec_table *t, unsigned vlen)
{
	return VS_CORRUPT("record: value of %u bytes in tree %llu, layout wants %u", vlen,
			  (unsigned long long)t->bt.root, t->val->val_size);
}

int rec_table_lookup(struct rec_table *t, const void *key, void *ret_rec)
{
	struct rec_key k;
	uint8_t v[BT_VAL_MAX];
	unsigned vlen = 0;
	int err = table_key(t, key, &k);
	if (err)
		return err;
	err = bt_lookup(&t->bt, k.buf, k.len, v, t->val->val_size, &vlen);
	if (err == -ENOBUFS || (!err && vlen != t->val->val_size))
		return corrupt_value(t, vlen);
	if (err)
		return err;
	return rec_val_unpack(t->val, v, vlen, ret_rec);
}

struct update_ctx {
	const struct rec_layout *val;
	void *rec;
	rec_update_fn fn;
	void *ctx;
	unsigned bad_len; /* the stored length, when it did not fit the layout */
	bool bad;
};

/* Runs with the leaf held exclusively: no logging here, the caller reports
 * a bad value after the leaf is released. */
static int update_cb(void *ctx, void *val, unsigned vlen)
{
	struct update_ctx *u = ctx;
	uint8_t v[BT_VAL_MAX];
	if (vlen != u->val->val_size) {
		u->bad = true;
		u->bad_len = vlen;
		return -EUCLEAN;
	}
	(void)rec_val_unpack(u->val, val, vlen, u->rec);
	int err = u->fn(u->ctx, u->rec);
	if (err)
		return err;
	/* Pack aside first: a record the packer refuses must not leave the
	 * stored value half overwritten. */
	int n = rec_val_pack(u->val, u->rec, v, sizeof(v));
	if (n < 0)
		return n;
	memcpy(val, v, vlen);
	return 0;
}

int rec_table_update(struct rec_table *t, const void *key, void *rec, rec_update_fn fn, void *ctx)
{
	struct rec_key k;
	int err = table_key(t, key, &k);
	if (err)
		return err;
	struct update_ctx u = {.val = t->val, .rec = rec, .fn = fn, .ctx = ctx};
	err = bt_update(&t->bt, k.buf, k.len, update_cb, &u);
	if (u.bad)
		return corrupt_value(t, u.bad_len);
	return err;
}

int rec_table_remove(struct rec_table *t, const void *key)
{
	struct rec_key k;
	int err = table_key(t, key, &k);
	if (err)
		return err;
	return bt_remove(&t->bt, k.buf, k.len);
}

struct scan_ctx {
	const struct rec_table *t;
	void *key_buf;
	void *rec_buf;
	rec_scan_fn fn;
	void *ctx;
	unsigned bad_klen, bad_vlen;
	bool bad;
};

static bool scan_cb(void *ctx, const void *key, unsigned klen, const void *val, unsigned vlen)
{
	struct scan_ctx *s = ctx;
	if (rec_key_unpack(s->t->key, key, klen, s->key_buf) ||
	    rec_val_unpack(s->t->val, val, vlen, s->rec_buf)) {
		s->bad = true;
		s->bad_klen = klen;
		s->bad_vlen = vlen;
		return false;
	}
	return s->fn(s->ctx, s->key_buf, s->rec_buf);
}

int rec_table_scan(struct rec_table *t, bool descending, const void *from, unsigned from_fields,
		   void *key_buf, void *rec_buf, rec_scan_fn fn, void *ctx)
{
	struct rec_key k;
	rec_key_init(&k);
	if (from && from_fields) {
		int err = rec_key_pack(&k, t->key, from, from_fields);
		if (err)
			return err;
	}
	/* Without a start key, klen 0 makes bt_scan_* begin at the first or
	 * the last entry. */
	struct scan_ctx s = {.t = t, .key_buf = key_buf, .rec_buf = rec_buf, .fn = fn, .ctx = ctx};
	int err = descending ? bt_scan_desc(&t->bt, k.buf, k.len, scan_cb, &s)
			     : bt_scan_asc(&t->bt, k.buf, k.len, scan_cb, &s);
	if (!err && s.bad)
		return VS_CORRUPT("record: entry (key %u bytes, value %u bytes) in tree %llu does "
				  "not decode with the table layouts",
				  s.bad_klen, s.bad_vlen, (unsigned long long)t->bt.root);
	return err;
}
