/*
 * uring.c: FUSE over io_uring (the kernel ABI is in fuse_uring_abi.h).
 *
 * Why. Over /dev/fuse every request costs a read(2) that wakes some worker
 * (on whatever CPU the scheduler picks) and a writev(2) for the reply. Over
 * the ring, the reply and the wait for the next request are one
 * io_uring_enter, and the kernel queues each request on the ring of the CPU
 * that issued it, whose thread is pinned there: the application sleeps,
 * the daemon's thread on the same CPU runs, no other CPU is woken.
 *
 * Threads and entries. One queue per possible CPU (the kernel insists on
 * all of them before it uses any), and per queue uring_depth threads, each
 * with its own ring and exactly one entry. A thread serves its request to
 * the end, waits included (disk reads, checkpoints, inode locks): one entry
 * per thread means a request that waits holds up no other, the same
 * property /dev/fuse's workers have. (One thread serving several entries
 * would leave the requests that arrived in its other entries behind a
 * waiting one; several threads sharing one ring would need a lock around
 * its submission and completion queues.) So the queue depth is the number
 * of threads that serve a CPU's requests at once. Each ring is made by its
 * own thread, with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
 * when the kernel has them: the kernel copies a request into the entry in
 * the thread's own context when it next waits, never by interrupting it.
 *
 * Replies before the handler is done. An fsync is answered at the journal
 * commit of the checkpoint that covers it (fuse_ops.c, bm_checkpoint_notify),
 * and the thread that runs that checkpoint goes on with its home writes and
 * second sync: milliseconds. Over /dev/fuse the reply is written at once;
 * an entry's reply reaches the kernel only with the entry's next command, and
 * the entry is the thread's until then, so the fsync would wait for the home
 * writes too, and with uring_depth=1 so would every request of that CPU.
 * Hence spares: per queue, up to SPARES threads beyond the depth hold no
 * entry and wait. When a thread has put an fsync's reply into its entry
 * (fs_uring_take_reply), it hands the entry to an idle spare of its queue,
 * which commits it from its own ring (the kernel finds the entry by the
 * request's commit id, whatever ring the command comes from) and serves the
 * entry's next requests; the thread finishes the checkpoint and then waits
 * as a spare itself. Without an idle spare the reply goes with the next
 * command as before. Only fsync and fsyncdir are handed off: every other
 * handler replies last, and a hand-off costs a thread wake.
 *
 * No polling here. poll= keeps a /dev/fuse reader spinning because there
 * the woken reader is often on a halted CPU; a ring thread is woken on the
 * CPU of the application that just went to sleep waiting for it, so
 * spinning would only take that CPU from the application. The engine's
 * wait hook (wire.c) concerns only the /dev/fuse reader role: a ring
 * thread that waits holds up only its own request.
 *
 * Life of a thread (the state of the whole in ur.phase):
 *
 *   fs_uring_setup      threads start, pin themselves to their CPU, make
 *                       their ring, report, and wait for the INIT reply
 *   INIT reply          wire.c's writev hook asks fs_uring_init_reply
 *                       (accept: set FUSE_OVER_IO_URING in the reply) and
 *                       tells fs_uring_init_sent once it is written; only
 *                       then may entries be registered (the kernel refuses
 *                       REGISTER before the connection is initialized)
 *   PHASE_GO            each thread allocates its entry and REGISTERs it;
 *                       the kernel uses the ring once every queue has one
 *   serving             a completion = a request: rebuild it as /dev/fuse
 *                       would have delivered it, fuse_session_process_buf,
 *                       the reply lands in the entry (fs_uring_take_reply),
 *                       COMMIT_AND_FETCH; an fsync's entry is handed to a
 *                       spare at its reply, and its thread becomes a spare
 *   spare               waits (ur.mu, its queue's cv) for an entry to commit
 *   end                 the connection ends (unmount, abort): the commands
 *                       complete with -ENOTCONN and the thread leaves; or
 *                       fs_uring_stop sets ur.stop, seen within WAIT_MS; a
 *                       killed daemon's rings are cancelled by the kernel
 *   PHASE_OFF           INIT went out without the ring: threads leave
 *
 * Requests the kernel keeps sending on /dev/fuse (FORGET, INTERRUPT, all
 * before the ring is ready) are served by libfuse's workers as before, and
 * notifications (unique 0) always go there: fs_uring_take_reply passes on
 * anything that is not the reply to the request its thread is serving.
 */
