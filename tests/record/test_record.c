/*
 * test_record.c: the typed-record adapter (engine/record.h).
 *
 * The key encoding is checked as a property: for random tuples, memcmp of
 * the encodings must agree with the tuple order, and decoding must give the
 * tuple back. Readers are fed every truncation of valid keys and random
 * garbage from exact-size heap buffers, so ASan catches any read past the
 * end. The typed table runs against a real pool and B-tree in a temporary
 * image, compared with a sorted reference array.
 *
 * VS_TEST_SCALE=N multiplies the number of random cases.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/log.h"
#include "engine/record.h"

static unsigned scale(void)
{
	const char *s = getenv("VS_TEST_SCALE");
	long v = s ? strtol(s, NULL, 10) : 1;
	return v > 0 ? (unsigned)v : 1;
}

/* splitmix64: deterministic runs, printed seed on failure is not needed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return rnd() % n;
}

static int sgn(int v)
{
	return (v > 0) - (v < 0);
}

#define CMP(a, b) (((a) > (b)) - ((a) < (b)))

/* Order of two encoded keys as the B-tree sees it. */
static int key_cmp(const struct rec_key *a, const struct rec_key *b)
{
	unsigned n = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->buf, b->buf, n);
	if (c)
		return sgn(c);
	return CMP(a->len, b->len);
}

static int bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	size_t n = an < bn ? an : bn;
	int c = n ? memcmp(a, b, n) : 0;
	if (c)
		return sgn(c);
	return CMP(an, bn);
}

/* ------------------------------------------------------------------ */
/* Integers                                                           */

static void test_unsigned_round_trip(void **state)
{
	static const uint64_t edges[] = {
	    0,	    1,	     0x7f,	 0x80,	      0xff,	   0x100,	   0x7fff,
	    0xffff, 0x10000, 0x7fffffff, 0x80000000u, 0xffffffffu, UINT64_MAX / 2, UINT64_MAX};
	for (unsigned i = 0; i < 14 + 1000; i++) {
		uint64_t v = i < 14 ? edges[i] : rnd();
		struct rec_key k;
		rec_key_init(&k);
		assert_int_equal(rec_key_u8(&k, (uint8_t)v), 0);
		assert_int_equal(rec_key_u16(&k, (uint16_t)v), 0);
		assert_int_equal(rec_key_u32(&k, (uint32_t)v), 0);
		assert_int_equal(rec_key_u64(&k, v), 0);
		assert_int_equal(k.len, 1 + 2 + 4 + 8);
		/* Big-endian: the u64's most significant byte comes first. */
		assert_int_equal(k.buf[7], (uint8_t)(v >> 56));
		assert_int_equal(k.buf[14], (uint8_t)v);

		struct rec_reader r;
		uint8_t a;
		uint16_t b;
		uint32_t c;
		uint64_t d;
		rec_rd_init(&r, k.buf, k.len);
		assert_int_equal(rec_rd_u8(&r, &a), 0);
		assert_int_equal(rec_rd_u16(&r, &b), 0);
		assert_int_equal(rec_rd_u32(&r, &c), 0);
		assert_int_equal(rec_rd_u64(&r, &d), 0);
		assert_int_equal(rec_rd_end(&r), 0);
		assert_int_equal(a, (uint8_t)v);
		assert_int_equal(b, (uint16_t)v);
		assert_int_equal(c, (uint32_t)v);
		assert_true(d == v);
	}
}

static void test_signed_round_trip(void **state)
{
	static const int64_t edges[] = {0,	   1,	      -1,	127,	-128,
					128,	   -129,      32767,	-32768, INT32_MAX,
					INT32_MIN, INT64_MAX, INT64_MIN};
	for (unsigned i = 0; i < 13 + 1000; i++) {
		int64_t v = i < 13 ? edges[i] : (int64_t)rnd();
		struct rec_key k;
		rec_key_init(&k);
		assert_int_equal(rec_key_i8(&k, (int8_t)v), 0);
		assert_int_equal(rec_key_i16(&k, (int16_t)v), 0);
		assert_int_equal(rec_key_i32(&k, (int32_t)v), 0);
		assert_int_equal(rec_key_i64(&k, v), 0);

		struct rec_reader r;
		int8_t a;
		int16_t b;
		int32_t c;
		int64_t d;
		rec_rd_init(&r, k.buf, k.len);
		assert_int_equal(rec_rd_i8(&r, &a), 0);
		assert_int_equal(rec_rd_i16(&r, &b), 0);
		assert_int_equal(rec_rd_i32(&r, &c), 0);
		assert_int_equal(rec_rd_i64(&r, &d), 0);
		assert_int_equal(rec_rd_end(&r), 0);
		assert_int_equal(a, (int8_t)v);
		assert_int_equal(b, (int16_t)v);
		assert_int_equal(c, (int32_t)v);
		assert_true(d == v);
	}
	/* The documented fixed points of the sign flip. */
	struct rec_key k;
	rec_key_init(&k);
	rec_key_i32(&k, INT32_MIN);
	rec_key_i32(&k, -1);
	rec_key_i32(&k, 0);
	static const uint8_t want[] = {0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0x80, 0, 0, 0};
	assert_int_equal(k.len, sizeof(want));
	assert_memory_equal(k.buf, want, sizeof(want));
}

/* A value biased towards the edges and small numbers, so that random pairs
 * are often equal or adjacent. */
static int64_t pick_i64(void)
{
	switch (below(6)) {
	case 0:
		return (int64_t)below(7) - 3;
	case 1:
		return below(2) ? INT64_MIN : INT64_MAX;
	case 2:
		return (int64_t)below(2000) - 1000;
	default:
		return (int64_t)rnd();
	}
}

