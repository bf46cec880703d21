/*
 * tpcc.h: a TPC-C-like engine workload over typed-record B-trees.
 *
 * Written from the TPC-C specification (revision 5.11): the nine tables
 * (warehouse, district, customer, history, new-order, order, order-line,
 * item, stock) and the two secondary indexes the transactions need
 * (customer by (w, d, last, first), order by (w, d, customer, order)), each
 * one B-tree in one pool through record.h; the spec's population (clause
 * 4.3.3), random generators (NURand, last-name syllables, a-strings) and
 * the five transactions in the standard mix (clause 5.2.3):
 *
 *   new-order 45%, payment 43%, order-status 4%, delivery 4%, stock-level 4%
 *
 * This is an engine benchmark, as vmcache's TPC-C is: there are no
 * transactions in the database sense. Every B-tree call is atomic on its
 * own and nothing is logged or rolled back; a new-order with an invalid item
 * (1%, clause 2.4.1.4) checks every item before writing anything, so
 * "rolling it back" is stopping early. The one place where interleaving
 * would break the spec's consistency conditions is the per-district order
 * queue (o_id allocation against the new-order rows that delivery takes),
 * which a per-district mutex in memory serializes; it is uncontended unless
 * several threads share a home warehouse. No keying or think times.
 *
 * Thread safety: one struct tpcc is shared by all threads; each thread runs
 * its own struct tpcc_term. Loading different warehouses in parallel is fine
 * (after tpcc_load_items); tpcc_check must run alone.
 *
 * Errors: 0 or a negative errno from the engine (btree.h, record.h);
 * -EUCLEAN from tpcc_check when a consistency condition fails.
 */
#ifndef VS_BENCH_TPCC_H
#define VS_BENCH_TPCC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/bm.h"

/* Warehouse ids are 16-bit in the keys. */
#define TPCC_MAX_WAREHOUSES 65535u

/* Population sizes. tpcc_size_standard gives the spec's; smaller ones are
 * for quick tests only and do not make a TPC-C database. */
struct tpcc_size {
	uint32_t items;	     /* 100,000 */
	uint32_t customers;  /* per district: 3,000 */
	uint32_t orders;     /* initial orders per district: 3,000 */
	uint32_t new_orders; /* undelivered among them (the last ones): 900 */
};

void tpcc_size_standard(struct tpcc_size *ret);

/* Scale every count down by @div (>= 1; 1 is the standard population),
 * keeping at least 10 items and customers. */
void tpcc_size_scaled(struct tpcc_size *ret, unsigned div);

struct tpcc;

/* Create the eleven empty trees in @bm for @warehouses warehouses
 * (1..TPCC_MAX_WAREHOUSES). @seed fixes the load's and the run's NURand
 * constants. Errors: -EINVAL, -ENOMEM, the errors of bt_create. */
int tpcc_create(struct bm *bm, unsigned warehouses, const struct tpcc_size *size, uint64_t seed,
		struct tpcc **ret_db);

/* Free the in-memory handle (the trees stay in the pool). Accepts NULL. */
void tpcc_destroy(struct tpcc *db);

/* Load the item table. Must finish before any warehouse is loaded. */
int tpcc_load_items(struct tpcc *db);

/* Load warehouse @w (1-based) with its districts, customers, history,
 * orders, order lines, new-orders and stock. Different warehouses may be
 * loaded from different threads at once. */
int tpcc_load_warehouse(struct tpcc *db, unsigned w);

enum tpcc_tx {
	TPCC_NEW_ORDER,
	TPCC_PAYMENT,
	TPCC_ORDER_STATUS,
	TPCC_DELIVERY,
	TPCC_STOCK_LEVEL,
	TPCC_TX_KINDS,
};

extern const char *const tpcc_tx_names[TPCC_TX_KINDS];

/* One terminal: a thread's generator state and counters. */
struct tpcc_term {
	struct tpcc *db;
	unsigned id;
	unsigned home_w;
	unsigned level_d; /* stock-level's district, fixed per terminal (2.8.1.1) */
	uint64_t rng;
	uint64_t hist_seq;
	uint64_t done[TPCC_TX_KINDS];
	uint64_t rollbacks; /* new-orders stopped at an invalid item */
};

/* Set up terminal @id (0-based) on home warehouse @home_w (1-based). */
void tpcc_term_init(struct tpcc_term *t, struct tpcc *db, unsigned id, unsigned home_w,
		    uint64_t seed);

/* Pick one transaction from the mix and run it. 0 (including a rolled-back
 * new-order) or an engine error. */
int tpcc_term_run(struct tpcc_term *t);

/* Run the consistency conditions of clause 3.3.2 that this schema keeps:
 *   1  W_YTD = sum(D_YTD) per warehouse
 *   2  D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID) per district
 *   3  max(NO_O_ID) - min(NO_O_ID) + 1 = count of new-order rows per district
 *   4  sum(O_OL_CNT) = count of order-line rows per district
 * and, ours, that each secondary index has as many rows as its table:
 *   5  customer-by-name rows = customer rows
 *   6  order-by-customer rows = order rows
 * Prints "check N ...: PASS|FAIL" on @out with the first offending
 * warehouse or district. Returns 0, -EUCLEAN when any failed, or an engine
 * error. Must run with no terminal active. */
int tpcc_check(struct tpcc *db, FILE *out);

#endif
