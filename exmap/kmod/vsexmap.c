// SPDX-License-Identifier: GPL-2.0
/*
 * vsexmap.c: the VirtuScale exmap-compatible kernel module (/dev/exmap).
 *
 * It implements the user-space ABI of the exmap module (TU Hamburg, the
 * vmcache paper) exactly as exmap/exmap.h describes it, with its own code and
 * exported kernel interfaces only: no syscall-table patching, no CR0 writes,
 * no kallsyms lookups.
 *
 * One open file of /dev/exmap is one context (struct vx_ctx):
 *
 *   open            -> empty context
 *   SETUP ioctl     -> backing file taken, frame pool preallocated,
 *                      interface pages allocated            (ready = true)
 *   mmap offset 0   -> the managed region (one per context)
 *   mmap EXMAP_OFF_INTERFACE(i) -> interface page i (512 iov words)
 *   ACTION ioctl    -> ALLOC / FREE over iov[0..iov_len) of one interface
 *   pread / preadv  -> fault-in: frames mapped at the buffer address and
 *                      filled from the backing store at (addr - region start)
 *   close           -> every frame, page and reference released
 *
 * The region vma is VM_MIXEDMAP: frames are ordinary refcounted pages put in
 * with vm_insert_page() (so get_user_pages() works on the region: O_DIRECT
 * from pool pages, FUSE replies straight from pool pages) and taken out with
 * zap_page_range(), which undoes the rmap and counters and flushes the TLB
 * once for the range it zaps. The page table is the only record of which
 * frame sits where: ALLOC skips pages whose pte is present (vm_insert_page
 * answers -EBUSY), FREE reads the frames under a run of pages, zaps the run,
 * and only then gives the frames back (a frame must not be reused while a
 * stale TLB entry may still point to it). A FREE batch is sorted by page
 * first, so that every run of adjacent pages becomes one zap whatever order
 * the iovs came in. Linux 6.1 exports no way to flush a user mm's TLB for a
 * set of ranges (see vx_unmap_run), so a batch costs one zap, hence one
 * flush, per run of contiguous pages, not one per batch. A frame still pinned
 * by get_user_pages() when it is freed (an in-flight O_DIRECT or FUSE copy)
 * is parked until the pin is dropped instead of being reused.
 *
 * The vma has a fault handler that answers VM_FAULT_SIGSEGV: touching a page
 * without a frame raises SIGSEGV with si_addr inside the region.
 *
 * Locking: the mm's mmap lock (read) is held by ACTION and fault-in, which
 * validate the region vma under it; the vma's close runs under the mmap
 * write lock, so it never races with them. free_lock (a spinlock) guards the
 * free-frame stack and the parked list; free_mutex serializes FREE batches
 * (their frame read and zap are two steps); setup_lock guards SETUP and the
 * region mmap. Order: mmap lock, then free_mutex or setup_lock, then
 * free_lock.
 */
#include <linux/bvec.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pgtable.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/version.h>

#include "vsexmap_abi.h"

#define VX_BVEC_CHUNK 32 /* pages read from the backing store per I/O */

/* One iov of a FREE batch, sorted by page (see vx_free_batch). */
struct vx_free_ent {
	u64 page;
	u32 len;
	u32 idx; /* position in the interface page, for the result */
};

/* zap_page_range calls since load, each one TLB flush: read-only in
 * /sys/module/vsexmap/parameters/zap_calls, so that a benchmark can count
 * the flushes a batch cost. */
static atomic_long_t vx_zap_calls = ATOMIC_LONG_INIT(0);

static int vx_zap_calls_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE, "%ld\n", atomic_long_read(&vx_zap_calls));
}

static const struct kernel_param_ops vx_zap_calls_ops = {
	.get = vx_zap_calls_get,
};
module_param_cb(zap_calls, &vx_zap_calls_ops, NULL, 0444);
MODULE_PARM_DESC(zap_calls, "zap_page_range calls (TLB flushes) made by FREE since load");

struct vx_ctx {
	struct mutex setup_lock;
	bool ready; /* SETUP done; read with smp_load_acquire */