static void test_integer_order(void **state)
{
	unsigned n = 20000 * scale();
	for (unsigned i = 0; i < n; i++) {
		int64_t a = pick_i64(), b = pick_i64();
		uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
		struct rec_key ka, kb;

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_i64(&ka, a);
		rec_key_i64(&kb, b);
		assert_int_equal(key_cmp(&ka, &kb), CMP(a, b));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_i32(&ka, (int32_t)a);
		rec_key_i32(&kb, (int32_t)b);
		assert_int_equal(key_cmp(&ka, &kb), CMP((int32_t)a, (int32_t)b));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_i16(&ka, (int16_t)a);
		rec_key_i16(&kb, (int16_t)b);
		assert_int_equal(key_cmp(&ka, &kb), CMP((int16_t)a, (int16_t)b));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_i8(&ka, (int8_t)a);
		rec_key_i8(&kb, (int8_t)b);
		assert_int_equal(key_cmp(&ka, &kb), CMP((int8_t)a, (int8_t)b));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_u64(&ka, ua);
		rec_key_u64(&kb, ub);
		assert_int_equal(key_cmp(&ka, &kb), CMP(ua, ub));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_u32(&ka, (uint32_t)ua);
		rec_key_u32(&kb, (uint32_t)ub);
		assert_int_equal(key_cmp(&ka, &kb), CMP((uint32_t)ua, (uint32_t)ub));

		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_u16(&ka, (uint16_t)ua);
		rec_key_u16(&kb, (uint16_t)ub);
		assert_int_equal(key_cmp(&ka, &kb), CMP((uint16_t)ua, (uint16_t)ub));
	}
}

/* ------------------------------------------------------------------ */
/* Strings                                                            */

static void check_str_round_trip(const uint8_t *s, size_t n)
{
	struct rec_key k;
	rec_key_init(&k);
	assert_int_equal(rec_key_str(&k, s, n), 0);
	assert_int_equal(rec_key_u8(&k, 0x5a), 0); /* a field after it */
	size_t zeros = 0;
	for (size_t i = 0; i < n; i++)
		zeros += s[i] == 0;
	assert_int_equal(k.len, n + zeros + 2 + 1);

	/* Read from an exact-size copy so ASan sees any overrun. */
	uint8_t *copy = malloc(k.len);
	assert_non_null(copy);
	memcpy(copy, k.buf, k.len);
	struct rec_reader r;
	size_t len = SIZE_MAX;
	uint8_t out[600];
	uint8_t tail;
	rec_rd_init(&r, copy, k.len);
	assert_int_equal(rec_rd_str_len(&r, &len), 0);
	assert_int_equal(len, n);
	assert_int_equal(rec_rd_str(&r, out, sizeof(out), &len), 0);
	assert_int_equal(len, n);
	if (n)
		assert_memory_equal(out, s, n);
	assert_int_equal(rec_rd_u8(&r, &tail), 0);
	assert_int_equal(tail, 0x5a);
	assert_int_equal(rec_rd_end(&r), 0);
	free(copy);
}

static void test_string_round_trip(void **state)
{
	uint8_t all[512];
	for (unsigned i = 0; i < 512; i++)
		all[i] = (uint8_t)i; /* every byte value twice, zeros included */
	check_str_round_trip(NULL, 0);
	check_str_round_trip((const uint8_t *)"", 0);
	check_str_round_trip((const uint8_t *)"\0", 1);
	check_str_round_trip((const uint8_t *)"\0\0\0", 3);
	check_str_round_trip((const uint8_t *)"\xff\0\xff", 3);
	check_str_round_trip((const uint8_t *)"hello", 5);
	check_str_round_trip(all, sizeof(all));
	for (unsigned i = 0; i < 2000; i++) {
		uint8_t s[40];
		size_t n = below(sizeof(s) + 1);
		for (size_t j = 0; j < n; j++)
			s[j] = (uint8_t)(below(3) ? rnd() : 0);
		check_str_round_trip(s, n);
	}

	/* The escape as documented: 00 -> 00 FF, terminator 00 00. */
	struct rec_key k;
	rec_key_init(&k);
	rec_key_str(&k, "a\0b", 3);
	static const uint8_t want[] = {'a', 0, 0xff, 'b', 0, 0};
	assert_int_equal(k.len, sizeof(want));
	assert_memory_equal(k.buf, want, sizeof(want));
}

/* A tuple (i32, string, u16, fixed 2 bytes, i64) with small domains so that
 * equal fields, prefixes and embedded zeros are common. */
struct tuple {
	int32_t a;
	uint8_t s[6];
	size_t slen;
	uint16_t c;
	uint8_t f[2];
	int64_t d;
};

static void tuple_random(struct tuple *t)
{
	static const uint8_t alphabet[] = {0x00, 0x01, 0xfe, 0xff, 'a'};
	t->a = below(4) ? (int32_t)below(5) - 2 : (int32_t)rnd();
	t->slen = below(sizeof(t->s) + 1);
	for (size_t i = 0; i < t->slen; i++)
		t->s[i] = alphabet[below(sizeof(alphabet))];
	t->c = (uint16_t)below(3);
	t->f[0] = alphabet[below(sizeof(alphabet))];
	t->f[1] = alphabet[below(sizeof(alphabet))];
	t->d = pick_i64();
}

static int tuple_cmp(const struct tuple *x, const struct tuple *y)
{
	int c = CMP(x->a, y->a);
	if (!c)
		c = bytes_cmp(x->s, x->slen, y->s, y->slen);
	if (!c)
		c = CMP(x->c, y->c);
	if (!c)
		c = bytes_cmp(x->f, 2, y->f, 2);
	if (!c)
		c = CMP(x->d, y->d);
	return c;
}

static void tuple_encode(const struct tuple *t, struct rec_key *k)
{
	rec_key_init(k);
	rec_key_i32(k, t->a);
	rec_key_str(k, t->s, t->slen);
	rec_key_u16(k, t->c);
	rec_key_bytes(k, t->f, 2);
	rec_key_i64(k, t->d);
	assert_int_equal(k->err, 0);
}

