/*
 * wire.c: two things the FUSE protocol offers that libfuse 3.14 (Debian 12)
 * does not pass on, done at the wire under libfuse (a custom io: libfuse
 * reads every request and writes every reply through these two functions).
 *
 * FUSE_HANDLE_KILLPRIV_V2. Without it the kernel cannot trust the daemon to
 * strip a file's powers (set-user-ID, set-group-ID, security.capability) on
 * a write, so before every write(2) it asks: one GETXATTR
 * "security.capability" round trip per call, which at 4 KiB writes cost
 * more than the write itself (15-16K random 4 KiB buffered writes/s with
 * it, 42-45K without). With it the kernel asks once per inode and leaves
 * the stripping to the daemon, telling it when in the request:
 * FUSE_WRITE_KILL_SUIDGID on a write, FATTR_KILL_SUIDGID on a setattr
 * (truncate, chown), FUSE_OPEN_KILL_SUIDGID on an open with O_TRUNC; the
 * flag is set only when the caller lacks CAP_FSETID. libfuse 3.14 knows
 * none of these, so:
 *
 *   read    notes, for the request just read, whether it carries a kill
 *           flag, in a thread-local that the handler asks through
 *           fs_wire_kill_privs() (libfuse's loops process each request on
 *           the thread that read it);
 *   writev  adds FUSE_HANDLE_KILLPRIV_V2 to the reply to FUSE_INIT when
 *           the kernel offered it.
 *
 * And one thing the kernel cannot do for us: keep a thread reading while
 * requests arrive (polling, below).
 *
 * FUSE over io_uring (uring.c) uses the same two seams. The INIT reply is
 * where the daemon accepts the ring: writev asks fs_uring_init_reply
 * whether to set FUSE_OVER_IO_URING (libfuse 3.14 builds that reply and
 * knows nothing of the flag), and once the reply is written tells
 * fs_uring_init_sent, after which the ring threads may register (the
 * kernel takes registrations only once INIT is answered). Replies to
 * requests that came from a ring entry are taken into the entry
 * (fs_uring_take_reply) instead of being written to /dev/fuse; the kill
 * flag of such a request is noted by the ring thread through
 * fs_wire_note_request, as wire_read does for /dev/fuse.
 *
 * cache=pool (fs.h) opens every regular file with direct_io, and the kernel
 * refuses a shared mmap of such a file (ENODEV) unless the daemon accepted
 * FUSE_DIRECT_IO_ALLOW_MMAP at INIT (Linux 6.6, protocol 7.39: after
 * Debian 12's headers and libfuse 3.14). writev adds it to the INIT reply
 * when the kernel offered it (accept_allow_mmap). INIT always comes
 * through /dev/fuse, also when requests go over the ring afterwards, so
 * this is the one place.
 *
 * Everything else passes through untouched. Without fs_wire_attach (unit
 * tests driving the handlers, a kernel that does not offer the flag) the
 * kernel strips powers itself as before and fs_wire_kill_privs() is false.
 */
#include "fs/fuse_ops.h"
#include "fs/fs_internal.h"
#include "fs/uring.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/lat_hist.h"
#include "engine/log.h"

/* fuse_init_in.flags2 / fuse_init_out.flags2: bit 36 of the 64-bit flags,
 * FUSE_DIRECT_IO_ALLOW_MMAP (not in the 7.38 headers). */
#define WIRE_DIRECT_IO_ALLOW_MMAP (1u << (36 - 32))

static _Atomic uint64_t init_unique = UINT64_MAX; /* the INIT in flight */
static atomic_bool init_offered;                  /* the kernel offered v2 */
static _Atomic uint32_t init_flags, init_flags2;   /* of the INIT in flight */
static _Thread_local bool req_kill;               /* the request being served */

bool fs_wire_kill_privs(void)
{
	return req_kill;
}

/* Is @flag set in the 32-bit field at @off of the argument of the request
 * in @buf (@n bytes)? False when the request is too short to hold it. */
static bool arg_flag(const uint8_t *buf, size_t n, size_t off, uint32_t flag)
{
	uint32_t v;
	if (n < sizeof(struct fuse_in_header) + off + sizeof(v))
		return false;
	memcpy(&v, buf + sizeof(struct fuse_in_header) + off, sizeof(v));
	return (v & flag) != 0;
}

