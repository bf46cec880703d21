/*
 * exmap.h: the /dev/exmap ABI and the project's user-space interface to it.
 *
 * exmap is an out-of-tree Linux kernel module (TU Hamburg; the vmcache paper,
 * SIGMOD 2023) that gives a process one memory region whose page frames the
 * process maps and unmaps explicitly, in batches, with one TLB shootdown per
 * batch instead of one per page. Touching a page of the region that has no
 * frame raises SIGSEGV (never a zero page, never SIGBUS).
 *
 * The first half of this header is the kernel ABI, written from the module's
 * documented interface; the _Static_asserts pin every layout the kernel reads.
 * The second half is a small library over it (struct exmap) that the exmap
 * backend of mem.h is built from.
 *
 * Device use, in order (exmap_open does all of it):
 *
 *   fd = open("/dev/exmap", O_RDWR)
 *   ioctl(fd, EXMAP_IOCTL_SETUP, &(struct exmap_setup){ image fd, n, frames, 0 })
 *   for i < n: iface[i] = mmap(4096, MAP_SHARED, fd, EXMAP_OFF_INTERFACE(i))
 *   region = mmap(virt_size, MAP_SHARED, fd, 0)
 *
 * Then, per thread, on the interface that thread owns:
 *
 *   alloc/free  fill iface[i]->iov[0..k) with {page, len}, k <= 512;
 *               ioctl(fd, EXMAP_IOCTL_ACTION, &(struct exmap_action_params)
 *                     { i, k, EXMAP_OP_ALLOC or EXMAP_OP_FREE, 0 });
 *               the kernel overwrites each iov with {res, pages}.
 *   fault-in    pread(fd, region + page*4096, n*4096, EXMAP_POS(i, EXMAP_OP_READ))
 *               maps n frames at that address and fills them from the backing
 *               store at offset page*4096; a short read means "no free frame".
 *
 * The interface page
 * ------------------
 *
 *   offset  size  meaning
 *   0       8     iov[0]: input {page:52, len:12}, output {res:s32, pages:s16}
 *   8       8     iov[1]
 *   ...
 *   4088    8     iov[511]
 *
 * One iov word, input (written by us before the ioctl):
 *
 *   63        52 51                                                  0
 *   +-----------+-----------------------------------------------------+
 *   |    len    |                        page                         |
 *   +-----------+-----------------------------------------------------+
 *
 * and output (written back by the kernel, replacing the input):
 *
 *   63       48 47           32 31                                   0
 *   +----------+---------------+-------------------------------------+
 *   |  unused  |  pages (s16)  |             res (s32)               |
 *   +----------+---------------+-------------------------------------+
 *
 * res is 0 or a negative errno for that iov; pages is how many frames the
 * kernel actually mapped or unmapped for it (0 for pages already in the
 * requested state).
 *
 * Caveats of the upstream module (why the code below does what it does):
 *
 *   - The backing store must be a block device opened O_RDWR|O_DIRECT (a loop
 *     device over an image file works). Anything else fails SETUP with EBADF.
 *   - ACTION returns the number of failed iovs, but when ALLOC runs out of
 *     frames it marks that iov and every later one -ENOMEM without counting
 *     them: only the per-iov res is trustworthy, so every res is checked.
 *   - The kernel does not bound iov_len by the 512 entries of the interface
 *     page: batches are split here, never handed over whole.
 *   - A failed backing-store read during fault-in unmaps the frames and also
 *     reads short, so it looks like "no free frame". Callers that retry after
 *     -ENOMEM must bound their retries.
 *   - The region is not inherited across fork(): open it after daemonizing.
 *   - Each interface page is shared memory between one user thread and the
 *     kernel: two threads must never use one interface at once. Interfaces
 *     are handed out with exmap_iface_acquire for that reason.
 */
#ifndef VS_EXMAP_EXMAP_H
#define VS_EXMAP_EXMAP_H

#include <linux/ioctl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* The kernel ABI                                                      */

#define EXMAP_DEVICE_PATH "/dev/exmap"

