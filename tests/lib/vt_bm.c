/* vt_bm.c - VS_TEST_BACKEND for the engine tests (see vt_bm.h). */
#include "vt_bm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum bm_backend_mode vt_bm_backend(void)
{
	static int announced;
	const char *s = getenv("VS_TEST_BACKEND");
	enum bm_backend_mode m;

	if (!s || !*s || strcmp(s, "madvise") == 0 || strcmp(s, "plain") == 0)
		return BM_BACKEND_PLAIN;
	if (strcmp(s, "exmap") == 0)
		m = BM_BACKEND_EXMAP;
	else if (strcmp(s, "auto") == 0)
		m = BM_BACKEND_AUTO;
	else {
		fprintf(stderr, "VS_TEST_BACKEND='%s': expected madvise, exmap or auto\n", s);
		exit(1);
	}
	if (!announced) {
		announced = 1;
		fprintf(stderr, "# VS_TEST_BACKEND=%s\n", s);
	}
	return m;
}

int vt_bm_open(struct bm_config *cfg, struct bm **ret_bm)
{
	struct bm_stats s;
	struct bm *bm = NULL;
	int r;

	cfg->backend = vt_bm_backend();
	r = bm_open(cfg, &bm);
	if (r < 0) {
		if (cfg->backend == BM_BACKEND_EXMAP)
			fprintf(stderr, "VS_TEST_BACKEND=exmap: bm_open(%s): %s\n", cfg->path,
				strerror(-r));
		return r;
	}
	bm_stats_get(bm, &s);
	if (cfg->backend == BM_BACKEND_EXMAP && strcmp(s.backend, "exmap") != 0) {
		fprintf(stderr, "VS_TEST_BACKEND=exmap, but the pool opened on %s\n", s.backend);
		bm_close(bm);
		return -ENODEV;
	}
	*ret_bm = bm;
	return 0;
}

uint64_t vt_test_scaled(uint64_t n, uint64_t min)
{
	const char *s = getenv("VS_TEST_SCALE");
	double f = 1, v;
	char *end;

	if (s && *s) {
		errno = 0;
		f = strtod(s, &end);
		if (errno || *end || !isfinite(f) || f <= 0 || f > 1e6) {
			fprintf(stderr, "VS_TEST_SCALE='%s': expected a positive number\n", s);
			exit(1);
		}
	}
	v = (double)n * f;
	return v < (double)min ? min : (uint64_t)v;
}