	struct file *backing; /* NULL: anonymous memory */
	unsigned int max_ifaces;
	struct page **ifaces;

	struct page **frames; /* every frame of the pool, for release */
	unsigned long nframes;
	spinlock_t free_lock;
	struct mutex free_mutex; /* serializes FREE batches (see vx_free_batch) */
	struct vx_free_ent *fents; /* EXMAP_IFACE_IOVS; under free_mutex */
	struct page **free; /* stack of free frames */
	unsigned long nfree;
	struct list_head pinned; /* freed while pinned by GUP: not reusable yet */

	/* The region, set by its mmap and cleared by its vma close. */
	unsigned long region_start, region_end;
	struct mm_struct *region_mm;
};

/* State of one ACTION: pages done so far, frames on their way back. */
struct vx_walk {
	struct vx_ctx *c;
	struct mm_struct *mm;
	long done;		/* pages mapped or found mapped */
	struct list_head freed; /* FREE: frames awaiting the zap's TLB flush */
};

static inline void vx_set_flags(struct vm_area_struct *vma, unsigned long set, unsigned long clr)
{
	/* 6.3 made vm_flags read-only and added the accessors. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clr);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clr;
#endif
}

/* ------------------------------------------------------------------ */
/* The frame pool                                                      */

/* Move parked frames whose pins are gone back to the free stack. */
static void vx_unpark_locked(struct vx_ctx *c)
{
	struct page *p, *n;

	list_for_each_entry_safe(p, n, &c->pinned, lru) {
		if (page_count(p) == 1 && c->nfree < c->nframes) {
			list_del(&p->lru);
			c->free[c->nfree++] = p;
		}
	}
}

static struct page *vx_frame_get(struct vx_ctx *c)
{
	struct page *p = NULL;

	spin_lock(&c->free_lock);
	if (!c->nfree && !list_empty(&c->pinned))
		vx_unpark_locked(c);
	if (c->nfree)
		p = c->free[--c->nfree];
	spin_unlock(&c->free_lock);
	return p;
}

static void vx_frame_put(struct vx_ctx *c, struct page *p)
{
	spin_lock(&c->free_lock);
	if (!WARN_ON_ONCE(c->nfree >= c->nframes))
		c->free[c->nfree++] = p;
	spin_unlock(&c->free_lock);
}

static void vx_frames_put_list(struct vx_ctx *c, struct list_head *list)
{
	struct page *p, *n;

	spin_lock(&c->free_lock);
	list_for_each_entry_safe(p, n, list, lru) {
		list_del(&p->lru);
		/* Our own reference is the only one once unmapped; more means
		 * a get_user_pages() pin is still using the frame. */
		if (page_count(p) != 1)
			list_add(&p->lru, &c->pinned);
		else if (!WARN_ON_ONCE(c->nfree >= c->nframes))
			c->free[c->nfree++] = p;
	}
	spin_unlock(&c->free_lock);
}

/* ------------------------------------------------------------------ */
/* The region vma                                                      */

static vm_fault_t vx_region_fault(struct vm_fault *vmf)
{
	/* No frame under this page: the exmap contract is SIGSEGV. */
	return VM_FAULT_SIGSEGV;
}

static void vx_region_close(struct vm_area_struct *vma)
{
	struct vx_ctx *c = vma->vm_private_data;
	unsigned long i;

	/* The ptes are gone already (unmap runs before close), so every frame
	 * is free again. (A frame still pinned then is reused while pinned: the
	 * process unmapped the region under its own in-flight I/O.) */
	spin_lock(&c->free_lock);
	INIT_LIST_HEAD(&c->pinned);
	for (i = 0; i < c->nframes; i++)
		c->free[i] = c->frames[i];
	c->nfree = c->nframes;
	spin_unlock(&c->free_lock);
	WRITE_ONCE(c->region_start, 0);
	WRITE_ONCE(c->region_end, 0);
	c->region_mm = NULL;
}

static int vx_region_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL; /* the region is mapped and unmapped whole */
}

static int vx_region_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

