/*
 * log.h: the engine's diagnostics. One sink for every layer, so the daemon
 * can route messages to stderr or syslog and tests can capture them.
 */
#ifndef VS_ENGINE_LOG_H
#define VS_ENGINE_LOG_H

#include <errno.h>

enum vs_log_level { VS_LOG_ERR = 3, VS_LOG_WARN = 4, VS_LOG_INFO = 6, VS_LOG_DEBUG = 7 };

typedef void (*vs_log_sink)(enum vs_log_level level, const char *msg);

/* Replace the sink (NULL restores the default: "virtuscale: msg" on stderr). */
void vs_log_set_sink(vs_log_sink sink);

__attribute__((format(printf, 2, 3))) void vs_log(enum vs_log_level level, const char *fmt, ...);

/* Report corruption found on disk: logs what was wrong (an error, in words
 * a user can act on) and where in the source it was found (a debug line:
 * file and line help a developer, not the person whose disk it is), and
 * evaluates to -EUCLEAN for the caller to return. Never an assert: bad bytes
 * on disk are input, not a programming error. */
#define VS_CORRUPT(...) vs_corrupt(__FILE__, __LINE__, __VA_ARGS__)
__attribute__((format(printf, 3, 4))) int vs_corrupt(const char *file, int line,
						      const char *fmt, ...);

#endif
