/*
 * tr_run.h - run the tools under test as child processes and capture what
 * they print (tests/tools only).
 *
 * Environment: VS_VSSTAT, VS_VSCTL, VS_VSTOP name the binaries (meson sets
 * them).  Functions return 0 or -1 after printing what failed.
 */
#ifndef TR_RUN_H
#define TR_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TR_OUT_MAX (256 * 1024)
#define TR_ERR_MAX (16 * 1024)

struct tr_result {
	int status; /* exit code, or 128 + signal number */
	size_t out_len, err_len;
	char out[TR_OUT_MAX]; /* NUL-terminated, truncated if longer */
	char err[TR_ERR_MAX];
};

/* Path of the tool named by environment variable @env, or NULL (message
 * printed) if unset or not executable. */
const char *tr_tool(const char *env);

/* Run @argv with stdin from /dev/null, capture stdout and stderr, wait at
 * most @timeout_s seconds (then SIGKILL, status 137). */
int tr_run(char *const argv[], double timeout_s, struct tr_result *ret);

/* Start @argv with stdout on a pipe (stderr inherited); *ret_fd reads it. */
int tr_spawn(char *const argv[], pid_t *ret_pid, int *ret_fd);

/* Read one line from @fd into @buf (without the newline), waiting at most
 * @timeout_s.  Returns the line's length + 1 (an empty line is 1), 0 at EOF,
 * -1 on timeout (quietly) or error.  Reads byte by byte: only for the short
 * line-buffered output of a tool. */
ssize_t tr_read_line(int fd, char *buf, size_t cap, double timeout_s);

/* Wait for @pid at most @timeout_s; returns the exit code (128 + signal), or
 * -1 after killing it on timeout. */
int tr_wait(pid_t pid, double timeout_s);

/* Number of lines of @text that contain @needle. */
unsigned tr_count_lines(const char *text, const char *needle);

/* True if some executable @prog is in PATH. */
bool tr_in_path(const char *prog);

#endif