#include "fs/uring.h"
#include "fs/fuse_ops.h"
#include "fs/fuse_uring_abi.h"
#include "fs/fs_internal.h"

#include <errno.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/bm.h"
#include "engine/log.h"

#define ENABLE_PARAM "/sys/module/fuse/parameters/enable_uring"
#define WAIT_MS	     100  /* how often an idle thread looks at ur.stop */
#define PREFIX	     4096 /* room before the payload for the in header and op_in */
/* Ring threads in all: each one that serves a request carries an engine
 * context (an io_uring ring, a write-back staging buffer, and with exmap
 * one of its 128 interfaces, which must not run out). */
#define MAX_RING_THREADS 64

/* Threads per queue beyond the depth, which take over the entry of an
 * fsync answered before its checkpoint is over. */
#define SPARES 1

enum phase { PHASE_WAIT, PHASE_GO, PHASE_OFF };

/* An entry registered with the kernel: memory the kernel writes requests
 * into and reads replies from. It belongs to one thread at a time, which
 * sends its commands from its own ring. */
struct ring_entry {
	struct fur_req_header *hdr;
	uint8_t *area; /* PREFIX bytes, then the payload */
};

struct ring_thread {
	pthread_t tid;
	unsigned qid;
	int setup_err; /* 1 until the thread has reported */
	struct io_uring ring;
	bool have_ring;
	struct ring_entry *ent; /* NULL: a spare */
	uint64_t commit_id;	/* the request being served, as the kernel knows it */
	uint64_t unique;	/* ... as libfuse knows it */
	uint32_t opcode;
	bool replied;	   /* ... has its reply in the entry */
	unsigned failures; /* commands that failed while connected */
};

/* A queue's counter, and its spares (under ur.mu): how many wait with
 * nothing promised to them, and the entries handed to them, with the commit
 * id each must be committed with. */
struct queue_state {
	_Alignas(64) _Atomic uint64_t served;
	pthread_cond_t cv;
	unsigned idle;
	unsigned npending;
	struct ring_entry *pending[SPARES];
	uint64_t pending_id[SPARES];
};

static struct {
	enum fs_uring_mode mode;
	struct fuse_session *se;
	int fd;
	unsigned nq, depth, spares; /* threads per queue: depth + spares */
	struct ring_thread *t;	    /* nq * (depth + spares) */
	struct ring_entry *e;	    /* nq * depth */
	struct queue_state *count;
	size_t payload; /* bytes per entry, known from the INIT reply */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum phase phase;
	unsigned reported;
	_Atomic bool active;  /* the ring carries the requests */
	_Atomic bool stop;
	_Atomic bool failed;
	_Atomic bool gone; /* a thread saw the connection end */
	_Atomic uint64_t handoffs;
	bool started;
	bool fault_slow_fsync; /* VS_URING_FAULT=slow_fsync (tests) */
} ur = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1};

static _Thread_local struct ring_thread *cur; /* the entry this thread serves */

/* ---- the kernel's side ------------------------------------------------ */

/* The fuse module's enable_uring: 1, 0, or -1 when the kernel has none. */
static int enable_param(void)
{
	char c = 0;
	FILE *f = fopen(ENABLE_PARAM, "r");
	if (!f)
		return -1;
	if (fread(&c, 1, 1, f) != 1)
		c = 0;
	fclose(f);
	return c == 'Y' || c == 'y' || c == '1';
}