static const struct vm_operations_struct vx_region_ops = {
	.fault = vx_region_fault,
	.close = vx_region_close,
	.may_split = vx_region_may_split,
	.mremap = vx_region_mremap,
};

/* The region vma of @c in the current mm, or NULL. Call with the mmap lock. */
static struct vm_area_struct *vx_region_vma(struct vx_ctx *c)
{
	unsigned long start = READ_ONCE(c->region_start);
	struct vm_area_struct *vma;

	if (!start || c->region_mm != current->mm)
		return NULL;
	vma = vma_lookup(current->mm, start);
	if (!vma || vma->vm_ops != &vx_region_ops || vma->vm_private_data != c)
		return NULL;
	return vma;
}

/* ------------------------------------------------------------------ */
/* pte callbacks                                                       */

/* Put a frame under @addr. Returns 1 when mapped, 0 when a frame was there
 * already (the new one goes back), -ENOMEM when the pool is empty, or the
 * error of vm_insert_page. @p: the frame to use, or NULL to take one. */
static int vx_map_one(struct vx_ctx *c, struct vm_area_struct *vma, unsigned long addr,
		      struct page *p)
{
	int r;

	if (!p) {
		p = vx_frame_get(c);
		if (!p)
			return -ENOMEM;
	}
	r = vm_insert_page(vma, addr, p);
	if (r == 0)
		return 1;
	vx_frame_put(c, p);
	return r == -EBUSY ? 0 : r;
}

/* ALLOC of one iov: @n pages from @addr. Counts mapped pages in @done. */
static int vx_alloc_range(struct vx_ctx *c, struct vm_area_struct *vma, unsigned long addr,
			  unsigned long n, long *done)
{
	unsigned long k;

	for (k = 0; k < n; k++) {
		int r = vx_map_one(c, vma, addr + (k << PAGE_SHIFT), NULL);

		if (r < 0)
			return r;
		*done += r;
	}
	return 0;
}

/* FREE: note the frame under every mapped pte of a range and count it (the
 * iov's result). The ptes are cleared, and the TLB flushed, by the zap of
 * the run afterwards (vx_unmap_run). */
static int vx_pte_collect(pte_t *pte, unsigned long addr, void *data)
{
	struct vx_walk *w = data;
	pte_t v = ptep_get(pte);

	if (pte_none(v))
		return 0;
	list_add(&pfn_to_page(pte_pfn(v))->lru, &w->freed);
	w->done++;
	return 0;
}

/*
 * Unmap the run [addr, end), whose frames vx_pte_collect put on w->freed,
 * and return them: one zap, so one TLB flush for the run. Frames go back to
 * the pool only after the flush.
 *
 * Why one flush per run and not per batch: 6.1 exports three ways to clear
 * user ptes of a vma, all one mmu_gather (one flush) per call over one range:
 * zap_page_range (used here), zap_vma_ptes (VM_PFNMAP vmas only, and ours is
 * VM_MIXEDMAP so that get_user_pages works) and unmap_mapping_range (by file
 * offset; the same zap per range underneath). Gathering several ranges into
 * one flush needs tlb_gather_mmu/unmap_page_range/tlb_finish_mmu or
 * flush_tlb_mm_range, none of which is exported. Zapping across the gaps
 * between runs would take pages that are not the caller's to free (mapped
 * neighbours, or a page another thread faults in meanwhile).
 */