/* Decode a whole tuple; 0 or the first error. */
static int tuple_decode(const void *p, unsigned len, struct tuple *t)
{
	struct rec_reader r;
	rec_rd_init(&r, p, len);
	rec_rd_i32(&r, &t->a);
	rec_rd_str(&r, t->s, sizeof(t->s), &t->slen);
	rec_rd_u16(&r, &t->c);
	rec_rd_bytes(&r, t->f, 2);
	rec_rd_i64(&r, &t->d);
	return rec_rd_end(&r);
}

static void test_tuple_order(void **state)
{
	unsigned n = 50000 * scale();
	for (unsigned i = 0; i < n; i++) {
		struct tuple x, y, back;
		struct rec_key kx, ky;
		tuple_random(&x);
		tuple_random(&y);
		tuple_encode(&x, &kx);
		tuple_encode(&y, &ky);
		assert_int_equal(key_cmp(&kx, &ky), tuple_cmp(&x, &y));
		assert_int_equal(tuple_decode(kx.buf, kx.len, &back), 0);
		assert_int_equal(tuple_cmp(&back, &x), 0);
	}
}

/* Strings alone: order of encodings == lexicographic order, prefixes first. */
static void test_string_order(void **state)
{
	static const uint8_t alphabet[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff};
	unsigned n = 50000 * scale();
	for (unsigned i = 0; i < n; i++) {
		uint8_t a[8], b[8];
		size_t an = below(9), bn = below(9);
		for (size_t j = 0; j < an; j++)
			a[j] = alphabet[below(sizeof(alphabet))];
		for (size_t j = 0; j < bn; j++)
			b[j] = below(2) && j < an ? a[j] : alphabet[below(sizeof(alphabet))];
		struct rec_key ka, kb;
		rec_key_init(&ka);
		rec_key_init(&kb);
		rec_key_str(&ka, a, an);
		rec_key_str(&kb, b, bn);
		assert_int_equal(key_cmp(&ka, &kb), bytes_cmp(a, an, b, bn));
	}
}

static void test_string_prefix(void **state)
{
	struct rec_key p, k;
	rec_key_init(&p);
	rec_key_u32(&p, 7);
	rec_key_str_prefix(&p, "ab\0", 3);

	const char *names[] = {"ab", "ab\0", "ab\0c", "ab\1", "abc"};
	const size_t lens[] = {2, 3, 4, 3, 3};
	const bool match[] = {false, true, true, false, false};
	for (unsigned i = 0; i < 5; i++) {
		rec_key_init(&k);
		rec_key_u32(&k, 7);
		rec_key_str(&k, names[i], lens[i]);
		rec_key_u8(&k, 1);
		assert_int_equal(rec_key_has_prefix(k.buf, k.len, &p), match[i]);
		/* Every key with the prefix sorts at or after it. */
		if (match[i])
			assert_true(key_cmp(&p, &k) < 0);
	}
}

/* ------------------------------------------------------------------ */
/* Limits and bad input                                               */

static void test_builder_overflow(void **state)
{
	struct rec_key k;
	rec_key_init(&k);
	for (unsigned i = 0; i < BT_KEY_MAX / 8; i++)
		assert_int_equal(rec_key_u64(&k, i), 0);
	assert_int_equal(k.len, BT_KEY_MAX);
	assert_int_equal(rec_key_u8(&k, 1), -E2BIG);
	assert_int_equal(k.len, BT_KEY_MAX);
	assert_int_equal(k.err, -E2BIG);
	/* Sticky: nothing appends any more, even what would fit. */
	k.len = 0;
	assert_int_equal(rec_key_u8(&k, 1), -E2BIG);
	assert_int_equal(k.len, 0);

	/* A string that does not fit leaves the key as it was. */
	rec_key_init(&k);
	uint8_t big[BT_KEY_MAX];
	memset(big, 'x', sizeof(big));
	assert_int_equal(rec_key_bytes(&k, big, 10), 0);
	assert_int_equal(rec_key_str(&k, big, BT_KEY_MAX - 11), -E2BIG);
	assert_int_equal(k.len, 10);
	rec_key_init(&k);
	assert_int_equal(rec_key_str(&k, big, BT_KEY_MAX - 2), 0);
	assert_int_equal(k.len, BT_KEY_MAX);
	/* Zeros double in size: half the key's worth of zeros cannot fit. */
	memset(big, 0, sizeof(big));
	rec_key_init(&k);
	assert_int_equal(rec_key_str(&k, big, BT_KEY_MAX / 2), -E2BIG);
	assert_int_equal(k.len, 0);
	rec_key_init(&k);
	assert_int_equal(rec_key_str(&k, big, BT_KEY_MAX / 2 - 1), 0);
	assert_int_equal(k.len, BT_KEY_MAX);
}

static void test_reader_truncated(void **state)
{
	unsigned n = 2000 * scale();
	for (unsigned i = 0; i < n; i++) {
		struct tuple t, back;
		struct rec_key k;
		tuple_random(&t);
		tuple_encode(&t, &k);
		for (unsigned cut = 0; cut < k.len; cut++) {
			/* Exact-size allocation (malloc(0) may be NULL). */
			uint8_t *p = malloc(cut ? cut : 1);
			assert_non_null(p);
			memcpy(p, k.buf, cut);
			assert_int_equal(tuple_decode(cut ? p : NULL, cut, &back), -EBADMSG);
			free(p);
		}
		/* One byte too many is an error too. */
		k.buf[k.len] = 0;
		assert_int_equal(tuple_decode(k.buf, k.len + 1, &back), -EBADMSG);
	}

	/* The errors stay: a read after a failure does not read. */
	struct rec_reader r;
	uint8_t two[2] = {1, 2};
	uint32_t v32 = 99;
	uint8_t v8 = 99;
	rec_rd_init(&r, two, 2);
	assert_int_equal(rec_rd_u32(&r, &v32), -EBADMSG);
	assert_int_equal(v32, 99);
	assert_int_equal(rec_rd_u8(&r, &v8), -EBADMSG);
	assert_int_equal(v8, 99);
	assert_int_equal(rec_rd_end(&r), -EBADMSG);
}