int fs_uring_check(enum fs_uring_mode mode, char *why, size_t len)
{
	if (mode == FS_URING_OFF)
		return 0;
	int p = enable_param();
	if (p < 0) {
		snprintf(why, len, "this kernel has no FUSE over io_uring (no %s; Linux 6.14+ with "
				   "CONFIG_FUSE_IO_URING)", ENABLE_PARAM);
		return -EOPNOTSUPP;
	}
	if (p == 0) {
		snprintf(why, len, "the kernel's FUSE over io_uring is off (as root: echo 1 > %s)",
			 ENABLE_PARAM);
		return -EPERM;
	}
	return 0;
}

/* Queues the kernel makes: one per possible CPU, numbered from 0. */
static unsigned possible_cpus(void)
{
	unsigned lo, hi, n = 0;
	char buf[256];
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	if (f) {
		if (fgets(buf, sizeof(buf), f)) {
			/* "0-1", "0", "0-3,5-7": the highest number plus one */
			for (char *s = strtok(buf, ","); s; s = strtok(NULL, ",")) {
				int k = sscanf(s, "%u-%u", &lo, &hi);
				if (k == 2 && hi + 1 > n)
					n = hi + 1;
				else if (k == 1 && lo + 1 > n)
					n = lo + 1;
			}
		}
		fclose(f);
	}
	if (n == 0) {
		long c = sysconf(_SC_NPROCESSORS_CONF);
		n = c > 0 ? (unsigned)c : 1;
	}
	return n;
}

/* ---- one thread, one entry -------------------------------------------- */

static struct io_uring_sqe *cmd_sqe(struct ring_thread *t, uint32_t op, uint64_t commit_id)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	if (!sqe)
		return NULL; /* cannot happen: one command in flight, ring of 4 */
	memset(sqe, 0, 2 * sizeof(*sqe)); /* SQE128: the command area is the second half */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = ur.fd;
	sqe->cmd_op = op;
	struct fur_cmd_req *req = (struct fur_cmd_req *)sqe->cmd;
	req->qid = (uint16_t)t->qid;
	req->commit_id = commit_id;
	return sqe;
}

static int submit_register(struct ring_thread *t)
{
	static _Thread_local struct iovec iov[2];
	iov[0] = (struct iovec){.iov_base = t->ent->hdr, .iov_len = sizeof(*t->ent->hdr)};
	iov[1] = (struct iovec){.iov_base = t->ent->area + PREFIX, .iov_len = ur.payload};
	/* Tests only: an entry smaller than the kernel's requests, which it
	 * refuses, as it would refuse any entry it cannot use. */
	const char *fault = getenv("VS_URING_FAULT");
	if (fault && strcmp(fault, "small_entry") == 0)
		iov[1].iov_len = 4096;
	struct io_uring_sqe *sqe = cmd_sqe(t, FUR_CMD_REGISTER, 0);
	if (!sqe)
		return -EBUSY;
	sqe->addr = (uintptr_t)iov;
	sqe->len = 2;
	return 0;
}

/* Put an error reply into the entry (a request we cannot serve). */
static void reply_error(struct ring_thread *t, uint64_t unique, int err)
{
	struct fuse_out_header oh = {.len = sizeof(oh), .error = -err, .unique = unique};
	memcpy(t->ent->hdr->in_out, &oh, sizeof(oh));
	t->ent->hdr->ring_ent_in_out.payload_sz = 0;
}