static void vx_unmap_run(struct vx_ctx *c, struct vm_area_struct *vma, struct vx_walk *w,
			 unsigned long addr, unsigned long end)
{
	if (list_empty(&w->freed))
		return; /* nothing mapped in the run: nothing to flush */
	/* 6.3 replaced zap_page_range by zap_page_range_single (same job). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	zap_page_range_single(vma, addr, end - addr, NULL);
#else
	zap_page_range(vma, addr, end - addr);
#endif
	atomic_long_inc(&vx_zap_calls);
	vx_frames_put_list(c, &w->freed);
	INIT_LIST_HEAD(&w->freed);
}

/* ------------------------------------------------------------------ */
/* ioctls                                                              */

static int vx_setup(struct vx_ctx *c, struct exmap_setup __user *uarg)
{
	struct exmap_setup s;
	struct file *backing = NULL;
	unsigned long i;
	int r;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (s.max_interfaces <= 0 || s.max_interfaces > EXMAP_MAX_INTERFACES ||
	    s.buffer_size == 0 || s.flags != 0)
		return -EINVAL;
	if (s.buffer_size > totalram_pages() / 2)
		return -ENOMEM; /* refuse to pin more than half the machine */

	if (s.fd >= 0) {
		umode_t m;

		backing = fget(s.fd);
		if (!backing)
			return -EBADF;
		m = file_inode(backing)->i_mode;
		/* Beyond upstream: a regular file is as good as a block device. */
		if ((!S_ISREG(m) && !S_ISBLK(m)) || !(backing->f_mode & FMODE_READ)) {
			fput(backing);
			return -EBADF;
		}
	}

	mutex_lock(&c->setup_lock);
	r = -EBUSY;
	if (c->ready)
		goto out_put;
	r = -ENOMEM;
	c->ifaces = kcalloc(s.max_interfaces, sizeof(*c->ifaces), GFP_KERNEL);
	c->frames = kvcalloc(s.buffer_size, sizeof(*c->frames), GFP_KERNEL);
	c->free = kvcalloc(s.buffer_size, sizeof(*c->free), GFP_KERNEL);
	c->fents = kvcalloc(EXMAP_IFACE_IOVS, sizeof(*c->fents), GFP_KERNEL);
	if (!c->ifaces || !c->frames || !c->free || !c->fents)
		goto out_free;
	for (i = 0; i < (unsigned long)s.max_interfaces; i++) {
		c->ifaces[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!c->ifaces[i])
			goto out_free;
	}
	c->max_ifaces = s.max_interfaces;
	for (i = 0; i < s.buffer_size; i++) {
		c->frames[i] = alloc_page(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN);
		if (!c->frames[i])
			goto out_free;
		c->free[i] = c->frames[i];
		if (fatal_signal_pending(current)) {
			r = -EINTR;
			goto out_free;
		}
		if ((i & 1023) == 0)
			cond_resched();
	}
	c->nframes = s.buffer_size;
	c->nfree = s.buffer_size;
	c->backing = backing;
	smp_store_release(&c->ready, true);
	mutex_unlock(&c->setup_lock);
	return 0;

out_free:
	if (c->frames)
		for (i = 0; i < s.buffer_size && c->frames[i]; i++)
			__free_page(c->frames[i]);
	if (c->ifaces)
		for (i = 0; i < (unsigned long)s.max_interfaces && c->ifaces[i]; i++)
			__free_page(c->ifaces[i]);
	kvfree(c->frames);
	kvfree(c->free);
	kvfree(c->fents);
	kfree(c->ifaces);
	c->frames = c->free = c->ifaces = NULL;
	c->fents = NULL;
	c->max_ifaces = 0;
out_put:
	mutex_unlock(&c->setup_lock);
	if (backing)
		fput(backing);
	return r;
}

static u64 vx_iov_result(int res, int pages)
{
	return (u64)(u32)res | ((u64)(u16)(s16)pages << 32);
}

/* Page and length of an iov input word, or false (and the result -EINVAL
 * written) when it leaves the region. An empty iov (len 0) is valid
 * anywhere. */
static bool vx_iov_decode(u64 *iov, unsigned int i, unsigned long npages, u64 *ret_page,
			  u64 *ret_len)
{
	u64 v = READ_ONCE(iov[i]);
	u64 page = v & ((1ull << EXMAP_PAGE_BITS) - 1);
	u64 len = v >> EXMAP_PAGE_BITS;

	if (len != 0 && (page >= npages || len > npages - page)) {
		WRITE_ONCE(iov[i], vx_iov_result(-EINVAL, 0));
		return false;
	}
	*ret_page = page;
	*ret_len = len;
	return true;
}

static long vx_alloc_batch(struct vx_ctx *c, struct vm_area_struct *vma, u64 *iov,
			   unsigned int n)
{
	unsigned long npages = vma_pages(vma);
	long failed = 0, done;
	unsigned int i;
	u64 page, len;

	for (i = 0; i < n; i++) {
		int r;

		if (!vx_iov_decode(iov, i, npages, &page, &len)) {
			failed++;
			continue;
		}
		done = 0;
		r = vx_alloc_range(c, vma, vma->vm_start + (page << PAGE_SHIFT), len, &done);
		WRITE_ONCE(iov[i], vx_iov_result(r, (int)done));
		if (r)
			failed++;
	}
	return failed;
}

static int vx_free_ent_cmp(const void *a, const void *b)
{
	const struct vx_free_ent *x = a, *y = b;

	if (x->page != y->page)
		return x->page < y->page ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * FREE: the iovs sorted by page (unless they came sorted), then walked as
 * runs of adjacent or overlapping ranges; each run is collected (frames
 * noted, mapped pages counted per iov) and then zapped once. A page named
 * twice in one batch is counted for the first iov in page order only.
 * Called with the mmap lock (read) and free_mutex held.
 */
static long vx_free_batch(struct vx_ctx *c, struct vm_area_struct *vma, u64 *iov,
			  unsigned int n)
{
	unsigned long npages = vma_pages(vma), lo = 0, hi = 0;
	struct vx_free_ent *e = c->fents;
	struct vx_walk w = {.c = c, .mm = vma->vm_mm};
	unsigned int i, m = 0;
	bool sorted = true;
	long failed = 0;
	u64 page, len;

	INIT_LIST_HEAD(&w.freed);
	for (i = 0; i < n; i++) {
		if (!vx_iov_decode(iov, i, npages, &page, &len)) {
			failed++;
			continue;
		}
		if (len == 0) {
			WRITE_ONCE(iov[i], vx_iov_result(0, 0));
			continue;
		}
		if (m && page < e[m - 1].page)
			sorted = false;
		e[m].page = page;
		e[m].len = (u32)len;
		e[m].idx = i;
		m++;
	}
	if (!sorted)
		sort(e, m, sizeof(*e), vx_free_ent_cmp, NULL);

	for (i = 0; i < m; i++) {
		unsigned long addr = vma->vm_start + (e[i].page << PAGE_SHIFT);
		unsigned long end = addr + ((unsigned long)e[i].len << PAGE_SHIFT);
		long before = w.done;

		if (lo < hi && addr <= hi) {
			addr = max(addr, hi); /* same run: only what it adds */
		} else {
			vx_unmap_run(c, vma, &w, lo, hi);
			lo = hi = addr;
		}
		if (end > addr) {
			apply_to_existing_page_range(w.mm, addr, end - addr, vx_pte_collect, &w);
			hi = end;
		}
		WRITE_ONCE(iov[e[i].idx], vx_iov_result(0, (int)(w.done - before)));
	}
	vx_unmap_run(c, vma, &w, lo, hi);
	return failed;
}

static long vx_action(struct vx_ctx *c, struct exmap_action_params __user *uarg)
{
	struct exmap_action_params a;
	struct vm_area_struct *vma;
	struct mm_struct *mm = current->mm;
	long failed;
	u64 *iov;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (!smp_load_acquire(&c->ready))
		return -EINVAL;
	if (a.interface >= c->max_ifaces || a.iov_len > EXMAP_IFACE_IOVS ||
	    (a.opcode != EXMAP_OP_ALLOC && a.opcode != EXMAP_OP_FREE))
		return -EINVAL;
	iov = page_address(c->ifaces[a.interface]);

	mmap_read_lock(mm);
	vma = vx_region_vma(c);
	if (!vma) {
		mmap_read_unlock(mm);
		return -EINVAL;
	}
	if (a.opcode == EXMAP_OP_ALLOC) {
		failed = vx_alloc_batch(c, vma, iov, a.iov_len);
	} else {
		/* FREE reads the frames under a run, then zaps the run: two
		 * FREEs of one page must not interleave, or its frame would be
		 * returned twice. */
		mutex_lock(&c->free_mutex);
		failed = vx_free_batch(c, vma, iov, a.iov_len);
		mutex_unlock(&c->free_mutex);
	}
	mmap_read_unlock(mm);
	return failed;
}

static long vx_stats(struct vx_ctx *c, struct exmap_user_stats __user *uarg)
{
	struct exmap_user_stats st;

	memset(&st, 0, sizeof(st));
	if (smp_load_acquire(&c->ready)) {
		spin_lock(&c->free_lock);
		st.alloc_count = c->nframes - c->nfree;
		spin_unlock(&c->free_lock);
		st.buffer_size = c->nframes;
		st.max_interfaces = c->max_ifaces;
	}
	if (copy_to_user(uarg, &st, sizeof(st)))
		return -EFAULT;
	return 0;
}

static long vx_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct vx_ctx *c = f->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case EXMAP_IOCTL_SETUP:
		return vx_setup(c, uarg);
	case EXMAP_IOCTL_ACTION:
		return vx_action(c, uarg);
	case EXMAP_IOCTL_STATS:
		return vx_stats(c, uarg);
	case EXMAP_IOCTL_CLONE:
		return -EOPNOTSUPP;
	default:
		return -ENOTTY;
	}
}