/* Does the request in @buf (@n bytes) ask the daemon to strip powers? */
static bool wants_kill(const uint8_t *buf, size_t n)
{
	switch (((const struct fuse_in_header *)buf)->opcode) {
	case FUSE_WRITE:
		return arg_flag(buf, n, offsetof(struct fuse_write_in, write_flags),
				FUSE_WRITE_KILL_SUIDGID);
	case FUSE_SETATTR:
		return arg_flag(buf, n, offsetof(struct fuse_setattr_in, valid),
				FATTR_KILL_SUIDGID);
	case FUSE_OPEN:
		return arg_flag(buf, n, offsetof(struct fuse_open_in, open_flags),
				FUSE_OPEN_KILL_SUIDGID);
	default:
		return false;
	}
}

/*
 * Polling. A request arriving at an idle daemon wakes a thread blocked in
 * read(2), and on these VMs waking a thread whose CPU is halted costs about
 * as much as serving a 4 KiB read from the pool: 4 KiB O_DIRECT random
 * reads ran at 30K/s, and at 45K/s with one thread that kept reading
 * (non-blocking) for 100 us after each request. Several threads cannot all
 * spin: the kernel wakes a blocked reader for every request, and on two
 * CPUs the spinners and the woken take the CPU from the application (both
 * measured slower than no polling at all).
 *
 * So one thread at a time holds the reader role: it alone reads the
 * (non-blocking) device, spinning for poll_ns after its last request, then
 * sleeping in poll(2) until the next. It serves what it reads itself and
 * comes back for more, keeping the role: no hand-over between threads in
 * the common case. The other workers wait for the role on a condition
 * variable. The holder gives the role up
 *   - when it is about to wait (the engine's wait hook: disk I/O, a
 *     checkpoint, a lock a checkpoint holds), so a request that sleeps
 *     does not hold up the others;
 *   - when the watchdog finds it serving one request for longer than
 *     WATCH_NS (a wait nobody announced: an inode lock, a page lock);
 *   - on a read error (unmount), so the others see it too.
 * A worker that gave up the role finishes its request and waits for the
 * role again. poll=0 turns all of this off: every worker blocks in read(2)
 * as libfuse does by default.
 */
#define WATCH_NS 1000000u       /* 1 ms */
#define WATCH_IDLE_NS 50000000u /* 50 ms, after WATCH_QUIET ticks without a request */
#define WATCH_QUIET 100
#define WAIT_MS 50	   /* how often a waiting worker looks for the session's end */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	_Atomic uint64_t owner;  /* the holder's token; 0: nobody */
	_Atomic uint64_t taken;  /* requests read by holders so far */
	_Atomic bool serving;    /* the holder is serving what it read */
	_Atomic uint64_t next_token;
	uint64_t poll_ns;        /* 0: polling off */
	pthread_t watchdog;
	bool watching;
	struct fuse_session *se;
	struct fs_wire_counters n; /* (atomics: see fs_wire_counters_get) */
	_Atomic bool stop;
} rd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static _Thread_local uint64_t my_token;