/* Serve the request that arrived in @t's entry and leave its reply there. */
static void serve_entry(struct ring_thread *t)
{
	struct fur_req_header *hdr = t->ent->hdr;
	struct fuse_in_header in;
	memcpy(&in, hdr->in_out, sizeof(in));
	uint32_t psz = hdr->ring_ent_in_out.payload_sz;
	uint8_t *payload = t->ent->area + PREFIX;

	/* /dev/fuse would have delivered header, op argument and payload in
	 * one piece, which is what libfuse's decoding expects: put the first
	 * two right before the payload (no copy of the payload itself). */
	if (psz > ur.payload || in.len < sizeof(in) + psz ||
	    in.len - sizeof(in) - psz > FUR_OP_IN_OUT_SZ) {
		vs_log(VS_LOG_ERR, "fuse ring: malformed request (opcode %u, len %u, payload %u)",
		       in.opcode, in.len, psz);
		reply_error(t, in.unique, EIO);
		return;
	}
	size_t op_len = in.len - sizeof(in) - psz;
	uint8_t *req = payload - op_len - sizeof(in);
	memcpy(req, &in, sizeof(in));
	memcpy(req + sizeof(in), hdr->op_in, op_len);

	struct fuse_buf buf = {.size = in.len, .mem = req};
	t->unique = in.unique;
	t->opcode = in.opcode;
	t->replied = false;
	cur = t;
	fs_wire_note_request(req, in.len);
	/* From here on the entry may be handed off with the reply (an fsync):
	 * then nothing of it, the request included, is ours to touch. */
	fuse_session_process_buf(ur.se, &buf);
	cur = NULL;
	if (ur.fault_slow_fsync && t->replied &&
	    (in.opcode == FUSE_FSYNC || in.opcode == FUSE_FSYNCDIR))
		sleep(3); /* tests: a checkpoint whose home writes take long */
	if (!t->replied) {
		/* Every request that reaches the ring gets exactly one reply
		 * from its handler, on this thread; an entry left without one
		 * would be lost to the kernel, so answer EIO and say so. */
		vs_log(VS_LOG_ERR, "fuse ring: no reply to request %llu (opcode %u); answering EIO",
		       (unsigned long long)in.unique, in.opcode);
		reply_error(t, in.unique, EIO);
	}
	atomic_fetch_add_explicit(&ur.count[t->qid].served, 1, memory_order_relaxed);
}

/* Hand @t's entry, whose reply is in it, to an idle spare of its queue, to
 * be committed now, while @t goes on with its handler: true if one took it.
 * Takes ur.mu, never waits. */
static bool hand_off(struct ring_thread *t)
{
	struct queue_state *q = &ur.count[t->qid];
	bool done = false;
	pthread_mutex_lock(&ur.mu);
	if (q->idle > 0 && q->npending < SPARES) {
		q->idle--;
		q->pending[q->npending] = t->ent;
		q->pending_id[q->npending] = t->commit_id;
		q->npending++;
		t->ent = NULL;
		done = true;
		pthread_cond_signal(&q->cv);
	}
	pthread_mutex_unlock(&ur.mu);
	if (done)
		atomic_fetch_add_explicit(&ur.handoffs, 1, memory_order_relaxed);
	return done;
}

bool fs_uring_take_reply(const struct iovec *iov, int count, ssize_t *ret)
{
	struct ring_thread *t = cur;
	struct fuse_out_header oh;

	if (!t || t->replied || count < 1 || iov[0].iov_len < sizeof(oh))
		return false;
	memcpy(&oh, iov[0].iov_base, sizeof(oh));
	if (oh.unique != t->unique)
		return false; /* a notification, or nothing of ours */

	uint8_t *payload = t->ent->area + PREFIX;
	size_t n = 0;
	for (int i = 0; i < count; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;
		if (i == 0) {
			p += sizeof(oh);
			len -= sizeof(oh);
		}
		if (len > ur.payload - n) {
			errno = EINVAL; /* larger than any reply the kernel accepts */
			*ret = -1;
			return true;
		}
		memcpy(payload + n, p, len);
		n += len;
	}
	memcpy(t->ent->hdr->in_out, &oh, sizeof(oh));
	t->ent->hdr->ring_ent_in_out.payload_sz = (uint32_t)n;
	t->replied = true;
	*ret = (ssize_t)(sizeof(oh) + n);
	if (t->opcode == FUSE_FSYNC || t->opcode == FUSE_FSYNCDIR)
		hand_off(t);
	return true;
}