static void expect_bad_str(const void *p, unsigned len, int err)
{
	uint8_t *copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, p, len);
	struct rec_reader r;
	uint8_t out[16];
	size_t n = 12345;
	rec_rd_init(&r, copy, len);
	assert_int_equal(rec_rd_str(&r, out, sizeof(out), &n), err);
	assert_int_equal(n, 12345);
	assert_int_equal(r.pos, 0);
	free(copy);
}

static void test_string_malformed(void **state)
{
	expect_bad_str("", 0, -EBADMSG);
	expect_bad_str("ab", 2, -EBADMSG);		       /* no terminator */
	expect_bad_str("ab\0", 3, -EBADMSG);		       /* half a terminator */
	expect_bad_str("ab\0\x01\0\0", 6, -EBADMSG);	       /* 00 01 is no escape */
	expect_bad_str("ab\0\xff", 4, -EBADMSG);	       /* escape, then the end */
	expect_bad_str("0123456789abcdefg\0\0", 19, -ENOBUFS); /* 17 > 16 */

	/* ENOBUFS is announced by rec_rd_str_len, which does not consume. */
	struct rec_reader r;
	size_t n;
	uint8_t out[4];
	rec_rd_init(&r, "abcdef\0\0", 8);
	assert_int_equal(rec_rd_str_len(&r, &n), 0);
	assert_int_equal(n, 6);
	assert_int_equal(r.pos, 0);
	assert_int_equal(rec_rd_str(&r, out, sizeof(out), &n), -ENOBUFS);
	assert_int_equal(rec_rd_end(&r), -ENOBUFS);
}

/* Random bytes through the tuple decoder: it may accept them, but then the
 * bytes must be the canonical encoding of what it decoded. */
static void test_reader_garbage(void **state)
{
	static const uint8_t alphabet[] = {0x00, 0x00, 0x00, 0x01, 0xff, 0x80, 'a'};
	unsigned n = 100000 * scale();
	unsigned accepted = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned len = (unsigned)below(32);
		uint8_t *p = malloc(len ? len : 1);
		assert_non_null(p);
		for (unsigned j = 0; j < len; j++)
			p[j] = alphabet[below(sizeof(alphabet))];
		struct tuple t;
		if (tuple_decode(p, len, &t) == 0) {
			struct rec_key k;
			tuple_encode(&t, &k);
			assert_int_equal(k.len, len);
			assert_memory_equal(k.buf, p, len);
			accepted++;
		}
		free(p);
	}
	/* The alphabet makes valid keys common enough to test both paths. */
	assert_true(accepted > 0);
}

/* ------------------------------------------------------------------ */
/* Layouts                                                            */

struct sample {
	uint8_t u8;
	int8_t i8;
	uint16_t u16;
	int16_t i16;
	uint32_t u32;
	int32_t i32;
	uint64_t u64;
	int64_t i64;
	double f64;
	uint8_t raw[5];
	char name[9];
};

static const struct rec_field sample_fields[] = {
    REC_FIELD(REC_U32, struct sample, u32), /* not in struct order on purpose */
    REC_FIELD(REC_U8, struct sample, u8),     REC_FIELD(REC_I8, struct sample, i8),
    REC_FIELD(REC_U16, struct sample, u16),   REC_FIELD(REC_I16, struct sample, i16),
    REC_FIELD(REC_I32, struct sample, i32),   REC_FIELD(REC_U64, struct sample, u64),
    REC_FIELD(REC_I64, struct sample, i64),   REC_FIELD(REC_F64, struct sample, f64),
    REC_FIELD(REC_BYTES, struct sample, raw), REC_FIELD(REC_CSTR, struct sample, name),
};

static void sample_random(struct sample *s)
{
	memset(s, 0, sizeof(*s));
	s->u8 = (uint8_t)rnd();
	s->i8 = (int8_t)rnd();
	s->u16 = (uint16_t)rnd();
	s->i16 = (int16_t)rnd();
	s->u32 = (uint32_t)rnd();
	s->i32 = (int32_t)rnd();
	s->u64 = rnd();
	s->i64 = (int64_t)rnd();
	s->f64 = (double)(int64_t)rnd() / 3.0;
	for (unsigned i = 0; i < sizeof(s->raw); i++)
		s->raw[i] = (uint8_t)rnd();
	size_t n = below(sizeof(s->name));
	for (size_t i = 0; i < n; i++)
		s->name[i] = (char)('a' + below(26));
}

static void test_value_round_trip(void **state)
{
	struct rec_layout l;
	assert_int_equal(
	    rec_layout_init(&l, sample_fields, REC_NFIELDS(sample_fields), sizeof(struct sample)),
	    0);
	assert_int_equal(l.val_size, 4 + 1 + 1 + 2 + 2 + 4 + 8 + 8 + 8 + 5 + 8);
	assert_false(l.key_ok);

	for (unsigned i = 0; i < 1000; i++) {
		struct sample s, back;
		uint8_t buf[128];
		sample_random(&s);
		assert_int_equal(rec_val_pack(&l, &s, buf, sizeof(buf)), (int)l.val_size);
		memset(&back, 0, sizeof(back));
		assert_int_equal(rec_val_unpack(&l, buf, l.val_size, &back), 0);
		assert_memory_equal(&s, &back, sizeof(s));
	}

	/* The documented byte order: fields in table order, little-endian. */
	struct sample s;
	uint8_t buf[128];
	memset(&s, 0, sizeof(s));
	s.u32 = 0x01020304;
	s.u8 = 0xaa;
	s.i16 = -2;
	strcpy(s.name, "xy");
	assert_int_equal(rec_val_pack(&l, &s, buf, sizeof(buf)), (int)l.val_size);
	static const uint8_t head[] = {4, 3, 2, 1, 0xaa, 0, 0, 0, 0xfe, 0xff};
	assert_memory_equal(buf, head, sizeof(head));
	assert_memory_equal(buf + l.val_size - 8, "xy\0\0\0\0\0\0", 8);

	/* Errors. */
	assert_int_equal(rec_val_pack(&l, &s, buf, l.val_size - 1), -E2BIG);
	assert_int_equal(rec_val_unpack(&l, buf, l.val_size - 1, &s), -EBADMSG);
	assert_int_equal(rec_val_unpack(&l, buf, l.val_size + 1, &s), -EBADMSG);
	memset(s.name, 'z', sizeof(s.name)); /* no terminator */
	assert_int_equal(rec_val_pack(&l, &s, buf, sizeof(buf)), -EINVAL);
}

