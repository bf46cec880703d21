/*
 * vt_check.h - cmocka assertions for syscall results.  Include after
 * <cmocka.h>.  Each prints the expression, what came back and the errno
 * name, so a failure against the mount says which call and why.
 */
#ifndef VT_CHECK_H
#define VT_CHECK_H

#include <errno.h>
#include <string.h>

static inline const char *vt_errname(int e)
{
	const char *n = e ? strerrorname_np(e) : "0";

	return n ? n : "?";
}

/* The call must not return -1 (or MAP_FAILED via VT_OK_PTR); yields its value. */
#define VT_OK(expr)                                                                                \
	({                                                                                         \
		errno = 0;                                                                         \
		long vt_r_ = (long)(expr);                                                         \
		if (vt_r_ == -1)                                                                   \
			fail_msg("%s failed: %s (%s)", #expr, vt_errname(errno), strerror(errno)); \
		vt_r_;                                                                             \
	})

/* The call must fail with -1 and exactly errno @err. */
#define VT_ERR(expr, err)                                                                          \
	do {                                                                                       \
		errno = 0;                                                                         \
		long vt_r_ = (long)(expr);                                                         \
		int vt_e_ = errno;                                                                 \
		if (vt_r_ != -1 || vt_e_ != (err))                                                 \
			fail_msg("%s: got %ld errno %s, want -1 errno %s", #expr, vt_r_,           \
				 vt_errname(vt_e_), vt_errname(err));                              \
	} while (0)

/* The call must return exactly @want. */
#define VT_EQ(expr, want)                                                                          \
	do {                                                                                       \
		errno = 0;                                                                         \
		long long vt_r_ = (long long)(expr);                                               \
		long long vt_w_ = (long long)(want);                                               \
		if (vt_r_ != vt_w_)                                                                \
			fail_msg("%s = %lld (errno %s), want %lld", #expr, vt_r_,                  \
				 vt_errname(errno), vt_w_);                                        \
	} while (0)

#define VT_TS_EQ(a, b) ((a).tv_sec == (b).tv_sec && (a).tv_nsec == (b).tv_nsec)
#define VT_TS_LT(a, b)                                                                             \
	((a).tv_sec < (b).tv_sec || ((a).tv_sec == (b).tv_sec && (a).tv_nsec < (b).tv_nsec))

#endif