/* Submit what is queued and wait for one completion, looking at ur.stop
 * every WAIT_MS. Returns the completion's result, or 1 to stop. */
static int wait_completion(struct ring_thread *t)
{
	for (;;) {
		struct io_uring_cqe *cqe = NULL;
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = WAIT_MS * 1000000L};
		int r = io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
		if (r >= 0 || io_uring_peek_cqe(&t->ring, &cqe) == 0) {
			if (cqe) {
				int res = cqe->res;
				io_uring_cqe_seen(&t->ring, cqe);
				return res > 0 ? 0 : res;
			}
		} else if (r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			vs_log(VS_LOG_ERR, "fuse ring %u: io_uring_enter: %s", t->qid,
			       strerror(-r));
			return r;
		}
		if (atomic_load(&ur.stop))
			return 1;
	}
}

/* End the daemon from a ring thread: the session loop's workers may sit
 * in a blocking read(2) of /dev/fuse (poll=0) that no request will end
 * once the ring carries them; libfuse's SIGTERM handler ends the session
 * and interrupts the loop's wait. */
static void stop_daemon(void)
{
	fuse_session_exit(ur.se);
	kill(getpid(), SIGTERM);
}

static bool mode_on(void)
{
	return ur.mode == FS_URING_ON;
}

static bool connection_gone(int res)
{
	return res == -ENOTCONN || res == -ECONNABORTED || res == -ECANCELED || res == -ENODEV;
}

/* A spare waits for an entry handed to it (hand_off) and sends its commit:
 * true, or false when the daemon or the connection ends first. */
static bool take_entry(struct ring_thread *t)
{
	struct queue_state *q = &ur.count[t->qid];
	struct ring_entry *ent = NULL;
	uint64_t id = 0;
	pthread_mutex_lock(&ur.mu);
	q->idle++;
	for (;;) {
		if (q->npending > 0) {
			q->npending--;
			ent = q->pending[q->npending];
			id = q->pending_id[q->npending];
			break; /* idle was taken back by hand_off */
		}
		if (atomic_load(&ur.stop) || atomic_load(&ur.gone) || !atomic_load(&ur.active)) {
			q->idle--;
			break;
		}
		struct timespec ts = fs_deadline_ms(WAIT_MS);
		pthread_cond_timedwait(&q->cv, &ur.mu, &ts);
	}
	pthread_mutex_unlock(&ur.mu);
	if (!ent)
		return false;
	t->ent = ent;
	ent->hdr->ring_ent_in_out.commit_id = 0;
	return cmd_sqe(t, FUR_CMD_COMMIT_AND_FETCH, id) != NULL;
}

/* The connection has ended: tell the spares, which have no command of
 * their own that would say so. */
static void note_gone(void)
{
	atomic_store(&ur.gone, true);
	pthread_mutex_lock(&ur.mu);
	for (unsigned i = 0; i < ur.nq; i++)
		pthread_cond_broadcast(&ur.count[i].cv);
	pthread_mutex_unlock(&ur.mu);
}

/* Register the entry (a spare: wait for one), then serve until the
 * connection or the daemon ends. */