static void test_layout_errors(void **state)
{
	struct rec_layout l;
	struct rec_field f;

	f = (struct rec_field){.type = REC_U32, .offset = 0, .size = 8};
	assert_int_equal(rec_layout_init(&l, &f, 1, 16), -EINVAL); /* size mismatch */
	f = (struct rec_field){.type = REC_U64, .offset = 12, .size = 8};
	assert_int_equal(rec_layout_init(&l, &f, 1, 16), -EINVAL); /* outside */
	f = (struct rec_field){.type = 99, .offset = 0, .size = 4};
	assert_int_equal(rec_layout_init(&l, &f, 1, 16), -EINVAL); /* type */
	f = (struct rec_field){.type = REC_BYTES, .offset = 0, .size = 0};
	assert_int_equal(rec_layout_init(&l, &f, 1, 16), -EINVAL); /* empty */
	f = (struct rec_field){.type = REC_U64, .offset = 8, .size = 8};
	assert_int_equal(rec_layout_init(&l, &f, 0, 16), -EINVAL);
	assert_int_equal(rec_layout_init(&l, NULL, 1, 16), -EINVAL);
	assert_int_equal(rec_layout_init(&l, &f, 1, 16), 0);
	assert_int_equal(l.val_size, 8);
	assert_int_equal(l.key_max, 8);
	assert_true(l.key_ok);
}

/* A key struct whose field order differs from its member order. */
struct okey {
	char name[12];
	int32_t o;
	uint16_t w;
	uint8_t d;
};

static const struct rec_field okey_fields[] = {
    REC_FIELD(REC_U16, struct okey, w),
    REC_FIELD(REC_U8, struct okey, d),
    REC_FIELD(REC_CSTR, struct okey, name),
    REC_FIELD(REC_I32, struct okey, o),
};

static int okey_cmp(const struct okey *x, const struct okey *y)
{
	int c = CMP(x->w, y->w);
	if (!c)
		c = CMP(x->d, y->d);
	if (!c)
		c = sgn(strcmp(x->name, y->name));
	if (!c)
		c = CMP(x->o, y->o);
	return c;
}

static void okey_random(struct okey *k, unsigned spread)
{
	memset(k, 0, sizeof(*k));
	k->w = (uint16_t)below(3);
	k->d = (uint8_t)below(3);
	size_t n = below(4);
	for (size_t i = 0; i < n; i++)
		k->name[i] = (char)(below(2) ? 'a' : '\x80' + (char)below(2));
	k->o = (int32_t)below(spread) - (int32_t)spread / 2;
}

static void test_key_layout(void **state)
{
	struct rec_layout l;
	assert_int_equal(
	    rec_layout_init(&l, okey_fields, REC_NFIELDS(okey_fields), sizeof(struct okey)), 0);
	assert_true(l.key_ok);
	assert_int_equal(l.key_max, 2 + 1 + 24 + 4);

	unsigned n = 20000 * scale();
	for (unsigned i = 0; i < n; i++) {
		struct okey x, y, back;
		struct rec_key kx, ky;
		okey_random(&x, 8);
		okey_random(&y, 8);
		rec_key_init(&kx);
		rec_key_init(&ky);
		assert_int_equal(rec_key_pack(&kx, &l, &x, REC_ALL_FIELDS), 0);
		assert_int_equal(rec_key_pack(&ky, &l, &y, REC_ALL_FIELDS), 0);
		assert_int_equal(key_cmp(&kx, &ky), okey_cmp(&x, &y));
		memset(&back, 0x55, sizeof(back));
		assert_int_equal(rec_key_unpack(&l, kx.buf, kx.len, &back), 0);
		assert_int_equal(okey_cmp(&back, &x), 0);
		assert_memory_equal(back.name, x.name, sizeof(x.name));

		/* A packed prefix of two fields is a prefix of the key. */
		struct rec_key p;
		rec_key_init(&p);
		assert_int_equal(rec_key_pack(&p, &l, &x, 2), 0);
		assert_int_equal(p.len, 3);
		assert_true(rec_key_has_prefix(kx.buf, kx.len, &p));

		/* Any truncation fails to unpack, so does one byte more. */
		unsigned cut = (unsigned)below(kx.len);
		assert_int_equal(rec_key_unpack(&l, kx.buf, cut, &back), -EBADMSG);
		kx.buf[kx.len] = 0;
		assert_int_equal(rec_key_unpack(&l, kx.buf, kx.len + 1, &back), -EBADMSG);
	}

	/* A string too long for its member, and one with a zero byte. */
	struct rec_key k;
	struct okey back;
	rec_key_init(&k);
	rec_key_u16(&k, 1);
	rec_key_u8(&k, 1);
	rec_key_str(&k, "0123456789ab", 12);
	rec_key_i32(&k, 0);
	assert_int_equal(rec_key_unpack(&l, k.buf, k.len, &back), -EBADMSG);
	rec_key_init(&k);
	rec_key_u16(&k, 1);
	rec_key_u8(&k, 1);
	rec_key_str(&k, "a\0b", 3);
	rec_key_i32(&k, 0);
	assert_int_equal(rec_key_unpack(&l, k.buf, k.len, &back), -EBADMSG);

	/* Unterminated member: -EINVAL, key unchanged but poisoned. */
	struct okey bad;
	memset(&bad, 'q', sizeof(bad));
	rec_key_init(&k);
	rec_key_u8(&k, 9);
	assert_int_equal(rec_key_pack(&k, &l, &bad, REC_ALL_FIELDS), -EINVAL);
	assert_int_equal(k.len, 1);
	assert_int_equal(rec_key_u8(&k, 1), -EINVAL);

	/* A layout with a float is no key layout. */
	struct rec_layout fl;
	struct sample s;
	memset(&s, 0, sizeof(s));
	rec_layout_init(&fl, sample_fields, REC_NFIELDS(sample_fields), sizeof(s));
	rec_key_init(&k);
	assert_int_equal(rec_key_pack(&k, &fl, &s, REC_ALL_FIELDS), -EINVAL);
	assert_int_equal(rec_key_unpack(&fl, k.buf, 0, &s), -EINVAL);
}

