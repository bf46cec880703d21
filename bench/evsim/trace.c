/* trace.c: reading evsim traces (the formats are in evsim.h). */
#include "evsim.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ev_trace_push(struct ev_trace *t, uint64_t rec)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 4096;
		uint64_t *r = realloc(t->rec, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		t->rec = r;
		t->cap = cap;
	}
	t->rec[t->n++] = rec;
	return 0;
}

void ev_trace_free(struct ev_trace *t)
{
	free(t->rec);
	memset(t, 0, sizeof(*t));
}

/* The whole of @f, in *ret_buf (NUL-terminated), its length in *ret_n. */
static int slurp(FILE *f, char **ret_buf, size_t *ret_n)
{
	size_t cap = 1 << 16, n = 0, got;
	char *b = malloc(cap + 1);
	if (!b)
		return -ENOMEM;
	while ((got = fread(b + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *nb = realloc(b, 2 * cap + 1);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
	}
	if (ferror(f)) {
		free(b);
		return -EIO;
	}
	b[n] = '\0';
	*ret_buf = b;
	*ret_n = n;
	return 0;
}

static int parse_binary(const uint8_t *b, size_t n, struct ev_trace *t)
{
	/* A torn last record (a writer killed mid-write) is left out. */
	for (size_t i = 8; i + 8 <= n; i += 8) {
		uint64_t v = 0;
		for (int k = 7; k >= 0; k--)
			v = v << 8 | b[i + k];
		if (ev_trace_push(t, v) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int parse_text(char *s, struct ev_trace *t)
{
	unsigned long lineno = 0;
	for (char *l = s; l && *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = '\0';
		lineno++;
		while (isspace((unsigned char)*l))
			l++;
		if (*l != '\0' && *l != '#') {
			char *end;
			errno = 0;
			unsigned long long pid = strtoull(l, &end, 10);
			if (end == l || errno || pid > EV_PID_MASK) {
				fprintf(stderr, "evsim: line %lu: not a page id: %s\n", lineno, l);
				return -EINVAL;
			}
			while (isspace((unsigned char)*end))
				end++;
			enum ev_rec kind = EV_REC_ACCESS;
			switch (*end) {
			case '\0': case 'a': break;
			case 'l': kind = EV_REC_LOAD; break;
			case 'e': kind = EV_REC_EVICT; break;
			case 'm': kind = EV_REC_MARK; break;
			case 'p': kind = EV_REC_PREFETCH; break;
			default:
				fprintf(stderr, "evsim: line %lu: unknown kind '%c'\n", lineno, *end);
				return -EINVAL;
			}
			if (ev_trace_push(t, ev_rec_make(kind, pid)) < 0)
				return -ENOMEM;
		}
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* A set of page ids: open addressing, deletion by backward shift. */
struct pidset {
	uint64_t *k, mask;
};

static uint64_t pidset_home(const struct pidset *s, uint64_t pid)
{
	return ((pid * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & s->mask;
}

/* Add @pid (true) or, when there, remove it (false). */
static bool pidset_toggle(struct pidset *s, uint64_t pid, bool add)
{
	uint64_t i = pidset_home(s, pid);
	while (s->k[i] != UINT64_MAX && s->k[i] != pid)
		i = (i + 1) & s->mask;
	if (add) {
		s->k[i] = pid;
		return true;
	}
	if (s->k[i] != pid)
		return false;
	for (uint64_t j = (i + 1) & s->mask; s->k[j] != UINT64_MAX; j = (j + 1) & s->mask) {
		uint64_t h = pidset_home(s, s->k[j]);
		if (((j - h) & s->mask) >= ((j - i) & s->mask)) {
			s->k[i] = s->k[j];
			i = j;
		}
	}
	s->k[i] = UINT64_MAX;
	return true;
}

long ev_trace_fold(struct ev_trace *t)
{
	uint64_t prefetches = 0;
	for (size_t i = 0; i < t->n; i++)
		prefetches += (t->rec[i] >> 56) == EV_REC_PREFETCH;
	if (prefetches == 0)
		return 0;
	struct pidset s;
	uint64_t n = 64;
	while (n < 2 * prefetches)
		n <<= 1;
	s.k = malloc(n * sizeof(*s.k));
	if (!s.k)
		return -ENOMEM;
	memset(s.k, 0xff, n * sizeof(*s.k));
	s.mask = n - 1;
	size_t out = 0;
	long folded = 0;
	for (size_t i = 0; i < t->n; i++) {
		uint64_t r = t->rec[i], pid = r & EV_PID_MASK;
		enum ev_rec kind = (enum ev_rec)(r >> 56);
		if (kind == EV_REC_PREFETCH) {
			pidset_toggle(&s, pid, true);
			r = ev_rec_make(EV_REC_LOAD, pid);
		} else if (kind == EV_REC_ACCESS || kind == EV_REC_LOAD || kind == EV_REC_EVICT) {
			/* its first use (or its end, unused): the prefetch stands for it */
			if (pidset_toggle(&s, pid, false) && kind == EV_REC_ACCESS) {
				folded++;
				continue;
			}
		}
		t->rec[out++] = r;
	}
	t->n = out;
	free(s.k);
	return folded;
}

int ev_trace_read(const char *path, struct ev_trace *ret)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	char *buf;
	size_t n;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (!f)
		return -errno;
	r = slurp(f, &buf, &n);
	if (f != stdin)
		fclose(f);
	if (r < 0)
		return r;
	if (n >= 8 && memcmp(buf, EV_TRACE_MAGIC, 8) == 0)
		r = parse_binary((const uint8_t *)buf, n, ret);
	else
		r = parse_text(buf, ret);
	free(buf);
	if (r < 0)
		ev_trace_free(ret);
	return r;
}