static void serve_loop(struct ring_thread *t)
{
	bool registering = t->ent != NULL; /* the command in flight is a REGISTER */
	if (t->ent ? submit_register(t) < 0 : !take_entry(t))
		return;
	for (;;) {
		int res = wait_completion(t);
		if (res == 1)
			return;
		if (connection_gone(res)) {
			note_gone();
			return;
		}
		if (res < 0 && registering) {
			/* The kernel refused the entry, and from then on serves
			 * the mount over /dev/fuse (dev_uring.c clears the
			 * connection's io_uring): nothing more for this ring. */
			if (atomic_exchange(&ur.active, false)) /* said once */
				vs_log(mode_on() ? VS_LOG_ERR : VS_LOG_WARN,
				       "fuse ring %u: the kernel refused the entry (%s); requests go "
				       "through /dev/fuse%s",
				       t->qid, strerror(-res), mode_on() ? "; stopping" : "");
			if (mode_on()) {
				atomic_store(&ur.failed, true);
				stop_daemon();
			}
			return;
		}
		if (res < 0) {
			/* A failed commit (the kernel lost the request): the
			 * entry stays with us; register it again, a few times. */
			vs_log(VS_LOG_ERR, "fuse ring %u: commit failed: %s", t->qid, strerror(-res));
			if (++t->failures > 3 || submit_register(t) < 0)
				return;
			registering = true;
			continue;
		}
		registering = false;
		t->commit_id = t->ent->hdr->ring_ent_in_out.commit_id;
		serve_entry(t);
		if (!t->ent) {
			/* handed off with its reply: wait for another */
			if (!take_entry(t))
				return;
			continue;
		}
		t->ent->hdr->ring_ent_in_out.commit_id = 0;
		if (!cmd_sqe(t, FUR_CMD_COMMIT_AND_FETCH, t->commit_id))
			return;
	}
}

static void pin(struct ring_thread *t)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(t->qid, &set);
	/* A CPU outside our cpuset never issues requests we could see
	 * first-hand; its queue still needs entries, served from anywhere. */
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int make_ring(struct ring_thread *t)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	int r = io_uring_queue_init_params(4, &t->ring, &p);
	if (r == -EINVAL) {
		/* kernels before 6.1: no DEFER_TASKRUN */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SQE128;
		r = io_uring_queue_init_params(4, &t->ring, &p);
	}
	if (r == 0)
		t->have_ring = true;
	return r;
}

/* Allocate the memory of entry @e (its first thread does, after INIT, when
 * the payload size is known). Freed by fs_uring_stop, after every thread
 * has left: an entry may have changed threads. */
static int alloc_entry(struct ring_entry *e)
{
	void *h = NULL, *a = NULL;
	if (posix_memalign(&h, 64, sizeof(*e->hdr)) != 0 ||
	    posix_memalign(&a, 4096, PREFIX + ur.payload) != 0) {
		free(h);
		return -ENOMEM;
	}
	memset(h, 0, sizeof(*e->hdr));
	e->hdr = h;
	e->area = a;
	return 0;
}

static void *thread_main(void *arg)
{
	struct ring_thread *t = arg;
	char name[16];
	snprintf(name, sizeof(name), "vs-ring%u", t->qid);
	pthread_setname_np(pthread_self(), name);
	pin(t);
	int r = make_ring(t);

	pthread_mutex_lock(&ur.mu);
	t->setup_err = r;
	ur.reported++;
	pthread_cond_broadcast(&ur.cv);
	while (r == 0 && ur.phase == PHASE_WAIT && !atomic_load(&ur.stop))
		pthread_cond_wait(&ur.cv, &ur.mu);
	bool go = r == 0 && ur.phase == PHASE_GO && !atomic_load(&ur.stop);
	pthread_mutex_unlock(&ur.mu);

	if (go) {
		if (!t->ent || alloc_entry(t->ent) == 0) {
			serve_loop(t);
		} else {
			vs_log(VS_LOG_ERR, "fuse ring %u: out of memory for an entry", t->qid);
			if (ur.mode == FS_URING_ON)
				atomic_store(&ur.failed, true);
			stop_daemon(); /* the kernel waits for this queue */
		}
	}
	if (t->have_ring)
		io_uring_queue_exit(&t->ring); /* cancels what is still registered */
	t->have_ring = false;
	t->ent = NULL;
	return NULL;
}

/* ---- setup, INIT, stop ------------------------------------------------- */

static void set_phase(enum phase ph)
{
	pthread_mutex_lock(&ur.mu);
	ur.phase = ph;
	pthread_cond_broadcast(&ur.cv);
	pthread_mutex_unlock(&ur.mu);
}