/* ------------------------------------------------------------------ */
/* Fault-in: pread(fd, addr, len, iface | opcode << 8)                 */

/* Fill @n frames from the backing store at byte offset @off. Past the end of
 * the store they read as zeros. */
static int vx_read_store(struct vx_ctx *c, struct page **pages, unsigned int n, loff_t off)
{
	struct bio_vec bv[VX_BVEC_CHUNK];
	struct iov_iter it;
	size_t want = (size_t)n << PAGE_SHIFT;
	ssize_t got;
	unsigned int i;

	for (i = 0; i < n; i++) {
		bv[i].bv_page = pages[i];
		bv[i].bv_offset = 0;
		bv[i].bv_len = PAGE_SIZE;
	}
	/* A bvec iterator, not a kvec: direct I/O (an O_DIRECT backing fd)
	 * can take pages from a bvec. READ is ITER_DEST from 6.2 on. */
	iov_iter_bvec(&it, READ, bv, n, want);
	got = vfs_iter_read(c->backing, &it, &off, 0);
	if (got < 0)
		return (int)got;
	for (i = got >> PAGE_SHIFT; i < n; i++) {
		unsigned int from = i == (got >> PAGE_SHIFT) ? got & ~PAGE_MASK : 0;

		memzero_page(pages[i], from, PAGE_SIZE - from);
	}
	return 0;
}