static void count(uint64_t *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* Free the role and wake one waiting worker (rd.mu held). */
static void release_locked(void)
{
	atomic_store(&rd.owner, 0);
	atomic_store(&rd.serving, false);
	pthread_cond_signal(&rd.cv);
}

/* Give the role up if this thread (@token) still holds it (the watchdog
 * may have taken it first): true if it did. */
static bool give_up(uint64_t token)
{
	bool held;
	pthread_mutex_lock(&rd.mu);
	held = atomic_load(&rd.owner) == token;
	if (held)
		release_locked();
	pthread_mutex_unlock(&rd.mu);
	return held;
}

/* The engine's wait hook. */
static void about_to_wait(void)
{
	if (my_token && atomic_load_explicit(&rd.owner, memory_order_relaxed) == my_token &&
	    give_up(my_token))
		count(&rd.n.handoffs_wait);
}

/* Every WATCH_NS while requests come, every WATCH_IDLE_NS once none has
 * for a while (an idle daemon does not wake a thousand times a second; a
 * request that blocks right after a quiet spell is rescued late, not never). */
static void *watchdog_main(void *arg)
{
	(void)arg;
	uint64_t seen = UINT64_MAX;
	unsigned quiet = 0; /* ticks without a new request */

	while (!atomic_load(&rd.stop)) {
		struct timespec tick = {
		    .tv_sec = 0, .tv_nsec = quiet < WATCH_QUIET ? WATCH_NS : WATCH_IDLE_NS};
		nanosleep(&tick, NULL);
		uint64_t owner = atomic_load(&rd.owner), taken = atomic_load(&rd.taken);
		quiet = taken == seen ? quiet + (quiet < WATCH_QUIET) : 0;
		if (owner && atomic_load(&rd.serving) && taken == seen) {
			/* the same request a whole tick: it waits on something */
			pthread_mutex_lock(&rd.mu);
			if (atomic_load(&rd.owner) == owner && atomic_load(&rd.serving) &&
			    atomic_load(&rd.taken) == taken) {
				release_locked();
				count(&rd.n.handoffs_watchdog);
			}
			pthread_mutex_unlock(&rd.mu);
		}
		seen = taken;
	}
	return NULL;
}

/* Read one request as the role holder: spin (when @spin), then sleep in
 * poll(2), looking at the session every WAIT_MS. A spinning thread yields
 * at every turn: a thread woken on its CPU (the application, a worker
 * whose disk read finished) runs at once. */
static ssize_t read_polling(int fd, void *buf, size_t len, bool spin)
{
	uint64_t until = spin ? lh_now_ns() + rd.poll_ns : 0;
	bool slept = false;

	for (;;) {
		ssize_t n = read(fd, buf, len);
		if (n >= 0)
			count(slept ? &rd.n.reads_woken : &rd.n.reads_awake);
		if (n >= 0 || errno != EAGAIN)
			return n;
		if (until && lh_now_ns() < until) {
			sched_yield();
			continue;
		}
		if (fuse_session_exited(rd.se)) {
			errno = EINTR;
			return -1;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		slept = true;
		if (poll(&p, 1, WAIT_MS) < 0 && errno != EINTR)
			return -1;
		until = spin ? lh_now_ns() + rd.poll_ns : 0;
	}
}

/* Wait until the role is free and take it: true, or false once the session
 * has ended. */
static bool take_role(void)
{
	bool got = false;

	pthread_mutex_lock(&rd.mu);
	while (!fuse_session_exited(rd.se)) {
		if (atomic_load(&rd.owner) == 0) {
			atomic_store(&rd.owner, my_token);
			got = true;
			break;
		}
		struct timespec ts = fs_deadline_ms(WAIT_MS);
		pthread_cond_timedwait(&rd.cv, &rd.mu, &ts);
	}
	pthread_mutex_unlock(&rd.mu);
	return got;
}

static ssize_t read_request(int fd, void *buf, size_t len)
{
	if (rd.poll_ns == 0)
		return read(fd, buf, len);
	/*
	 * libfuse ends its workers with pthread_cancel, enabled only while
	 * they read. Nothing here is left to cancellation: the waits time out
	 * every WAIT_MS to look at the session, and once it has ended return
	 * EINTR, on which libfuse's worker sees the end and leaves. (Threads
	 * cancelled in poll(2) or pthread_cond_wait also left ThreadSanitizer
	 * reporting races between the exit handlers of two of them, writes it
	 * saw without the mutex they held.)
	 */
	int was;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &was);
	if (!my_token)
		my_token = atomic_fetch_add(&rd.next_token, 1) + 1;
	/* Spin only while requests are served without waiting: a thread that
	 * kept the role from its last request. One that takes it over from a
	 * thread gone to the disk sleeps in poll(2) at once: when requests
	 * wait for I/O, a spinning thread only takes the CPU their completions
	 * need (4 KiB O_DIRECT reads past the pool: 7.3K/s without polling,
	 * 4.1-4.6K/s with a spinner). */
	bool spin = atomic_load(&rd.owner) == my_token;
	ssize_t n = -1;
	if (!spin && !take_role()) {
		errno = EINTR;
	} else {
		atomic_store(&rd.serving, false);
		n = read_polling(fd, buf, len, spin);
		if (n < 0) {
			int e = errno;
			(void)give_up(my_token); /* the others see the error too */
			errno = e;
		} else {
			atomic_fetch_add(&rd.taken, 1);
			atomic_store(&rd.serving, true);
		}
	}
	int e = errno;
	pthread_setcancelstate(was, NULL);
	errno = e;
	return n;
}

static ssize_t wire_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	ssize_t n = read_request(fd, buf, len);

	if (n >= 0)
		fs_wire_note_request(buf, (size_t)n);
	return n;
}

/* The 32-bit field at @off of the argument of the request in @buf. */
static uint32_t arg_u32(const uint8_t *buf, size_t n, size_t off)
{
	uint32_t v = 0;
	if (n >= sizeof(struct fuse_in_header) + off + sizeof(v))
		memcpy(&v, buf + sizeof(struct fuse_in_header) + off, sizeof(v));
	return v;
}