/* Entries per queue: @depth, or fewer when the machine has many CPUs or
 * the pool is small (as main.c bounds its workers: a request may hold
 * about 8 * BM_MAX_HELD pages outside eviction's reach). Spares, which
 * serve requests too, come out of what is left (*@ret_spares). */
static unsigned fit_depth(unsigned depth, unsigned nq, uint64_t pool_pages, unsigned *ret_spares)
{
	uint64_t cap = pool_pages / (8 * BM_MAX_HELD);
	if (cap > MAX_RING_THREADS)
		cap = MAX_RING_THREADS;
	unsigned fit = (unsigned)(cap / nq);
	if (fit < 1)
		fit = 1; /* every queue needs an entry, whatever it costs */
	if (depth > fit) {
		vs_log(VS_LOG_WARN, "uring_depth=%u: %u CPUs and a pool of %llu MiB allow %u per CPU",
		       depth, nq, (unsigned long long)(pool_pages * BM_PAGE_SIZE >> 20), fit);
		depth = fit;
	}
	*ret_spares = fit - depth < SPARES ? fit - depth : SPARES;
	return depth;
}

int fs_uring_setup(struct fuse_session *se, enum fs_uring_mode mode, unsigned depth,
		   uint64_t pool_pages)
{
	char why[256];
	ur.mode = mode;
	ur.se = se;
	if (mode == FS_URING_OFF)
		return 0;
	if (fs_uring_check(mode, why, sizeof(why)) < 0) {
		if (mode == FS_URING_ON) {
			vs_log(VS_LOG_ERR, "uring=on: %s", why);
			return -EOPNOTSUPP;
		}
		ur.mode = FS_URING_OFF; /* auto: /dev/fuse, quietly */
		return 0;
	}
	ur.fd = fuse_session_fd(se);
	ur.nq = possible_cpus();
	ur.depth = fit_depth(depth ? depth : FS_URING_DEFAULT_DEPTH, ur.nq, pool_pages, &ur.spares);
	const char *fault = getenv("VS_URING_FAULT");
	ur.fault_slow_fsync = fault && strcmp(fault, "slow_fsync") == 0;
	unsigned per_q = ur.depth + ur.spares;
	ur.t = calloc((size_t)ur.nq * per_q, sizeof(*ur.t));
	ur.e = calloc((size_t)ur.nq * ur.depth, sizeof(*ur.e));
	ur.count = aligned_alloc(64, ur.nq * sizeof(*ur.count));
	if (!ur.t || !ur.e || !ur.count)
		goto fail_mem;
	memset(ur.count, 0, ur.nq * sizeof(*ur.count));
	for (unsigned q = 0; q < ur.nq; q++)
		pthread_cond_init(&ur.count[q].cv, NULL);

	unsigned n = ur.nq * per_q, made = 0;
	int err = 0;
	for (; made < n; made++) {
		unsigned q = made / per_q, j = made % per_q;
		ur.t[made].qid = q;
		ur.t[made].ent = j < ur.depth ? &ur.e[q * ur.depth + j] : NULL; /* else a spare */
		ur.t[made].setup_err = 1;
		if (pthread_create(&ur.t[made].tid, NULL, thread_main, &ur.t[made]) != 0) {
			err = -EAGAIN;
			break;
		}
	}
	pthread_mutex_lock(&ur.mu);
	while (ur.reported < made)
		pthread_cond_wait(&ur.cv, &ur.mu);
	for (unsigned i = 0; i < made && !err; i++)
		err = ur.t[i].setup_err;
	pthread_mutex_unlock(&ur.mu);
	ur.started = true;
	ur.reported = made; /* fs_uring_stop joins these */
	if (err) {
		set_phase(PHASE_OFF);
		fs_uring_stop();
		vs_log(mode == FS_URING_ON ? VS_LOG_ERR : VS_LOG_WARN,
		       "uring=%s: cannot set up the rings (%s)%s", mode == FS_URING_ON ? "on" : "auto",
		       strerror(-err), mode == FS_URING_ON ? "" : "; serving /dev/fuse");
		ur.mode = FS_URING_OFF;
		return mode == FS_URING_ON ? err : 0;
	}
	return 0;

fail_mem:
	free(ur.t);
	free(ur.e);
	free(ur.count);
	ur.t = NULL;
	ur.e = NULL;
	ur.count = NULL;
	vs_log(VS_LOG_ERR, "uring: out of memory");
	ur.mode = FS_URING_OFF;
	return mode == FS_URING_ON ? -ENOMEM : 0;
}

