/* What grad() (grad.c) shares with the backward sweep (sweep.c): orders, the grads a
 * sweep keeps aside, the sort and the first-order sweep. Internal to the C core. */
#ifndef AG_SWEEP_H
#define AG_SWEEP_H

#include "arena.h"

typedef struct ag_order {
    ag_id *ids;  /* inputs before the nodes that use them; the root is last */
    size_t n;
} ag_order;

typedef struct buffer {
    void *p;
    size_t cap; /* in elements */
} buffer;

/* Room for need elements of elem bytes in b (doubling); AG_ENOMEM, b unchanged, if not. */
int ag_reserve(buffer *b, size_t need, size_t elem);

/* The grads a sweep found before it zeroed them (only the ones that were not 0), to
 * add back after it, or to restore if it fails. */
typedef struct grads_kept {
    buffer list; /* earlier_grad: an id and its grad */
    size_t n;
} grads_kept;

void ag_add_back(const grads_kept *kept);  /* backward(): earlier grads + this call's */
void ag_put_back(const grads_kept *kept);  /* grad(): every grad exactly as it was */

/* A sort of root's graph for grad(): every grad under root zeroed into kept; marked: the
 * nodes still carry the sort's mark (AG_FLAG_SORTING), which grad() clears in its last
 * pass (none of them has a Python _backward). The buffers are grad()'s until
 * ag_sorted_done. */
typedef struct ag_sorted {
    ag_order order;
    buffer order_buffer;
    grads_kept kept;
    int marked;
    void *running; /* the sweep as listed while it runs (sweep.c): root retained,
                      nodes owned when Python rules will run (invariant 10) */
} ag_sorted;

int ag_sort_for_grad(ag_id root, ag_sorted *sorted);
void ag_sorted_done(ag_sorted *sorted);

/* The first-order sweep over an order (backward's, on zeroed grads; may call Python). */
int ag_sweep_first_order(const ag_order *order, ag_id *bad);

#define AG_AHEAD 8 /* nodes fetched ahead of a sweep: a node far down the order is
                      somewhere else in memory, so each one's wait overlaps the others' */

#endif
