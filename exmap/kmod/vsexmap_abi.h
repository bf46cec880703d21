/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vsexmap_abi.h: the /dev/exmap ABI as the kernel module sees it.
 *
 * Kept byte-for-byte compatible with the user-space header exmap/exmap.h (the
 * BUILD_BUG_ONs in vsexmap_abi_check() pin the layouts and ioctl numbers to
 * the values exmap.h asserts). See that header for the pictures.
 */
#ifndef VSEXMAP_ABI_H
#define VSEXMAP_ABI_H

#include <linux/build_bug.h>
#include <linux/ioctl.h>
#include <linux/types.h>

#define EXMAP_PAGE_BITS	     52	 /* iov input: page in bits 0..51 */
#define EXMAP_IFACE_IOVS     512 /* iovs in one interface page */
#define EXMAP_MAX_INTERFACES 256

#define EXMAP_OP_READ  0
#define EXMAP_OP_ALLOC 1
#define EXMAP_OP_FREE  2
#define EXMAP_OP_WRITE 3

struct exmap_setup {
	__s32 fd;
	__s32 max_interfaces;
	__u64 buffer_size;
	__u64 flags;
};

struct exmap_action_params {
	__u16 interface;
	__u16 iov_len;
	__u16 opcode;
	__u64 flags;
};

struct exmap_user_stats {
	__u64 flags;
	__u64 buffer_size;
	__u64 alloc_count;
	__u32 max_interfaces;
};

#define EXMAP_OFF_INTERFACE_MASK 0xe000000000000000ull
#define EXMAP_OFF_INTERFACE(i)	 (EXMAP_OFF_INTERFACE_MASK | ((__u64)(i) << 12))

#define EXMAP_IOCTL_SETUP  _IOC(_IOC_WRITE, 'k', 1, sizeof(struct exmap_setup))
#define EXMAP_IOCTL_ACTION _IOC(_IOC_WRITE, 'k', 2, sizeof(struct exmap_action_params))
#define EXMAP_IOCTL_CLONE  _IOC(_IOC_WRITE, 'k', 3, sizeof(int))
#define EXMAP_IOCTL_STATS  _IOC(_IOC_WRITE, 'k', 4, sizeof(struct exmap_user_stats))

static inline void vsexmap_abi_check(void)
{
	BUILD_BUG_ON(sizeof(struct exmap_setup) != 24);
	BUILD_BUG_ON(sizeof(struct exmap_action_params) != 16);
	BUILD_BUG_ON(sizeof(struct exmap_user_stats) != 32);
	BUILD_BUG_ON(EXMAP_IOCTL_SETUP != 0x40186b01u);
	BUILD_BUG_ON(EXMAP_IOCTL_ACTION != 0x40106b02u);
	BUILD_BUG_ON(EXMAP_IOCTL_CLONE != 0x40046b03u);
	BUILD_BUG_ON(EXMAP_IOCTL_STATS != 0x40206b04u);
}

#endif