static ssize_t vx_read(struct file *f, char __user *buf, size_t len, loff_t *ppos)
{
	struct vx_ctx *c = f->private_data;
	struct mm_struct *mm = current->mm;
	unsigned long addr = (unsigned long)buf;
	u64 pos = (u64)*ppos;
	unsigned int iface = pos & 0xff, op = (pos >> 8) & 0xff;
	struct page *chunk[VX_BVEC_CHUNK];
	struct vm_area_struct *vma;
	size_t done = 0;
	ssize_t r = 0;

	if (!smp_load_acquire(&c->ready))
		return -EINVAL;
	if (iface >= c->max_ifaces || (op != EXMAP_OP_READ && op != EXMAP_OP_ALLOC) ||
	    (pos >> 16) != 0)
		return -EINVAL;
	if (len == 0)
		return 0;
	if ((addr | len) & ~PAGE_MASK)
		return -EINVAL;

	mmap_read_lock(mm);
	vma = vx_region_vma(c);
	if (!vma || addr < vma->vm_start || addr > vma->vm_end || len > vma->vm_end - addr) {
		r = -EINVAL;
		goto out;
	}

	while (done < len) {
		unsigned int want = min_t(size_t, (len - done) >> PAGE_SHIFT, VX_BVEC_CHUNK);
		unsigned int n = 0, i;
		unsigned long at = addr + done;

		while (n < want && (chunk[n] = vx_frame_get(c)))
			n++;
		if (n == 0)
			break; /* no free frame: short read */
		if (op == EXMAP_OP_READ) {
			int e = c->backing
					? vx_read_store(c, chunk, n, (loff_t)(at - vma->vm_start))
					: 0;

			if (!c->backing)
				for (i = 0; i < n; i++)
					clear_highpage(chunk[i]);
			if (e) {
				for (i = 0; i < n; i++)
					vx_frame_put(c, chunk[i]);
				r = e;
				break;
			}
		}
		for (i = 0; i < n; i++) {
			int e = vx_map_one(c, vma, at + ((unsigned long)i << PAGE_SHIFT), chunk[i]);

			if (e < 0) {
				/* Page-table allocation failed: the rest go back. */
				r = e;
				while (++i < n)
					vx_frame_put(c, chunk[i]);
				break;
			}
		}
		if (r)
			break;
		done += (size_t)n << PAGE_SHIFT;
		if (n < want)
			break; /* ran out of frames */
		if (fatal_signal_pending(current))
			break;
	}
out:
	mmap_read_unlock(mm);
	/* Like read(2): what was done counts; an error only when nothing was. */
	return done ? (ssize_t)done : r;
}

