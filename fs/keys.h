/*
 * keys.h: how the filesystem lays itself out in one B-tree.
 *
 * Every record of the filesystem lives in a single tree (its root pid is in
 * superblock slot FS_SB_ROOT). Keys are the tuple (object id, type, offset),
 * big-endian, so memcmp orders them by inode first: all records of one inode
 * sit side by side, and within an inode, by type and then offset. The
 * encoding is the same as record.h's rec_key_u64 / rec_key_u8 / rec_key_u64.
 *
 *   OFFSET SIZE MEANING
 *        0    8 object id: the inode number, or 0 for filesystem-wide records
 *        8    1 record type (FS_REC_*)
 *        9    8 offset: meaning depends on the type (table below)
 *       17    2 (xattr value chunks only) chunk number, 1..
 *
 *   TYPE          OFFSET FIELD              VALUE
 *   INODE   0x01  0                         struct fs_inode, FS_INODE_LEN bytes
 *   XATTR   0x10  hash slot of the name     named record (below): u32 value
 *                                           length, then the value's first bytes;
 *                 + chunk number            the value's following bytes
 *   DIRENT  0x20  hash slot of the name     named record: u64 child ino, u8 DT_*
 *   SYMLINK 0x30  byte offset of the chunk  target bytes (no terminator)
 *   INLINE  0x40  0                         file bytes [0, n); n <= FS_INLINE_MAX
 *   EXTENT  0x50  byte offset in the file   u64 first pid, u32 pages, u32 flags(0)
 *   ORPHAN  0x70  inode number (object 0)   empty: the inode has no links left
 *
 * Named records (dirents, xattrs) are found by a 62-bit hash of the name;
 * the first free slot at or after the hash holds the record (linear probing;
 * a 62-bit hash makes a second probe rare). A removed record whose next slot
 * is in use becomes a tombstone (name length 0) so that probe chains through
 * it stay intact; tombstones with a free slot after them are removed. The
 * slot doubles as the readdir cookie, so cookies are stable across remounts
 * and across inserts of other names. Slots start at FS_SLOT_MIN: cookies 0, 1
 * and 2 belong to "start", "." and "..".
 *
 *   named record value:
 *   OFFSET SIZE MEANING
 *        0    1 name length n (1..255); 0 marks a tombstone (nothing follows)
 *        1    n the name
 *      1+n    . type-specific payload (dirent: 8 ino + 1 type; xattr: 4 length
 *               + value bytes)
 *
 * Values are little-endian. An inode record (struct fs_inode on disk):
 *
 *   OFFSET SIZE MEANING
 *        0    4 mode (S_IFMT type bits and permissions)
 *        4    4 uid
 *        8    4 gid
 *       12    4 nlink
 *       16    8 size in bytes
 *       24    8 data pages held (extents; inline data counts 0)
 *       32    8 parent directory (directories only; 0 otherwise)
 *       40    8 rdev (character and block devices)
 *       48   12 atime: i64 seconds, u32 nanoseconds
 *       60   12 mtime
 *       72   12 ctime
 *       84   12 btime (creation)
 *       96    4 flags: FS_INODE_INLINE (bit 0) the file has an INLINE record;
 *               FS_INODE_LINKED (bit 1) it has had more than one name
 *      100    4 reserved, 0
 *      104    8 generation (0: inode numbers are never reused)
 *      112      end (FS_INODE_LEN)
 *
 * File data: a file's bytes are either one INLINE record (small files that
 * never had extents) or pool pages mapped by EXTENT records; never both.
 * Bytes past the end of file inside a mapped page are kept zero (truncate
 * and punch zero them), so growing a file never exposes old bytes.
 */
#ifndef VS_FS_KEYS_H
#define VS_FS_KEYS_H

#include <stdint.h>
#include <string.h>

/* Record types. */
#define FS_REC_INODE   0x01
#define FS_REC_XATTR   0x10
#define FS_REC_DIRENT  0x20
#define FS_REC_SYMLINK 0x30
#define FS_REC_INLINE  0x40
#define FS_REC_EXTENT  0x50
#define FS_REC_ORPHAN  0x70