bool fs_uring_init_reply(struct fuse_init_out *out, uint32_t in_flags, uint32_t in_flags2)
{
	if (ur.mode == FS_URING_OFF || !ur.started)
		return false;
	bool offered = (in_flags & FUR_INIT_EXT) && (in_flags2 & FUR_INIT_FLAG2);
	if (!offered || enable_param() != 1) {
		if (ur.mode == FS_URING_ON) {
			vs_log(VS_LOG_ERR, "uring=on: the kernel did not offer FUSE over io_uring "
					   "for this mount (is %s still 1?); stopping", ENABLE_PARAM);
			atomic_store(&ur.failed, true);
			fuse_session_exit(ur.se);
		}
		return false;
	}
	/* The kernel's payload size (fs/fuse/dev_uring.c): what a read or a
	 * write moves at most. */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = (out->flags & FUR_MAX_PAGES) ? out->max_pages : FUR_DEFAULT_MAX_PAGES;
	size_t sz = FUR_MIN_READ_BUFFER;
	if (out->max_write > sz)
		sz = out->max_write;
	if (pages * page > sz)
		sz = pages * page;
	ur.payload = (sz + page - 1) / page * page;
	out->flags |= FUR_INIT_EXT;
	out->flags2 |= FUR_INIT_FLAG2;
	return true;
}

void fs_uring_init_sent(bool accepted, bool written)
{
	if (!ur.started)
		return;
	if (accepted && written) {
		atomic_store(&ur.active, true);
		vs_log(VS_LOG_INFO, "serving requests through FUSE over io_uring: %u queues of %u",
		       ur.nq, ur.depth);
		set_phase(PHASE_GO);
	} else {
		set_phase(PHASE_OFF);
	}
}

void fs_uring_stop(void)
{
	if (!ur.started)
		return;
	atomic_store(&ur.stop, true);
	pthread_mutex_lock(&ur.mu);
	pthread_cond_broadcast(&ur.cv);
	for (unsigned i = 0; i < ur.nq; i++)
		pthread_cond_broadcast(&ur.count[i].cv);
	pthread_mutex_unlock(&ur.mu);
	for (unsigned i = 0; i < ur.reported; i++)
		pthread_join(ur.t[i].tid, NULL);
	ur.started = false;
	atomic_store(&ur.active, false);
	free(ur.t);
	ur.t = NULL;
	/* the rings are gone, and with them the kernel's use of the entries */
	for (unsigned i = 0; ur.e && i < ur.nq * ur.depth; i++) {
		free(ur.e[i].hdr);
		free(ur.e[i].area);
	}
	free(ur.e);
	ur.e = NULL;
	/* ur.count stays: a stats read may still be rendering */
}

bool fs_uring_failed(void)
{
	return atomic_load(&ur.failed);
}

const char *fs_uring_transport(void)
{
	return atomic_load(&ur.active) ? "uring" : "dev";
}

unsigned fs_uring_queue_count(void)
{
	return atomic_load(&ur.active) ? ur.nq : 0;
}

uint64_t fs_uring_queue_requests(unsigned qid)
{
	if (!ur.count || qid >= ur.nq)
		return 0;
	return atomic_load_explicit(&ur.count[qid].served, memory_order_relaxed);
}

uint64_t fs_uring_handoffs(void)
{
	return atomic_load_explicit(&ur.handoffs, memory_order_relaxed);
}