/* ------------------------------------------------------------------ */
/* open, mmap, release                                                 */

static int vx_open(struct inode *inode, struct file *f)
{
	struct vx_ctx *c;

	vsexmap_abi_check();
	c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return -ENOMEM;
	mutex_init(&c->setup_lock);
	mutex_init(&c->free_mutex);
	INIT_LIST_HEAD(&c->pinned);
	spin_lock_init(&c->free_lock);
	f->private_data = c;
	return 0;
}

static int vx_mmap(struct file *f, struct vm_area_struct *vma)
{
	struct vx_ctx *c = f->private_data;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	unsigned long len = vma->vm_end - vma->vm_start;
	int r = 0;

	if (!smp_load_acquire(&c->ready))
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;

	if ((off & EXMAP_OFF_INTERFACE_MASK) == EXMAP_OFF_INTERFACE(0)) {
		u64 i = (off & ~EXMAP_OFF_INTERFACE_MASK) >> PAGE_SHIFT;

		if (len != PAGE_SIZE || i >= c->max_ifaces)
			return -EINVAL;
		vx_set_flags(vma, VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY, 0);
		/* A normal, refcounted page: vm_insert_page makes the vma
		 * VM_MIXEDMAP and holds a reference while it is mapped. */
		return vm_insert_page(vma, vma->vm_start, c->ifaces[i]);
	}
	if (off != 0)
		return -EINVAL;

	mutex_lock(&c->setup_lock);
	if (c->region_start) {
		r = -EBUSY; /* one region per device fd */
		goto out;
	}
	/* No VM_IO/VM_PFNMAP: get_user_pages() must work on the region. */
	vx_set_flags(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY, 0);
	vma->vm_ops = &vx_region_ops;
	vma->vm_private_data = c;
	c->region_mm = vma->vm_mm;
	WRITE_ONCE(c->region_end, vma->vm_end);
	WRITE_ONCE(c->region_start, vma->vm_start);
out:
	mutex_unlock(&c->setup_lock);
	return r;
}

static int vx_release(struct inode *inode, struct file *f)
{
	struct vx_ctx *c = f->private_data;
	unsigned long i;

	/* Every vma holds a reference to @f: none is left, so no pte points to
	 * any frame any more. */
	if (c->ready) {
		for (i = 0; i < c->nframes; i++)
			__free_page(c->frames[i]);
		for (i = 0; i < c->max_ifaces; i++)
			__free_page(c->ifaces[i]);
		kvfree(c->frames);
		kvfree(c->free);
		kvfree(c->fents);
		kfree(c->ifaces);
		if (c->backing)
			fput(c->backing);
	}
	kfree(c);
	return 0;
}

static const struct file_operations vx_fops = {
	.owner = THIS_MODULE,
	.open = vx_open,
	.release = vx_release,
	.mmap = vx_mmap,
	.read = vx_read,
	.unlocked_ioctl = vx_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice vx_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "exmap",
	.fops = &vx_fops,
	.mode = 0600,
};

module_misc_device(vx_misc);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("VirtuScale exmap-compatible explicit memory mapping device");
MODULE_AUTHOR("VirtuScale");