/* ------------------------------------------------------------------ */
/* Typed tables on a real pool                                        */

/* One pool for the whole run, in a private temporary directory; each test
 * makes its own tree. */
static struct bm *pool;
static char pool_dir[256];
static char pool_image[300];

static int pool_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(pool_dir, sizeof(pool_dir), "%s/vs-record-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(pool_dir)) {
		perror("mkdtemp");
		pool_dir[0] = 0;
		return 0; /* the table tests skip */
	}
	snprintf(pool_image, sizeof(pool_image), "%s/image", pool_dir);
	int err = bm_format(pool_image, 64u << 20, true);
	if (err) {
		fprintf(stderr, "bm_format: %s\n", strerror(-err));
		return 0;
	}
	/* A small pool, so that the larger runs also evict. */
	struct bm_config cfg = {.path = pool_image, .pool_bytes = 2u << 20, .no_direct = true};
	err = bm_open(&cfg, &pool);
	if (err) {
		fprintf(stderr, "bm_open: %s\n", strerror(-err));
		pool = NULL;
	}
	return 0;
}

static int pool_teardown(void **state)
{
	int err = bm_close(pool);
	pool = NULL;
	if (pool_image[0])
		unlink(pool_image);
	if (pool_dir[0])
		rmdir(pool_dir);
	return err ? -1 : 0;
}

/* A TPC-C flavoured record. */
struct orec {
	uint64_t id;
	double amount;
	char note[24];
	uint8_t tag[5];
	int16_t delta;
};

static const struct rec_field orec_fields[] = {
    REC_FIELD(REC_U64, struct orec, id),    REC_FIELD(REC_F64, struct orec, amount),
    REC_FIELD(REC_CSTR, struct orec, note), REC_FIELD(REC_BYTES, struct orec, tag),
    REC_FIELD(REC_I16, struct orec, delta),
};

struct entry {
	struct okey k;
	struct orec v;
	bool gone;
};

struct table_fixture {
	struct rec_layout kl, vl;
	struct rec_table t;
	struct entry *e; /* sorted by key */
	size_t n;
};

static int entry_cmp(const void *a, const void *b)
{
	return okey_cmp(&((const struct entry *)a)->k, &((const struct entry *)b)->k);
}

static void orec_random(struct orec *v, uint64_t id)
{
	memset(v, 0, sizeof(*v));
	v->id = id;
	v->amount = (double)below(1000000) / 100.0;
	snprintf(v->note, sizeof(v->note), "note %llu", (unsigned long long)rnd() % 100000);
	for (unsigned i = 0; i < sizeof(v->tag); i++)
		v->tag[i] = (uint8_t)rnd();
	v->delta = (int16_t)rnd();
}

static int table_setup(void **state)
{
	struct table_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	*state = f;
	if (!pool)
		return 0;
	assert_int_equal(
	    rec_layout_init(&f->kl, okey_fields, REC_NFIELDS(okey_fields), sizeof(struct okey)), 0);
	assert_int_equal(
	    rec_layout_init(&f->vl, orec_fields, REC_NFIELDS(orec_fields), sizeof(struct orec)), 0);
	uint64_t root;
	assert_int_equal(bt_create(pool, &root), 0);
	assert_int_equal(rec_table_open(&f->t, pool, root, &f->kl, &f->vl), 0);

	/* Unique random keys, sorted: the reference the tree must match. */
	size_t want = 3000 * scale();
	f->e = calloc(want, sizeof(*f->e));
	assert_non_null(f->e);
	for (size_t i = 0; i < want; i++)
		okey_random(&f->e[i].k, 4000);
	qsort(f->e, want, sizeof(*f->e), entry_cmp);
	for (size_t i = 0; i < want; i++) {
		if (f->n && okey_cmp(&f->e[f->n - 1].k, &f->e[i].k) == 0)
			continue;
		f->e[f->n++].k = f->e[i].k;
	}
	for (size_t i = 0; i < f->n; i++)
		orec_random(&f->e[i].v, i);

	/* Insert in a scrambled order so splits happen all over the tree. */
	size_t step = 7919 % f->n ? 7919 : 7907;
	for (size_t i = 0, j = 0; i < f->n; i++, j = (j + step) % f->n)
		assert_int_equal(rec_table_insert(&f->t, &f->e[j].k, &f->e[j].v), 0);
	return 0;
}

static int table_teardown(void **state)
{
	struct table_fixture *f = *state;
	if (pool && f->t.bt.bm)
		assert_int_equal(bt_destroy(pool, f->t.bt.root), 0);
	free(f->e);
	free(f);
	return 0;
}

static void orec_equal(const struct orec *a, const struct orec *b)
{
	assert_true(a->id == b->id);
	assert_true(a->amount == b->amount);
	assert_string_equal(a->note, b->note);
	assert_memory_equal(a->tag, b->tag, sizeof(a->tag));
	assert_int_equal(a->delta, b->delta);
}

