/*
 * fuse_uring_abi.h: the kernel ABI of FUSE over io_uring, as far as
 * fs/uring.c uses it.
 *
 * From the kernel's include/uapi/linux/fuse.h, protocol 7.42 (Linux 6.14;
 * unchanged in what is used here up to 6.18). Debian 12 ships the 6.1
 * headers (protocol 7.38), which have none of it, so the few definitions
 * live here; the _Static_asserts pin every layout the kernel reads. When
 * the build machine's <linux/fuse.h> has them, this file still wins: the
 * names are our own (FUR_*, struct fur_*), so nothing clashes.
 *
 * The protocol (the kernel's Documentation/filesystems/fuse/fuse-io-uring.rst
 * and fs/fuse/dev_uring.c):
 *
 *   INIT      the kernel offers FUSE_OVER_IO_URING in fuse_init_in.flags2
 *             (only while the fuse module parameter enable_uring is 1); the
 *             daemon accepts by setting it in the reply's flags2. From then
 *             on new requests wait until every queue has an entry.
 *   REGISTER  one IORING_OP_URING_CMD per ring entry, on a ring set up with
 *             IORING_SETUP_SQE128: sqe->fd is /dev/fuse, sqe->addr points
 *             at two iovecs {header, payload}, sqe->len = 2, and the
 *             command area holds struct fur_cmd_req with the queue id.
 *             There is one queue per possible CPU (qid = CPU number); a
 *             request is queued on the CPU that issued it. The payload must
 *             hold max(8 KiB, max_write, max_pages * page size) bytes.
 *             The command completes when a request arrives in the entry.
 *   request   header.in_out holds the fuse_in_header, header.op_in the
 *             opcode's fixed argument (in_args[0], of in.len - 40 -
 *             payload_sz bytes, possibly none), the payload buffer the rest
 *             (names, write data), ring_ent_in_out.payload_sz its length
 *             and ring_ent_in_out.commit_id the id to commit with.
 *   reply     header.in_out holds the fuse_out_header (unique, error), the
 *             payload buffer every reply argument, ring_ent_in_out.
 *             payload_sz their length (without the out header).
 *   COMMIT_AND_FETCH  the same command with fur_cmd_req.commit_id: the
 *             kernel takes the reply and the command completes again with
 *             the entry's next request.
 *
 * Requests that do not go through the ring: FORGET, BATCH_FORGET and
 * INTERRUPT (and everything before the ring is ready) still arrive on
 * /dev/fuse, and notifications (unique 0) must be written there: the ring
 * refuses them. When the connection ends (unmount, abort) every command
 * completes with -ENOTCONN; when the ring's owner exits, its commands are
 * cancelled.
 */
#ifndef VS_FS_FUSE_URING_ABI_H
#define VS_FS_FUSE_URING_ABI_H

#include <stdint.h>

/* fuse_init_in.flags2 / fuse_init_out.flags2: bit 41 of the 64-bit flags */
#define FUR_INIT_FLAG2 (1u << (41 - 32))

/* fuse_init_in.flags / fuse_init_out.flags: flags2 is valid */
#define FUR_INIT_EXT (1u << 30)

/* fuse_init_out.flags: max_pages is valid (else the kernel uses 32) */
#define FUR_MAX_PAGES	      (1u << 22)
#define FUR_DEFAULT_MAX_PAGES 32u
#define FUR_MIN_READ_BUFFER   8192u /* the kernel's FUSE_MIN_READ_BUFFER */

/* The sqe's cmd_op. */
#define FUR_CMD_REGISTER	 1u
#define FUR_CMD_COMMIT_AND_FETCH 2u

#define FUR_IN_OUT_HEADER_SZ 128
#define FUR_OP_IN_OUT_SZ     128

/* struct fuse_uring_ent_in_out */
struct fur_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;  /* kernel -> daemon: the request's id */
	uint32_t payload_sz; /* bytes used in the payload buffer, either way */
	uint32_t padding;    /* zero (an offset from protocol 7.46 on) */
	uint64_t reserved;
};

/* struct fuse_uring_req_header: iovec 0 of a REGISTER. */
struct fur_req_header {
	char in_out[FUR_IN_OUT_HEADER_SZ]; /* fuse_in_header / fuse_out_header */
	char op_in[FUR_OP_IN_OUT_SZ];	   /* the opcode's fixed argument */
	struct fur_ent_in_out ring_ent_in_out;
};

/* struct fuse_uring_cmd_req: in the 80-byte command area of a 128-byte sqe. */
struct fur_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct fur_ent_in_out) == 32, "fuse_uring_ent_in_out");
_Static_assert(sizeof(struct fur_req_header) == 288, "fuse_uring_req_header");
_Static_assert(__builtin_offsetof(struct fur_req_header, ring_ent_in_out) == 256,
	       "fuse_uring_req_header.ring_ent_in_out");
_Static_assert(sizeof(struct fur_cmd_req) == 24, "fuse_uring_cmd_req");

#endif