#define FS_KEY_LEN	 17 /* (object, type, offset) */
#define FS_KEY_CHUNK_LEN 19 /* + u16 chunk number (xattr chunks) */

/* Reserved inode numbers. 1 is FUSE's root; 2..4 are the pseudo-files of the
 * control directory; numbers below FS_INO_FIRST are never handed out. */
#define FS_INO_ROOT    1
#define FS_INO_CTLDIR  2 /* /.virtuscale */
#define FS_INO_STATS   3 /* /.virtuscale/stats */
#define FS_INO_CONTROL 4 /* /.virtuscale/control */
#define FS_INO_FIRST   16

/* Superblock slots used by the filesystem (see bm_sb_get). */
#define FS_SB_MAGIC	0 /* FS_MAGIC once fs_format has run */
#define FS_SB_ROOT	1 /* root pid of the tree */
#define FS_SB_INO_NEXT	2 /* next inode number (exact after a clean close) */
#define FS_SB_INO_LIMIT 3 /* numbers below this may have been handed out */
#define FS_SB_INODES	4 /* inode count (recounted after an unclean close) */
#define FS_SB_MOUNTS	5 /* times mounted */
#define FS_SB_RESERVED	6 /* root's reserve: FS_SB_SET | tenths of a percent;
			     0 (images from before): FS_RESERVED_DEFAULT */
#define FS_SB_SET	(UINT64_C(1) << 63)
#define FS_RESERVED_DEFAULT 50 /* 5.0%, as ext4 */

#define FS_MAGIC UINT64_C(0x5653465300000001) /* "VSFS", layout version 1 */

/* Inode numbers are reserved this many at a time: the limit is persisted
 * before any number below it is used, so a crash never reissues one. */
#define FS_INO_BATCH (UINT64_C(1) << 20)

#define FS_SLOT_MIN  16	  /* lowest dirent / xattr slot */
#define FS_NAME_MAX  255  /* bytes in a file or xattr name */
#define FS_PROBE_MAX 4096 /* longest probe chain we follow */
/* Inline files and symlink chunks stay below BT_INLINE_MAX with their key,
 * so they sit in the leaf instead of an overflow page of their own (a file
 * of more bytes costs a whole page either way, so it might as well be a
 * data page). */
#define FS_INLINE_MAX	   1000	 /* largest inline file */
#define FS_SYMLINK_MAX	   4095	 /* longest symlink target */
#define FS_SYMLINK_CHUNK   1000	 /* target bytes per SYMLINK record */
#define FS_XATTR_VALUE_MAX 65536 /* longest xattr value */

#define FS_INODE_LEN	  112
#define FS_INODE_INLINE	  1u /* inode flag: an INLINE record holds the data */
#define FS_INODE_LINKED	  2u /* inode flag: has had more than one name */
#define FS_EXTENT_LEN	  16
#define FS_DIRENT_PAYLOAD 9 /* u64 ino + u8 type */
#define FS_XATTR_HEAD	  4 /* u32 value length */

/* Largest extent: keeps one extent's pages addressable by a u32 and bounds
 * the work of a single extent split. */
#define FS_EXTENT_MAX_PAGES (UINT32_C(1) << 20)

static inline void fs_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t fs_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void fs_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t fs_get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline void fs_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint32_t fs_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Build the key (@obj, @type, @off) into @k (FS_KEY_LEN bytes). */
static inline void fs_key(uint8_t *k, uint64_t obj, uint8_t type, uint64_t off)
{
	fs_put_be64(k, obj);
	k[8] = type;
	fs_put_be64(k + 9, off);
}

static inline uint64_t fs_key_obj(const uint8_t *k)
{
	return fs_get_be64(k);
}

static inline uint64_t fs_key_off(const uint8_t *k)
{
	return fs_get_be64(k + 9);
}

/* Does the key of @klen bytes belong to (@obj, @type)? */
static inline int fs_key_is(const uint8_t *k, unsigned klen, uint64_t obj, uint8_t type)
{
	return klen >= FS_KEY_LEN && k[8] == type && fs_get_be64(k) == obj;
}

#endif