#define EXMAP_PAGE_SIZE	      4096u
#define EXMAP_PAGE_SHIFT      12
#define EXMAP_PAGE_BITS	      52     /* width of exmap_iov.page */
#define EXMAP_PAGE_LEN_BITS   12     /* width of exmap_iov.len */
#define EXMAP_IOV_MAX_LEN     4095   /* largest exmap_iov.len */
#define EXMAP_IFACE_IOVS      512    /* iovs in one interface page: the batch limit */
#define EXMAP_MAX_INTERFACES  256    /* SETUP refuses more (EINVAL) */
#define EXMAP_FAULT_MAX_PAGES 524287 /* one read(2) moves at most 2 GiB - 4 KiB */

/* Opcodes (exmap_action_params.opcode, or bits 8-15 of the pread position). */
#define EXMAP_OP_READ  0 /* pread only: map frames and fill them from the store */
#define EXMAP_OP_ALLOC 1 /* map frames; recycled frames are NOT zeroed */
#define EXMAP_OP_FREE  2 /* unmap and return frames; one TLB flush per call */
#define EXMAP_OP_WRITE 3 /* not implemented upstream: write pages yourself */

/* One entry of an interface page: a request on the way in, a result on the
 * way out (see the pictures above). */
struct exmap_iov {
	union {
		uint64_t value;
		struct {
			uint64_t page : EXMAP_PAGE_BITS;
			uint64_t len : EXMAP_PAGE_LEN_BITS;
		};
		struct {
			int32_t res;
			int16_t pages;
		};
	};
};

/* What one interface mmap shows: the iov array the ACTION ioctl reads. */
struct exmap_user_interface {
	struct exmap_iov iov[EXMAP_IFACE_IOVS];
};

/* EXMAP_IOCTL_SETUP, once per device fd.
 *
 *   offset  size  field           meaning
 *   0       4     fd              backing block device (O_RDWR|O_DIRECT), -1: none
 *   4       4     max_interfaces  interfaces to create, <= 256
 *   8       8     buffer_size     frames the module preallocates (4 KiB each)
 *   16      8     flags           0
 *
 * The kernel declares buffer_size as size_t; exmap is x86-64 only, where that
 * is the uint64_t used here. */
struct exmap_setup {
	int32_t fd;
	int32_t max_interfaces;
	uint64_t buffer_size;
	uint64_t flags;
};

/* EXMAP_IOCTL_ACTION: run @opcode over iov[0..iov_len) of interface @interface.
 * Returns (as the ioctl result) the number of iovs that failed.
 *
 *   offset  size  field      meaning
 *   0       2     interface  interface number
 *   2       2     iov_len    entries of its page to process (we keep <= 512)
 *   4       2     opcode     EXMAP_OP_ALLOC or EXMAP_OP_FREE
 *   6       2     (padding)
 *   8       8     flags      0
 */
struct exmap_action_params {
	uint16_t interface;
	uint16_t iov_len;
	uint16_t opcode;
	uint64_t flags;
};

/* EXMAP_IOCTL_STATS: filled in by the kernel.
 *
 *   offset  size  field
 *   0       8     flags
 *   8       8     buffer_size
 *   16      8     alloc_count
 *   24      4     max_interfaces
 *   28      4     (padding)
 */
struct exmap_user_stats {
	uint64_t flags;
	uint64_t buffer_size;
	uint64_t alloc_count;
	uint32_t max_interfaces;
};

/* mmap offset of interface @i's page. Offset 0 maps the managed region. */
#define EXMAP_OFF_INTERFACE(i) (0xe000000000000000ull | ((uint64_t)(i) << EXMAP_PAGE_SHIFT))

/* pread position for a fault-in on interface @iface with @opcode. */
#define EXMAP_POS(iface, opcode) ((uint64_t)((iface)&0xff) | ((uint64_t)((opcode)&0xff) << 8))