static void check_all(struct table_fixture *f)
{
	for (size_t i = 0; i < f->n; i++) {
		struct orec v;
		int err = rec_table_lookup(&f->t, &f->e[i].k, &v);
		if (f->e[i].gone) {
			assert_int_equal(err, -ENOENT);
		} else {
			assert_int_equal(err, 0);
			orec_equal(&v, &f->e[i].v);
		}
	}
}

static void test_table_open_errors(void **state)
{
	struct rec_layout kl, vl, big;
	struct rec_table t;
	rec_layout_init(&kl, okey_fields, REC_NFIELDS(okey_fields), sizeof(struct okey));
	rec_layout_init(&vl, orec_fields, REC_NFIELDS(orec_fields), sizeof(struct orec));
	assert_int_equal(rec_table_open(&t, NULL, 1, &kl, &vl), 0);
	assert_int_equal(rec_table_open(&t, NULL, 1, &vl, &vl), -EINVAL); /* float key */

	/* A key that may escape to more than BT_KEY_MAX, a value too large. */
	static const struct rec_field wide = {.type = REC_CSTR, .offset = 0, .size = 600};
	rec_layout_init(&big, &wide, 1, 600);
	assert_int_equal(rec_table_open(&t, NULL, 1, &big, &vl), -EINVAL);
	static const struct rec_field huge = {.type = REC_BYTES, .offset = 0, .size = 4001};
	rec_layout_init(&big, &huge, 1, 4001);
	assert_int_equal(rec_table_open(&t, NULL, 1, &kl, &big), -EINVAL);
}

static void test_table_basic(void **state)
{
	struct table_fixture *f = *state;
	if (!pool)
		skip();
	check_all(f);
	for (size_t i = 0; i < f->n; i += 97)
		assert_int_equal(rec_table_insert(&f->t, &f->e[i].k, &f->e[i].v), -EEXIST);

	/* A key between two stored ones is absent. */
	struct okey k = f->e[0].k;
	struct orec v;
	k.o = INT32_MIN;
	if (okey_cmp(&k, &f->e[0].k) != 0)
		assert_int_equal(rec_table_lookup(&f->t, &k, &v), -ENOENT);

	/* put replaces. */
	struct orec nv = f->e[1].v;
	nv.amount = -1.5;
	strcpy(nv.note, "replaced");
	assert_int_equal(rec_table_put(&f->t, &f->e[1].k, &nv), 0);
	f->e[1].v = nv;
	check_all(f);

	struct bt_info info;
	assert_int_equal(bt_check(&f->t.bt, &info), 0);
	assert_true(info.entries == f->n);
}

struct collect {
	const struct table_fixture *f;
	size_t next; /* reference index expected next */
	int dir;     /* +1 ascending, -1 descending */
	size_t seen;
	const struct rec_key *prefix; /* stop when a key leaves it */
	const struct rec_layout *kl;
};

static bool collect_cb(void *ctx, const void *key, const void *rec)
{
	struct collect *c = ctx;
	const struct okey *k = key;
	if (c->prefix) {
		struct rec_key enc;
		rec_key_init(&enc);
		rec_key_pack(&enc, c->kl, k, REC_ALL_FIELDS);
		if (!rec_key_has_prefix(enc.buf, enc.len, c->prefix))
			return false;
	}
	assert_true(c->next < c->f->n);
	assert_int_equal(okey_cmp(k, &c->f->e[c->next].k), 0);
	orec_equal(rec, &c->f->e[c->next].v);
	c->seen++;
	c->next += (size_t)c->dir;
	return true;
}

static void test_table_scan(void **state)
{
	struct table_fixture *f = *state;
	if (!pool)
		skip();
	struct okey kb;
	struct orec vb;

	struct collect c = {.f = f, .next = 0, .dir = 1};
	assert_int_equal(rec_table_scan(&f->t, false, NULL, 0, &kb, &vb, collect_cb, &c), 0);
	assert_int_equal(c.seen, f->n);

	c = (struct collect){.f = f, .next = f->n - 1, .dir = -1};
	assert_int_equal(rec_table_scan(&f->t, true, NULL, 0, &kb, &vb, collect_cb, &c), 0);
	assert_int_equal(c.seen, f->n);

	/* Ascending over every (w, d) prefix: exactly the matching entries. */
	size_t total = 0;
	for (uint16_t w = 0; w < 3; w++) {
		for (uint8_t d = 0; d < 3; d++) {
			struct okey from = {.w = w, .d = d};
			struct rec_key p;
			rec_key_init(&p);
			rec_key_pack(&p, &f->kl, &from, 2);
			size_t first = 0, count = 0;
			while (first < f->n && (f->e[first].k.w < w ||
						(f->e[first].k.w == w && f->e[first].k.d < d)))
				first++;
			while (first + count < f->n && f->e[first + count].k.w == w &&
			       f->e[first + count].k.d == d)
				count++;
			c = (struct collect){
			    .f = f, .next = first, .dir = 1, .prefix = &p, .kl = &f->kl};
			assert_int_equal(
			    rec_table_scan(&f->t, false, &from, 2, &kb, &vb, collect_cb, &c), 0);
			assert_int_equal(c.seen, count);
			total += count;
		}
	}
	assert_int_equal(total, f->n);

	/* Descending from an existing key and from just above one. */
	size_t mid = f->n / 2;
	c = (struct collect){.f = f, .next = mid, .dir = -1};
	assert_int_equal(
	    rec_table_scan(&f->t, true, &f->e[mid].k, REC_ALL_FIELDS, &kb, &vb, collect_cb, &c), 0);
	assert_int_equal(c.seen, mid + 1);
	struct okey above = f->e[mid].k;
	if (above.o < INT32_MAX && (mid + 1 == f->n || okey_cmp(&f->e[mid + 1].k, &above) > 0)) {
		above.o++;
		if (mid + 1 == f->n || okey_cmp(&f->e[mid + 1].k, &above) > 0) {
			c = (struct collect){.f = f, .next = mid, .dir = -1};
			assert_int_equal(rec_table_scan(&f->t, true, &above, REC_ALL_FIELDS, &kb,
							&vb, collect_cb, &c),
					 0);
			assert_int_equal(c.seen, mid + 1);
		}
	}
}

