/* vt_bm.c - VS_TEST_BACKEND for the engine tests (see vt_bm.h). */
#include "vt_bm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int vt_tmp_image(char *buf, size_t size, const char *tag)
{
	const char *dir = getenv("TMPDIR");
	snprintf(buf, size, "%s/vs-%s-XXXXXX", dir && *dir ? dir : "/tmp", tag);
	int fd = mkstemp(buf);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

struct vt_page {
	uint64_t pid, val;
};

static int page_set_op(struct bm_op *op, void *arg)
{
	struct vt_page *a = arg;
	struct bm_guard g;
	uint64_t *d = bm_fix_x(op, a->pid, &g);
	for (unsigned i = 0; i < BM_PAGE_SIZE / 8; i++)
		d[i] = a->val ^ i;
	bm_unfix(op, &g);
	return 0;
}

static int page_get_op(struct bm_op *op, void *arg)
{
	struct vt_page *a = arg;
	struct bm_guard g;
	const uint64_t *d = bm_fix_s(op, a->pid, &g);
	bool zeros = true, pattern = true;
	for (unsigned i = 0; i < BM_PAGE_SIZE / 8; i++) {
		zeros = zeros && d[i] == 0;
		pattern = pattern && (d[i] ^ i) == d[0];
	}
	a->val = zeros ? 0 : pattern ? d[0] : UINT64_MAX;
	bm_unfix(op, &g);
	return 0;
}

int vt_page_set(struct bm *bm, uint64_t pid, uint64_t val)
{
	struct vt_page a = {pid, val};
	return bm_run(bm, page_set_op, &a);
}

int vt_page_get(struct bm *bm, uint64_t pid, uint64_t *ret_val)
{
	struct vt_page a = {pid, 0};
	int r = bm_run(bm, page_get_op, &a);
	*ret_val = a.val;
	return r;
}