void fs_wire_note_request(const void *buf, size_t n)
{
	req_kill = false;
	if (n < sizeof(struct fuse_in_header))
		return;
	const struct fuse_in_header *h = buf;
	if (h->opcode == FUSE_INIT) {
		atomic_store(&init_offered, arg_flag(buf, n, offsetof(struct fuse_init_in, flags),
						     FUSE_HANDLE_KILLPRIV_V2));
		atomic_store(&init_flags, arg_u32(buf, n, offsetof(struct fuse_init_in, flags)));
		atomic_store(&init_flags2, arg_u32(buf, n, offsetof(struct fuse_init_in, flags2)));
		atomic_store(&init_unique, h->unique);
	} else {
		req_kill = wants_kill(buf, n);
	}
}

/* With cache=pool, accept FUSE_DIRECT_IO_ALLOW_MMAP in the INIT reply @out
 * (of @len bytes) when the kernel offered it in @in_flags / @in_flags2, so
 * that a shared mmap of a direct_io file maps the page cache as it would
 * for any file, written back through the daemon. Without it, say once (at
 * the mount's only INIT) what does not work; the mount goes on. */
static void accept_allow_mmap(struct fuse_init_out *out, size_t len, uint32_t in_flags,
			      uint32_t in_flags2)
{
	if (fs_cache_mode_get() != FS_CACHE_POOL)
		return;
	if (len >= sizeof(*out) && (in_flags & FUSE_INIT_EXT) &&
	    (in_flags2 & WIRE_DIRECT_IO_ALLOW_MMAP)) {
		out->flags |= FUSE_INIT_EXT;
		out->flags2 |= WIRE_DIRECT_IO_ALLOW_MMAP;
		return;
	}
	vs_log(VS_LOG_WARN,
	       "cache=pool: the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6+): "
	       "a shared mmap of a file on this mount fails with ENODEV");
}

static ssize_t wire_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	ssize_t r;
	if (fs_uring_take_reply(iov, count, &r))
		return r;
	/* libfuse replies to INIT with the header and fuse_init_out in two
	 * pieces; any other shape is left alone. (Its flags2 arrived with
	 * protocol 7.36: an INIT reply without it offers no ring either.) */
	bool init = false, ring = false;
	if (count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
		struct fuse_out_header *o = iov[0].iov_base;
		uint64_t want = atomic_load(&init_unique);
		if (o->unique == want && o->error == 0 &&
		    atomic_compare_exchange_strong(&init_unique, &want, UINT64_MAX)) {
			struct fuse_init_out *io = iov[1].iov_base;
			init = true;
			if (atomic_load(&init_offered))
				io->flags |= FUSE_HANDLE_KILLPRIV_V2;
			accept_allow_mmap(io, iov[1].iov_len, atomic_load(&init_flags),
					  atomic_load(&init_flags2));
			if (iov[1].iov_len >= sizeof(struct fuse_init_out))
				ring = fs_uring_init_reply(io, atomic_load(&init_flags),
							   atomic_load(&init_flags2));
		}
	}
	r = writev(fd, iov, count);
	if (init)
		fs_uring_init_sent(ring, r >= 0);
	return r;
}

int fs_wire_attach(struct fuse_session *se, unsigned poll_us)
{
	static const struct fuse_custom_io io = { .read = wire_read, .writev = wire_writev };
	int fd = fuse_session_fd(se);

	if (poll_us) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return -1;
		rd.poll_ns = (uint64_t)poll_us * 1000u;
		rd.se = se;
		atomic_store(&rd.stop, false);
		if (pthread_create(&rd.watchdog, NULL, watchdog_main, NULL) != 0) {
			rd.poll_ns = 0;
			(void)fcntl(fd, F_SETFL, fl);
			return -1;
		}
		rd.watching = true;
		bm_set_wait_hook(about_to_wait);
	}
	return fuse_session_custom_io(se, &io, fd);
}

void fs_wire_counters_get(struct fs_wire_counters *c)
{
	c->reads_awake = __atomic_load_n(&rd.n.reads_awake, __ATOMIC_RELAXED);
	c->reads_woken = __atomic_load_n(&rd.n.reads_woken, __ATOMIC_RELAXED);
	c->handoffs_wait = __atomic_load_n(&rd.n.handoffs_wait, __ATOMIC_RELAXED);
	c->handoffs_watchdog = __atomic_load_n(&rd.n.handoffs_watchdog, __ATOMIC_RELAXED);
}

void fs_wire_detach(void)
{
	if (!rd.watching)
		return;
	bm_set_wait_hook(NULL);
	atomic_store(&rd.stop, true);
	pthread_join(rd.watchdog, NULL);
	rd.watching = false;
}
