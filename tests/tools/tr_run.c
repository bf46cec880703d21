/*
 * tr_run.c - child-process helpers for the tools tests.  See tr_run.h.
 */
#include "tr_run.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *tr_tool(const char *env)
{
	const char *p = getenv(env);

	if (!p || !*p || access(p, X_OK) != 0) {
		fprintf(stderr, "tr: %s is not set to an executable\n", env);
		return NULL;
	}
	return p;
}

bool tr_in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (access(buf, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

static int decode_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

int tr_wait(pid_t pid, double timeout_s)
{
	double end = now() + timeout_s;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return decode_status(status);
		if (r < 0 && errno != EINTR) {
			perror("tr: waitpid");
			return -1;
		}
		if (now() > end) {
			fprintf(stderr, "tr: child %d still running after %.1f s; killing it\n",
				(int)pid, timeout_s);
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -1;
		}
		usleep(5000);
	}
}

static pid_t start(char *const argv[], int out_fd, int err_fd)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	int null = open("/dev/null", O_RDONLY);

	if (null >= 0)
		dup2(null, 0);
	if (out_fd >= 0)
		dup2(out_fd, 1);
	if (err_fd >= 0)
		dup2(err_fd, 2);
	execv(argv[0], argv);
	fprintf(stderr, "tr: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int tr_run(char *const argv[], double timeout_s, struct tr_result *ret)
{
	int out[2], err[2];
	double end = now() + timeout_s;
	bool out_open = true, err_open = true;
	pid_t pid;

	ret->status = 0;
	ret->out_len = ret->err_len = 0;
	ret->out[0] = ret->err[0] = '\0';
	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
		perror("tr: pipe");
		return -1;
	}
	pid = start(argv, out[1], err[1]);
	close(out[1]);
	close(err[1]);
	if (pid < 0) {
		perror("tr: fork");
		close(out[0]);
		close(err[0]);
		return -1;
	}
	while (out_open || err_open) {
		struct pollfd p[2] = {{.fd = out_open ? out[0] : -1, .events = POLLIN},
				      {.fd = err_open ? err[0] : -1, .events = POLLIN}};
		int left = (int)((end - now()) * 1000);

		if (left <= 0)
			break;
		if (poll(p, 2, left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			char *buf = i ? ret->err : ret->out;
			size_t *len = i ? &ret->err_len : &ret->out_len;
			size_t cap = i ? TR_ERR_MAX : TR_OUT_MAX;
			char sink[4096];
			ssize_t n;

			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (*len + 1 < cap)
				n = read(p[i].fd, buf + *len, cap - 1 - *len);
			else
				n = read(p[i].fd, sink, sizeof(sink)); /* drop the excess */
			if (n <= 0) {
				if (i)
					err_open = false;
				else
					out_open = false;
				continue;
			}
			if (*len + 1 < cap)
				*len += n;
			buf[*len] = '\0';
		}
	}
	close(out[0]);
	close(err[0]);
	ret->status = tr_wait(pid, end - now() > 1 ? end - now() : 1);
	if (ret->status < 0)
		ret->status = 137;
	return 0;
}

int tr_spawn(char *const argv[], pid_t *ret_pid, int *ret_fd)
{
	int out[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) != 0) {
		perror("tr: pipe");
		return -1;
	}
	pid = start(argv, out[1], -1);
	close(out[1]);
	if (pid < 0) {
		perror("tr: fork");
		close(out[0]);
		return -1;
	}
	*ret_pid = pid;
	*ret_fd = out[0];
	return 0;
}

ssize_t tr_read_line(int fd, char *buf, size_t cap, double timeout_s)
{
	double end = now() + timeout_s;
	size_t len = 0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)((end - now()) * 1000);
		ssize_t n;
		char c;

		if (left <= 0)
			return -1;
		if (poll(&p, 1, left) <= 0)
			continue;
		n = read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0 || c == '\n') {
			buf[len < cap ? len : cap - 1] = '\0';
			return n == 0 && len == 0 ? 0 : (ssize_t)len + 1;
		}
		if (len + 1 < cap)
			buf[len++] = c;
	}
}

unsigned tr_count_lines(const char *text, const char *needle)
{
	unsigned count = 0;
	const char *line = text;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		const char *hit = memmem(line, len, needle, strlen(needle));

		if (hit)
			count++;
		line = nl ? nl + 1 : NULL;
	}
	return count;
}
