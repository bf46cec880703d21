/*
 * mem.h: where pool frames come from. One small contract, two backends.
 *
 * The buffer manager sees a virtual region of `virt_pages` pages and asks a
 * backend to put a frame under a page (reading it from the image or not) and
 * to take frames away again, in batches. Like Redis's aeApi*, each backend
 * implements the same handful of calls:
 *
 *   plain  anonymous MAP_NORESERVE reservation; read = pread into the page;
 *          alloc = nothing (an untouched or dropped page reads as zeros);
 *          free = MADV_DONTNEED, page by page or the batch at once through
 *          process_madvise, whichever has lately cost less (mem.c). An
 *          evicted page reads as zeros, it does not fault.
 *   exmap  /dev/exmap (see exmap.h): read = pread on the exmap fd, alloc and
 *          free = batched EXMAP_OP_ALLOC / EXMAP_OP_FREE on the calling
 *          thread's interface page. An evicted page faults (SIGSEGV).
 *
 * Threads: every thread that calls mem_read/mem_alloc/mem_free first takes an
 * interface with mem_thread_attach and gives it back with mem_thread_detach.
 */
#ifndef VS_EXMAP_MEM_H
#define VS_EXMAP_MEM_H

#include <stdbool.h>
#include <stdint.h>

#define MEM_PAGE_SIZE 4096u

enum mem_mode { MEM_AUTO = 0, MEM_PLAIN, MEM_EXMAP };

struct mem_config {
	int fd;               /* the image, open O_RDWR (O_DIRECT when possible) */
	uint64_t virt_pages;  /* size of the region, in pages */
	uint64_t frames;      /* pool size, in pages */
	unsigned max_threads; /* interfaces to set up (exmap: at most 256) */
	enum mem_mode mode;
};

struct mem;

/* Errors: -ENODEV (exmap requested, device missing or setup refused: the log
 * says which), -ENOMEM (reservation). */
int mem_open(const struct mem_config *cfg, struct mem **ret_mem);
void mem_close(struct mem *m); /* accepts NULL */

void *mem_base(const struct mem *m);
const char *mem_name(const struct mem *m); /* "madvise" or "exmap" */

/* Does touching a page without a frame fault (exmap) rather than read zeros? */
bool mem_faults_on_evicted(const struct mem *m);

/* Interfaces: returns an interface number >= 0, or -EBUSY when all are
 * taken. */
int mem_thread_attach(struct mem *m);
void mem_thread_detach(struct mem *m, int iface);

/* Put a frame under page @pid and fill it from the image at pid*4096.
 * Returns 0, -EIO (short or failed read), -ENOMEM (no free frame: evict and
 * retry). */
int mem_read(struct mem *m, int iface, uint64_t pid);

/* Put a zeroed frame under page @pid without reading. */
int mem_alloc(struct mem *m, int iface, uint64_t pid);

/* Put zeroed frames under the @n pages @pids together: one call per run of
 * consecutive pids (plain: MADV_POPULATE_WRITE, so the pages do not take a
 * page fault each when first written; exmap: one ALLOC batch). Returns 0 or
 * what mem_alloc returns. */
int mem_alloc_many(struct mem *m, int iface, const uint64_t *pids, unsigned n);

/* Put frames under the @n consecutive pages from @first and fill them from
 * the image with as few reads as the backend allows (plain: one). */
int mem_read_run(struct mem *m, int iface, uint64_t first, unsigned n);

/* Take the frames of @n pages away (one batch: one TLB flush with exmap). */
int mem_free(struct mem *m, int iface, const uint64_t *pids, unsigned n);

#endif