static int add_amount(void *ctx, void *rec)
{
	struct orec *v = rec;
	v->amount += *(const double *)ctx;
	v->delta++;
	return 0;
}

static int refuse(void *ctx, void *rec)
{
	struct orec *v = rec;
	v->amount = 12345; /* must not reach the tree */
	return -ECANCELED;
}

static int unterminate(void *ctx, void *rec)
{
	struct orec *v = rec;
	memset(v->note, 'x', sizeof(v->note));
	return 0;
}

static void test_table_update_remove(void **state)
{
	struct table_fixture *f = *state;
	if (!pool)
		skip();
	double inc = 2.5;
	for (size_t i = 0; i < f->n; i += 3) {
		struct orec v;
		assert_int_equal(rec_table_update(&f->t, &f->e[i].k, &v, add_amount, &inc), 0);
		f->e[i].v.amount += inc;
		f->e[i].v.delta++;
		orec_equal(&v, &f->e[i].v);
	}
	struct orec v;
	assert_int_equal(rec_table_update(&f->t, &f->e[0].k, &v, refuse, NULL), -ECANCELED);
	assert_int_equal(rec_table_update(&f->t, &f->e[0].k, &v, unterminate, NULL), -EINVAL);
	check_all(f);

	for (size_t i = 0; i < f->n; i += 2) {
		assert_int_equal(rec_table_remove(&f->t, &f->e[i].k), 0);
		f->e[i].gone = true;
	}
	assert_int_equal(rec_table_remove(&f->t, &f->e[0].k), -ENOENT);
	assert_int_equal(rec_table_update(&f->t, &f->e[0].k, &v, add_amount, &inc), -ENOENT);
	check_all(f);

	struct bt_info info;
	assert_int_equal(bt_check(&f->t.bt, &info), 0);
	assert_true(info.entries == f->n / 2);
}

static unsigned corrupt_logs;

static void count_sink(enum vs_log_level level, const char *msg)
{
	if (level == VS_LOG_ERR) /* one error line per report */
		corrupt_logs++;
}

static bool count_cb(void *ctx, const void *key, const void *rec)
{
	(*(size_t *)ctx)++;
	return true;
}

static void test_table_corrupt(void **state)
{
	struct table_fixture *f = *state;
	if (!pool)
		skip();
	struct okey kb;
	struct orec vb;
	size_t seen = 0;
	vs_log_set_sink(count_sink);
	corrupt_logs = 0;

	/* A value one byte short under a valid key. */
	struct rec_key k;
	rec_key_init(&k);
	rec_key_pack(&k, &f->kl, &f->e[5].k, REC_ALL_FIELDS);
	uint8_t junk[BT_VAL_MAX] = {0};
	assert_int_equal(bt_put(&f->t.bt, k.buf, k.len, junk, f->vl.val_size - 1), 0);
	assert_int_equal(rec_table_lookup(&f->t, &f->e[5].k, &vb), -EUCLEAN);
	double inc = 1;
	assert_int_equal(rec_table_update(&f->t, &f->e[5].k, &vb, add_amount, &inc), -EUCLEAN);
	assert_int_equal(rec_table_scan(&f->t, false, NULL, 0, &kb, &vb, count_cb, &seen),
			 -EUCLEAN);
	assert_int_equal(seen, 5); /* stopped at the bad one */
	/* One byte long: lookup must not overrun its buffer either. */
	assert_int_equal(bt_put(&f->t.bt, k.buf, k.len, junk, f->vl.val_size + 1), 0);
	assert_int_equal(rec_table_lookup(&f->t, &f->e[5].k, &vb), -EUCLEAN);
	assert_int_equal(rec_table_put(&f->t, &f->e[5].k, &f->e[5].v), 0);

	/* A key that is not a packed okey (too short): scans report it. */
	uint8_t raw = 0xff;
	uint8_t val[BT_VAL_MAX];
	assert_int_equal(rec_val_pack(&f->vl, &f->e[0].v, val, sizeof(val)), (int)f->vl.val_size);
	assert_int_equal(bt_put(&f->t.bt, &raw, 1, val, f->vl.val_size), 0);
	seen = 0;
	assert_int_equal(rec_table_scan(&f->t, false, NULL, 0, &kb, &vb, count_cb, &seen),
			 -EUCLEAN);
	assert_int_equal(seen, f->n);
	assert_int_equal(bt_remove(&f->t.bt, &raw, 1), 0);
	seen = 0;
	assert_int_equal(rec_table_scan(&f->t, false, NULL, 0, &kb, &vb, count_cb, &seen), 0);
	assert_int_equal(seen, f->n);

	assert_int_equal(corrupt_logs, 5);
	vs_log_set_sink(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unsigned_round_trip),
	    cmocka_unit_test(test_signed_round_trip),
	    cmocka_unit_test(test_integer_order),
	    cmocka_unit_test(test_string_round_trip),
	    cmocka_unit_test(test_tuple_order),
	    cmocka_unit_test(test_string_order),
	    cmocka_unit_test(test_string_prefix),
	    cmocka_unit_test(test_builder_overflow),
	    cmocka_unit_test(test_reader_truncated),
	    cmocka_unit_test(test_string_malformed),
	    cmocka_unit_test(test_reader_garbage),
	    cmocka_unit_test(test_value_round_trip),
	    cmocka_unit_test(test_layout_errors),
	    cmocka_unit_test(test_key_layout),
	    cmocka_unit_test(test_table_open_errors),
	    cmocka_unit_test_setup_teardown(test_table_basic, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_table_scan, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_table_update_remove, table_setup, table_teardown),
	    cmocka_unit_test_setup_teardown(test_table_corrupt, table_setup, table_teardown),
	};
	return cmocka_run_group_tests(tests, pool_setup, pool_teardown);
}
