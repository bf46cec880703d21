/*
 * window.c: hit ratios over time (evsim.h, ev_replay_windows): the replay
 * cut into windows of a number of accesses and at the trace's markers, the
 * counts of each window handed to a callback. evsim -w prints them as CSV;
 * a trace the engine recorded under vsbench with ZIPF has a marker at each
 * second of the run, so -w 0 gives one window a second.
 */
#include "evsim.h"

#include <string.h>

uint64_t ev_replay_windows(const struct ev_trace *t, struct ev_policy *const *pol, uint64_t every,
			   ev_window_fn *fn, void *arg)
{
	struct ev_window w;
	uint64_t reported = 0, total = 0;
	memset(&w, 0, sizeof(w));
	for (size_t i = 0;; i++) {
		bool end = i == t->n;
		enum ev_rec kind = end ? EV_REC_MARK : (enum ev_rec)(t->rec[i] >> 56);
		uint64_t pid = end ? 0 : t->rec[i] & EV_PID_MASK;
		if (kind == EV_REC_MARK || (every && w.accesses == every)) {
			if (w.accesses) {
				fn(arg, &w);
				reported++;
				w.index++;
			}
			w.first = total;
			w.accesses = w.loads = 0;
			memset(w.hits, 0, sizeof(w.hits));
			if (end)
				break;
			if (kind == EV_REC_MARK) {
				w.phase = pid;
				continue;
			}
		}
		if (kind != EV_REC_ACCESS && kind != EV_REC_LOAD)
			continue; /* evictions; unknown kinds from a newer writer */
		total++;
		w.accesses++;
		w.loads += kind == EV_REC_LOAD;
		for (int k = 0; k < EV_NKINDS; k++)
			if (pol[k] && ev_access(pol[k], pid))
				w.hits[k]++;
	}
	return reported;
}