#define EXMAP_IOCTL_SETUP  _IOC(_IOC_WRITE, 'k', 1, sizeof(struct exmap_setup))
#define EXMAP_IOCTL_ACTION _IOC(_IOC_WRITE, 'k', 2, sizeof(struct exmap_action_params))
#define EXMAP_IOCTL_CLONE  _IOC(_IOC_WRITE, 'k', 3, sizeof(int))
#define EXMAP_IOCTL_STATS  _IOC(_IOC_WRITE, 'k', 4, sizeof(struct exmap_user_stats))

_Static_assert(sizeof(struct exmap_iov) == 8, "exmap_iov is one 64-bit word");
_Static_assert(offsetof(struct exmap_iov, res) == 0, "res is the low 32 bits");
_Static_assert(offsetof(struct exmap_iov, pages) == 4, "pages follows res");
_Static_assert(sizeof(struct exmap_user_interface) == EXMAP_PAGE_SIZE,
	       "an interface is exactly one page of iovs");
_Static_assert(sizeof(struct exmap_setup) == 24, "exmap_setup layout");
_Static_assert(offsetof(struct exmap_setup, max_interfaces) == 4, "exmap_setup layout");
_Static_assert(offsetof(struct exmap_setup, buffer_size) == 8, "exmap_setup layout");
_Static_assert(offsetof(struct exmap_setup, flags) == 16, "exmap_setup layout");
_Static_assert(sizeof(struct exmap_action_params) == 16, "exmap_action_params layout");
_Static_assert(offsetof(struct exmap_action_params, iov_len) == 2, "action layout");
_Static_assert(offsetof(struct exmap_action_params, opcode) == 4, "action layout");
_Static_assert(offsetof(struct exmap_action_params, flags) == 8, "action layout");
_Static_assert(sizeof(struct exmap_user_stats) == 32, "exmap_user_stats layout");
_Static_assert(offsetof(struct exmap_user_stats, max_interfaces) == 24, "stats layout");
/* The ioctl numbers encode the struct sizes: pin the results too. */
_Static_assert(EXMAP_IOCTL_SETUP == 0x40186b01u, "EXMAP_IOCTL_SETUP");
_Static_assert(EXMAP_IOCTL_ACTION == 0x40106b02u, "EXMAP_IOCTL_ACTION");
_Static_assert(EXMAP_IOCTL_CLONE == 0x40046b03u, "EXMAP_IOCTL_CLONE");
_Static_assert(EXMAP_IOCTL_STATS == 0x40206b04u, "EXMAP_IOCTL_STATS");

/* Encode a request for @len pages starting at page index @page. */
static inline struct exmap_iov exmap_iov_make(uint64_t page, unsigned len)
{
	struct exmap_iov v = {.value = 0};
	v.page = page;
	v.len = len;
	return v;
}

/* ------------------------------------------------------------------ */
/* The user-space interface                                            */

/* An open, set-up device: its fd, interface pages and managed region. */
struct exmap;

struct exmap_config {
	const char *path;	 /* NULL: EXMAP_DEVICE_PATH */
	int backing_fd;		 /* block device open O_RDWR|O_DIRECT, or -1 */
	unsigned max_interfaces; /* 1..EXMAP_MAX_INTERFACES */
	uint64_t frames;	 /* frames the module may hand out (> 0) */
	uint64_t virt_pages;	 /* size of the managed region in pages (> 0) */
	bool required;		 /* log failures as errors (exmap=on), else as info */
};

/** Open the device, set it up, map every interface page and the region.
 *
 * @param cfg   what to set up; cfg->path may be NULL.
 * @param ret_x on success, the handle; left alone on failure.
 * @return 0, or:
 *   -ENODEV  the device is missing or unusable, or SETUP refused the
 *            arguments (a non-block-device backing store, for one); the log
 *            says which and what to do about it.
 *   -EINVAL  cfg out of range (no frames, no region, too many interfaces).
 *   -ENOMEM  out of memory, or the region could not be mapped.
 * Everything acquired is released again on failure.
 */
int exmap_open(const struct exmap_config *cfg, struct exmap **ret_x);

