#include "engine/log.h"

#include <stdarg.h>
#include <stdio.h>

static _Atomic(vs_log_sink) log_sink;

void vs_log_set_sink(vs_log_sink sink)
{
	log_sink = sink;
}

static void log_emit(enum vs_log_level level, const char *msg)
{
	vs_log_sink sink = log_sink;
	if (sink)
		sink(level, msg);
	else
		fprintf(stderr, "virtuscale: %s\n", msg);
}

void vs_log(enum vs_log_level level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_emit(level, buf);
}

int vs_corrupt(const char *file, int line, const char *fmt, ...)
{
	char what[400], buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(buf, sizeof(buf), "corruption: %s", what);
	log_emit(VS_LOG_ERR, buf);
	snprintf(buf, sizeof(buf), "(the damage reported above was detected at %s:%d)", file, line);
	log_emit(VS_LOG_DEBUG, buf);
	return -EUCLEAN;
}