/** Unmap the region and the interfaces and close the device, which returns
 * every frame to the kernel. Accepts NULL. No thread may still use @x. */
void exmap_close(struct exmap *x);

/** The start of the managed region: page p lives at region + p * 4096. */
void *exmap_region(const struct exmap *x);

/** The device fd, for callers that batch fault-ins themselves (preadv or
 * io_uring with EXMAP_POS positions). */
int exmap_fd(const struct exmap *x);

/** How many interfaces the device was set up with. */
unsigned exmap_max_interfaces(const struct exmap *x);

/** Hand the calling thread an interface of its own.
 *
 * An interface is used by one thread at a time; the number is reused after
 * exmap_iface_release and never handed out twice at once. The most recently
 * released interface is handed out first (its kernel-side free-frame cache is
 * the warmest).
 * @return the interface number (>= 0), or -EBUSY when all are taken.
 */
int exmap_iface_acquire(struct exmap *x);

/** Give interface @iface back. Negative numbers are ignored (so a failed
 * acquire can be released unconditionally); releasing a number that is not
 * handed out is logged and ignored rather than letting it be handed out
 * twice. */
void exmap_iface_release(struct exmap *x, int iface);

/** The iov page of interface @iface (for tests and hand-built batches). */
struct exmap_iov *exmap_iface_iovs(struct exmap *x, int iface);

/** One EXMAP_IOCTL_ACTION over the first @n iovs of interface @iface.
 *
 * The caller filled the iovs; on return each holds its {res, pages}.
 * @param opcode EXMAP_OP_ALLOC or EXMAP_OP_FREE.
 * @param n      1..EXMAP_IFACE_IOVS.
 * @return the kernel's count of failed iovs (>= 0; it undercounts, see the
 *         caveats: check res), or a negative errno if the ioctl itself
 *         failed (-EINVAL for a bad interface or opcode).
 */
int exmap_action(struct exmap *x, int iface, unsigned opcode, unsigned n);

/** Map frames under the @n pages listed in @pages (one iov per page).
 *
 * Pages that already have a frame are left as they are. Frames come from the
 * pool unzeroed: the caller clears or fills them. Batches of more than 512
 * pages take several ioctls.
 * @return 0, or:
 *   -ENOMEM  the module ran out of frames; some pages may have been mapped.
 *            Evict, then retry the same call (mapped pages are skipped).
 *   -EINVAL  a bad interface, or a page outside the region (nothing done).
 *   other    the first per-iov or ioctl error.
 */
int exmap_alloc_batch(struct exmap *x, int iface, const uint64_t *pages, unsigned n);

/** Unmap the @n pages listed in @pages and give their frames back.
 *
 * One ioctl, and so one TLB flush, per 512 pages. A per-iov failure does not
 * stop the batch: every page that can be freed is freed.
 * @return 0, -EINVAL (bad interface or page outside the region; nothing
 *         done), or the first per-iov or ioctl error (logged with the page).
 */
int exmap_free_batch(struct exmap *x, int iface, const uint64_t *pages, unsigned n);

/** Fault pages [@page, @page + @n) in with one pread on the device.
 *
 * @param opcode EXMAP_OP_READ (fill the frames from the backing store at
 *               page * 4096) or EXMAP_OP_ALLOC (map without reading; the
 *               contents are undefined).
 * The range must not be mapped already.
 * @return 0, or:
 *   -ENOMEM  short read: no free frames. No page of the range is left mapped
 *            (a partial multi-page fault-in is undone), so the caller evicts
 *            and retries the same call. Upstream a failed backing-store read
 *            looks the same; bound the retries.
 *   -EINVAL  bad interface, opcode, or range (n > EXMAP_FAULT_MAX_PAGES).
 *   other    the errno of the pread (-EIO ...).
 */
int exmap_fault_in(struct exmap *x, int iface, unsigned opcode, uint64_t page, unsigned n);

/** Read the module's counters for this device. @return 0 or -errno. */
int exmap_stats_get(struct exmap *x, struct exmap_user_stats *ret_stats);

#endif
