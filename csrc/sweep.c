/* Whole-graph work: the topological sort, the backward sweep, and the cache of
 * topological orders, compiled to tapes (tape.c), that replay runs.
 *
 * Everything here costs time proportional to the subgraph reachable from the root,
 * never to the arena's size, and nothing recurses on graph depth. The backward sweep
 * may call Python (a Value's own _backward, invariant 9), which may run any code,
 * another sweep included: a sweep owns the buffers it works in for its whole length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "core.h"
#include "higher.h"
#include "nodes.h"
#include "ops.h"
#include "sweep.h"
#include "tape.h"

/* ---- scratch buffers ----
 * Reused from call to call, so a sweep over a big graph does not fault its way
 * through fresh pages every time. A sweep that calls Python takes the ones it keeps
 * (take) and puts them back after (put_back): a sweep started meanwhile, nested or
 * in another thread, finds them empty and makes its own. */

static buffer stack_buf, order_buf, grads_buf, address_buf;

int ag_reserve(buffer *b, size_t need, size_t elem)
{
    if (need <= b->cap)
        return AG_OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    void *grown = realloc(b->p, cap * elem);
    if (!grown)
        return AG_ENOMEM;
    b->p = grown;
    b->cap = cap;
    return AG_OK;
}

static buffer take(buffer *shared)
{
    buffer mine = *shared;
    *shared = (buffer){0};
    return mine;
}

static void put_back(buffer *shared, buffer mine)
{
    if (shared->p)
        free(mine.p); /* another sweep left its own there meanwhile */
    else
        *shared = mine;
}

/* Scratch grown for a far bigger graph than the one just swept goes back to the
 * system, so one huge backward does not pin its memory for the life of the process,
 * while sweeping graphs of one size keeps reusing the same pages. */
#define AG_SCRATCH_KEEP ((size_t)1 << 20) /* elements always worth keeping */

static void shrink_scratch(size_t used);

/* When the arena gives blocks back: scratch sized for a dead graph goes too. */
static void scratch_fit(size_t live) { shrink_scratch(live); }

static void shrink_scratch(size_t used)
{
    buffer *all[] = {&stack_buf, &order_buf, &grads_buf, &address_buf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->cap > AG_SCRATCH_KEEP && all[i]->cap / 8 > used) {
            free(all[i]->p);
            *all[i] = (buffer){0};
        }
}

typedef struct earlier_grad earlier_grad;

static size_t scratch_bytes(void)
{
    return (stack_buf.cap + order_buf.cap) * sizeof(ag_id) + grads_buf.cap * (sizeof(ag_id) + sizeof(double))
           + address_buf.cap * sizeof(ag_node *);
}

/* The grads a backward call found before it zeroed them, to add back after the sweep
 * (or to restore if it fails). Most are 0 (fresh graphs, or after zero_grad), so only
 * the others are kept. */
struct earlier_grad {
    ag_id id;
    double grad;
};

/* Every grad is written, -0.0 included: grad() reads the field's bits afterwards (as
 * pool indices), and -0.0 == 0.0 has its sign bit set. A -0.0 is kept, so that grad()
 * puts it back as it was. */
AG_INLINE int zero_and_keep(ag_id id, ag_node *node, grads_kept *kept)
{
    if (node->grad != 0.0 || signbit(node->grad)) {
        if (ag_reserve(&kept->list, kept->n + 1, sizeof(earlier_grad)) != AG_OK)
            return AG_ENOMEM;
        ((earlier_grad *)kept->list.p)[kept->n++] = (earlier_grad){id, node->grad};
    }
    node->grad = 0.0;
    return AG_OK;
}

void ag_add_back(const grads_kept *kept)
{
    const earlier_grad *e = kept->list.p;
    for (size_t i = 0; i < kept->n; i++)
        ag_node_at(e[i].id)->grad += e[i].grad;
}

void ag_put_back(const grads_kept *kept)
{
    const earlier_grad *e = kept->list.p;
    for (size_t i = 0; i < kept->n; i++)
        ag_node_at(e[i].id)->grad = e[i].grad;
}

/* ---- topological sort ---- */

/* Depth-first post-order from root with an explicit stack. Entering a node pushes a
 * marker for it (its id with AG_SORT_EXIT set), then its inputs not yet entered (a node
 * may be pushed more than once; later copies are skipped). When the marker comes back
 * to the top, everything above it is in the order, so the node joins it: an input still
 * unfinished would be below its marker, a cycle, impossible in a DAG (invariant 1).
 * Markers keep the exit from touching the node again: on a deep chain the node has long
 * left the cache by then. Relies on invariant 3 (sort flags clear on entry) and
 * restores it before returning, on failure too. Calls no Python. */
#define AG_SORT_EXIT ((ag_id)1 << 31) /* ids stay below it: see AG_MAX_NODES */

static uint64_t sorts_started; /* numbers the sorts, for ag_row.sorted_in */

/* Pushes the inputs of a dot node over rows that are not marked yet, in order, as for
 * any node, with one shortcut: marks are only ever set during a sort, so once this
 * sort has found every node of a row marked, they stay marked to its end, and the
 * row's other dot nodes skip its positions (even: the weight row's, odd: the input
 * row's). A layer run over a batch makes many dot nodes over each row. */
static size_t push_rows_dot_inputs(const ag_dot_rows *rows, const ag_id *inputs, size_t n, ag_id *stack,
                                   size_t depth, uint64_t sort)
{
    ag_row *row[2] = {rows->weights, rows->xs}; /* by position parity */
    int done[2] = {row[0]->sorted_in == sort, row[1]->sorted_in == sort};
    int all_marked[2] = {1, 1};
    if (done[0] && done[1])
        return depth;
    size_t first = done[0] ? 1 : 0, step = done[0] || done[1] ? 2 : 1;
    for (size_t i = first; i < n; i += step)
        if (!(ag_node_at(inputs[i])->flags & AG_FLAG_SORTING)) {
            stack[depth++] = inputs[i];
            all_marked[i % 2] = 0;
        }
    for (int k = 0; k < 2; k++)
        if (!done[k] && all_marked[k])
            row[k]->sorted_in = sort;
    return depth;
}

/* The order is written to order_buf (valid until the next sort). With kept, each node
 * also has its grad zeroed when entered (backward: the node is in cache then), and a
 * node that a running sweep owns stops the sort (AG_EBUSY: its grad field holds that
 * sweep's adjoint, invariant 10); when the sweep to come runs Python rules, the sort
 * marks every node AG_FLAG_OWNED (*owned), for the caller to clear when it ends. With
 * keep_marks, the nodes keep their AG_FLAG_SORTING after a successful sort when none
 * of them has a Python _backward (*kept_marks says whether they did): the caller
 * clears them in a pass it makes anyway, and no Python code can run before (Python
 * could start another sort, which needs them clear: invariant 3). */
static int topo_sort(ag_id root, ag_order *out, grads_kept *kept, int keep_marks, int *kept_marks,
                     int *owned)
{
    size_t depth = 0, n = 0;
    int status = AG_OK, python = 0;
    uint64_t sort = ++sorts_started;

    if (ag_reserve(&stack_buf, 1, sizeof(ag_id)) != AG_OK)
        return AG_ENOMEM;
    ag_id *stack = stack_buf.p;
    stack[depth++] = root;

    while (depth) {
        ag_id top = stack[--depth];
        if (top & AG_SORT_EXIT) {
            if (ag_reserve(&order_buf, n + 1, sizeof(ag_id)) != AG_OK) {
                depth++; /* keep the marker so its node's flag is cleared below */
                status = AG_ENOMEM;
                break;
            }
            ((ag_id *)order_buf.p)[n++] = top & ~AG_SORT_EXIT;
            continue;
        }
        ag_node *node = ag_node_at(top);
        if (node->flags & AG_FLAG_SORTING)
            continue;
        /* Owned: a running sweep's adjoints are in its grad. A sort that zeroes grads
         * (kept) refuses; one that reads none (forward's, graph_size's) walks it as any
         * other node: skipping it would leave it and its inputs out of the order. */
        if ((node->flags & AG_FLAG_OWNED) && kept) {
            status = AG_EBUSY;
            break;
        }
        size_t n_inputs;
        const ag_id *inputs = ag_inputs_of(node, &n_inputs);
        if (ag_reserve(&stack_buf, depth + 1 + n_inputs, sizeof(ag_id)) != AG_OK) {
            status = AG_ENOMEM;
            break;
        }
        if (kept && zero_and_keep(top, node, kept) != AG_OK) {
            status = AG_ENOMEM;
            break;
        }
        stack = stack_buf.p;
        python |= node->flags & AG_FLAG_PYRULE;
        node->flags |= AG_FLAG_SORTING;
        stack[depth++] = top | AG_SORT_EXIT;
        const ag_dot_rows *rows = ag_rows_of(node);
        if (rows) {
            depth = push_rows_dot_inputs(rows, inputs, n_inputs, stack, depth, sort);
            continue;
        }
        for (size_t i = 0; i < n_inputs; i++)
            if (!(ag_node_at(inputs[i])->flags & AG_FLAG_SORTING))
                stack[depth++] = inputs[i];
    }

    /* The marks stay until the sort is done: they are also how it knows what it has seen. */
    ag_id *ids = order_buf.p;
    for (size_t i = 0; i < depth; i++) /* after a failure: the nodes entered, not left */
        if (stack[i] & AG_SORT_EXIT)
            ag_node_at(stack[i] & ~AG_SORT_EXIT)->flags &= (uint16_t)~AG_FLAG_SORTING;
    keep_marks = keep_marks && status == AG_OK && !python;
    uint16_t own = status == AG_OK && python && kept ? AG_FLAG_OWNED : 0;
    for (size_t i = 0; i < n && !keep_marks; i++) {
        ag_node *node = ag_node_at(ids[i]);
        node->flags = (uint16_t)((node->flags & ~AG_FLAG_SORTING) | own);
    }
    if (kept_marks)
        *kept_marks = keep_marks;
    if (owned)
        *owned = own != 0;
    out->ids = ids;
    out->n = n;
    return status;
}

/* ---- the cache of orders, for roots that replay with forward() ----
 * A cached order stays valid while its root lives: the root keeps every node in it
 * alive (invariant 2) and graphs never change shape (invariant 1). The cache holds the
 * most recently used roots; the arena tells order_cache_forget when a root dies. A
 * slot that a sweep is using (in_use) is never evicted: the sweep may call Python,
 * and Python may replay other roots meanwhile. */

#define AG_ORDER_CACHE_SIZE 16

typedef struct cached_order {
    ag_id root;      /* 0: empty slot */
    ag_order order;
    ag_tape tape;
    uint64_t last_used;
    int in_use;
} cached_order;

static cached_order cache[AG_ORDER_CACHE_SIZE];
static size_t n_cached;
static uint64_t cache_clock;
static size_t cache_bytes;

static cached_order *cache_find(ag_id root)
{
    if (!n_cached)
        return NULL;
    for (size_t i = 0; i < AG_ORDER_CACHE_SIZE; i++)
        if (cache[i].root == root) {
            cache[i].last_used = ++cache_clock;
            return &cache[i];
        }
    return NULL;
}

static void cache_drop(cached_order *slot)
{
    cache_bytes -= slot->order.n * sizeof(ag_id) + slot->tape.bytes;
    free(slot->order.ids);
    ag_tape_free(&slot->tape);
    ag_node_at(slot->root)->flags &= (uint16_t)~AG_FLAG_ORDER;
    *slot = (cached_order){0};
    n_cached--;
}

/* The slot for a new entry: an empty one, else the least recently used that no sweep
 * is using (dropped first); NULL if every slot is in use. */
static cached_order *cache_slot(void)
{
    cached_order *victim = NULL;
    for (size_t i = 0; i < AG_ORDER_CACHE_SIZE; i++) {
        if (!cache[i].root)
            return &cache[i];
        if (!cache[i].in_use && (!victim || cache[i].last_used < victim->last_used))
            victim = &cache[i];
    }
    if (victim)
        cache_drop(victim);
    return victim;
}

/* AG_OK, or why the graph cannot be replayed, at its first such node (*bad): a node
 * whose value was computed in Python has no forward to run again (AG_ENOREPLAY), and a
 * derivative built for the values of the time would not follow new ones (AG_ECHOSEN). */
static int replayable(const ag_order *order, ag_id *bad)
{
    for (size_t i = 0; i < order->n; i++) {
        const ag_node *node = ag_node_at(order->ids[i]);
        size_t n;
        ag_inputs_of(node, &n);
        *bad = order->ids[i];
        if (ag_op_is_hand_made(node->op) && n > 0)
            return AG_ENOREPLAY;
        if (node->flags & AG_FLAG_CHOSEN)
            return AG_ECHOSEN;
    }
    return AG_OK;
}

/* A replay run on a tape made for it alone, then freed: every slot of the cache is in
 * use (16 sweeps running Python rules over replayed roots, in threads or nested). The
 * order is in order_buf, which nothing takes meanwhile: no Python code runs. */
static int forward_uncached(const ag_order *order)
{
    ag_tape tape;
    int status = ag_tape_make(order, &tape);
    if (status != AG_OK) {
        ag_fail(status, 0);
        return status;
    }
    ag_id bad = 0;
    status = ag_tape_forward(&tape, ag_anomaly_mode(), &bad);
    ag_tape_free(&tape);
    shrink_scratch(order->n);
    return status;
}

/* Sorts root's graph, checks it can be replayed, compiles its tape and caches both;
 * with no slot free, replays it uncached (*added NULL). */
static int cache_add(ag_id root, cached_order **added)
{
    ag_order order;
    ag_tape tape;
    ag_id bad = 0;
    *added = NULL;
    int status = topo_sort(root, &order, NULL, 0, NULL, NULL);
    if (status != AG_OK)
        return status;
    if ((status = replayable(&order, &bad)) != AG_OK) {
        ag_fail(status, bad);
        return status;
    }
    cached_order *slot = cache_slot();
    if (!slot)
        return forward_uncached(&order);
    status = ag_tape_make(&order, &tape);
    if (status != AG_OK)
        return status;
    order_buf = (buffer){0}; /* the cache owns this order now */
    ag_id *fitted = realloc(order.ids, (order.n ? order.n : 1) * sizeof(ag_id));
    if (fitted)
        order.ids = fitted;
    *slot = (cached_order){root, order, tape, ++cache_clock, 0};
    ag_node_at(root)->flags |= AG_FLAG_ORDER;
    cache_bytes += order.n * sizeof(ag_id) + tape.bytes;
    n_cached++;
    *added = slot;
    return AG_OK;
}

static void order_cache_forget(ag_id id)
{
    if (!n_cached)
        return;
    for (size_t i = 0; i < AG_ORDER_CACHE_SIZE; i++)
        if (cache[i].root == id)
            cache_drop(&cache[i]);
}

static size_t order_cache_bytes(void) { return cache_bytes + scratch_bytes(); }

/* ---- the order's own sweep ---- */

static inline ag_node *order_node(const ag_order *order, size_t i) { return ag_node_at(order->ids[i]); }

/* A node's inputs by address, looked up now, into `pair` for one or two inputs or into
 * address_buf for an n-ary node (read before any Python runs: a nested sweep may move
 * it). NULL when address_buf cannot grow. */
static inline ag_node *const *inputs_by_address(const ag_node *node, size_t *n, ag_node *pair[2])
{
    const ag_id *ids = ag_inputs_of(node, n);
    ag_node **in = pair;
    if (*n > 2) {
        if (ag_reserve(&address_buf, *n, sizeof(ag_node *)) != AG_OK)
            return NULL;
        in = address_buf.p;
    }
    for (size_t k = 0; k < *n; k++)
        in[k] = ag_node_at(ids[k]);
    return in;
}

/* ---- backward ---- */

/* One node's chain-rule step as its op defines it. */
AG_INLINE int op_step(ag_node *node, int check)
{
    const ag_dot_rows *rows = ag_rows_of(node);
    if (rows) /* a layer's dot node: its inputs by address in its rows */
        return ag_dot_rows_backward(node->grad, rows, check) ? AG_OK : AG_EANOMALY;
    size_t n;
    ag_node *pair[2] = {NULL, NULL};
    ag_node *const *in = inputs_by_address(node, &n, pair);
    if (!in)
        return AG_ENOMEM;
    return ag_propagate(node, in, n, check) ? AG_OK : AG_EANOMALY;
}

/* A node's chain-rule step in a sweep: its Python _backward if it has one, else its op's. */
AG_INLINE int step(ag_node *node, int check)
{
    if (node->flags & AG_FLAG_PYRULE) {
        int status = ag_hooks.run_rule(node);
        if (status != AG_ENORULE)
            return status;
    }
    return op_step(node, check);
}

/* Asks for the node AG_AHEAD places further down the order before the sweep gets
 * there. Changes nothing: the order and the arithmetic are the same. AG_INLINE, not
 * static inline: GCC's pure-const analysis counts a prefetch as no side effect, so a
 * helper that only prefetches is "pure", and its calls were dropped (the version that
 * also asked for the inputs was never in the binary). Its inputs are not asked for:
 * in a depth-first order they were swept just before, and asking cost the tree-shaped
 * graph 6% for 5% on the random DAG (bench_bigdag.py's graphs). The node alone took
 * the DAG's first backward from 75 to 72 ns/node and left the tree's as it was. */
AG_INLINE void fetch_ahead(const ag_order *order, size_t i)
{
    if (i >= AG_AHEAD)
        AG_PREFETCH(order_node(order, i - AG_AHEAD));
}

/* The sweep over an order, in reverse. May call Python. With unmark, each node's sort
 * mark is cleared as it is swept (it is in cache then), which saves backward a pass
 * over the graph; on failure the rest are cleared. */
static int sweep_order(const ag_order *order, int check, int unmark, ag_id *bad)
{
    for (size_t i = order->n; i-- > 0;) {
        fetch_ahead(order, i);
        ag_node *node = order_node(order, i);
        if (unmark)
            node->flags &= (uint16_t)~AG_FLAG_SORTING;
        int status = step(node, check);
        if (status != AG_OK) {
            *bad = order->ids[i];
            for (size_t k = 0; unmark && k < i; k++)
                order_node(order, k)->flags &= (uint16_t)~AG_FLAG_SORTING;
            return status;
        }
    }
    return AG_OK;
}

/* ---- sweeps that run Python ----
 * A sweep that runs Python rules keeps its adjoints in the grad fields, where the
 * rules read and write them, and marks its nodes AG_FLAG_OWNED until it ends
 * (invariant 10). The running sweeps are listed with their thread, so that a fork
 * can undo in the child what threads that do not exist there left half-done. */
typedef struct running_sweep {
    ag_id root;                 /* retained for the sweep's length */
    const ag_order *owns;       /* the nodes it marked owned, or NULL */
    const grads_kept *kept;     /* with owns: their grads from before the call */
    cached_order *hit;          /* the cached tape it uses, or NULL */
    const void *thread;
    struct running_sweep *next;
} running_sweep;

static running_sweep *running;
static _Thread_local char this_thread; /* its address tells threads apart */

static void sweep_begin(running_sweep *r, ag_id root, cached_order *hit)
{
    *r = (running_sweep){root, NULL, NULL, hit, &this_thread, running};
    running = r;
    ag_retain(root); /* a rule may drop every Value naming the root */
    if (hit)
        hit->in_use++;
}

static void disown(const ag_order *order)
{
    for (size_t i = 0; i < order->n; i++)
        ag_node_at(order->ids[i])->flags &= (uint16_t)~AG_FLAG_OWNED;
}

/* Ends r: its marks cleared, its root released (which may run Python: last). */
static void sweep_end(running_sweep *r)
{
    running_sweep **link = &running;
    while (*link != r)
        link = &(*link)->next;
    *link = r->next;
    if (r->owns)
        disown(r->owns);
    if (r->hit)
        r->hit->in_use--;
    ag_release(r->root);
}

/* In the child of a fork only the forking thread runs on: the sweeps of the others
 * will never end, so their grads go back to what they were before the call, and
 * their marks and tapes are let go here (their roots stay retained: a leak, never a
 * free of what may still be used). The order and kept grads they point at are in the
 * dead threads' frames and buffers, which the child has a copy of and nothing reuses. */
static void sweeps_after_fork(void)
{
    running_sweep *mine = NULL;
    for (running_sweep *r = running, *next; r; r = next) {
        next = r->next;
        if (r->thread == &this_thread) {
            r->next = mine;
            mine = r;
            continue;
        }
        if (r->owns) { /* their grads hold its half-summed adjoints: as before the call */
            for (size_t i = 0; i < r->owns->n; i++)
                ag_node_at(r->owns->ids[i])->grad = 0.0;
            ag_put_back(r->kept);
            disown(r->owns);
        }
        if (r->hit)
            r->hit->in_use--;
    }
    running = NULL; /* the forking thread's own, in their order, are put back */
    while (mine) {
        running_sweep *r = mine;
        mine = r->next;
        r->next = running;
        running = r;
    }
}

/* The nodes of a cached order, zeroed into kept as the sort would, checked and owned
 * as topo_sort does (AG_EBUSY when another sweep owns one). */
static int zero_cached(const ag_order *order, grads_kept *kept, int *owned)
{
    int python = 0;
    for (size_t i = 0; i < order->n; i++) {
        ag_node *node = order_node(order, i);
        if (node->flags & AG_FLAG_OWNED)
            return AG_EBUSY;
        python |= node->flags & AG_FLAG_PYRULE;
        if (zero_and_keep(order->ids[i], node, kept) != AG_OK)
            return AG_ENOMEM;
    }
    for (size_t i = 0; python && i < order->n; i++)
        order_node(order, i)->flags |= AG_FLAG_OWNED;
    *owned = python != 0;
    return AG_OK;
}

/* d root / d node for every node under root, added to grad once per call (root: +1),
 * like PyTorch. The sweep runs on zeroed grads so earlier grads never leak into the
 * chain rule: walking the order backwards, a node's adjoint is complete when it is
 * reached (all its users come after it in the order), so it passes its contributions
 * on; the earlier grads are added back at the end. The order is the sort's, which
 * depends on the graph alone (not on where its nodes happen to sit), so the same
 * program always gives the same bits, and replay sweeps the same order. If anything
 * fails (an anomaly, memory, a Python _backward that raised), every grad is restored. */
int ag_backward(ag_id root)
{
    int check = ag_anomaly_mode(), status = AG_OK, owned = 0;
    cached_order *hit = cache_find(root);
    if (hit && !check && ag_tape_backward(&hit->tape, running != NULL))
        return AG_OK; /* a root that replays, with no Python rule and no anomaly check */
    ag_id bad = 0;
    grads_kept kept = {take(&grads_buf), 0};
    buffer my_order = {0};
    ag_order order = {NULL, 0};
    running_sweep me;
    sweep_begin(&me, root, hit);
    int marked = 0; /* the sort left its marks for the sweep to clear */
    if (hit) { /* the cached order: no sort */
        order = hit->order;
        status = zero_cached(&order, &kept, &owned);
    } else {
        status = topo_sort(root, &order, &kept, 1, &marked, &owned);
        my_order = take(&order_buf); /* order.ids points into it */
    }
    if (owned) {
        me.owns = &order;
        me.kept = &kept;
    }
    if (status == AG_OK) {
        ag_node_at(root)->grad = 1.0;
        status = sweep_order(&order, check, marked, &bad);
        if (status != AG_OK) /* every grad under the root was zeroed: zero, then restore */
            for (size_t i = 0; i < order.n; i++)
                order_node(&order, i)->grad = 0.0;
    }
    ag_add_back(&kept); /* after a failed sort: the grads zeroed so far */
    if (status != AG_OK && status != AG_EPYTHON)
        ag_fail(status, status == AG_EANOMALY ? bad : 0);
    put_back(&grads_buf, kept.list);
    size_t swept = order.n;
    sweep_end(&me); /* before the order goes back: it clears the marks through it */
    put_back(&order_buf, my_order);
    shrink_scratch(swept);
    return status;
}

/* ---- what grad() (grad.c) runs on ---- */

int ag_sort_for_grad(ag_id root, ag_sorted *sorted)
{
    int owned = 0;
    sorted->kept = (grads_kept){take(&grads_buf), 0};
    sorted->marked = 0;
    sorted->running = malloc(sizeof(running_sweep));
    if (!sorted->running) {
        sorted->order_buffer = (buffer){0};
        sorted->order = (ag_order){NULL, 0};
        return AG_ENOMEM;
    }
    sweep_begin(sorted->running, root, NULL);
    int status = topo_sort(root, &sorted->order, &sorted->kept, 1, &sorted->marked, &owned);
    sorted->order_buffer = take(&order_buf); /* order.ids points into it */
    if (owned) {
        ((running_sweep *)sorted->running)->owns = &sorted->order;
        ((running_sweep *)sorted->running)->kept = &sorted->kept;
    }
    return status;
}

void ag_sorted_done(ag_sorted *sorted)
{
    if (sorted->running) {
        sweep_end(sorted->running);
        free(sorted->running);
    }
    put_back(&order_buf, sorted->order_buffer);
    put_back(&grads_buf, sorted->kept.list);
    shrink_scratch(sorted->order.n);
}

int ag_sweep_first_order(const ag_order *order, ag_id *bad)
{
    return sweep_order(order, ag_anomaly_mode(), 0, bad);
}

/* Micrograd's v._backward() for a node made by a C op: its one chain-rule step, with
 * the grad it has now. Always the op's, whatever _backward the node has been given
 * since: as micrograd's closure, a step saved before `v._backward = hook` is the op's,
 * so a hook that calls it does not call itself. */
int ag_backward_step(ag_id id)
{
    int status = op_step(ag_node_at(id), ag_anomaly_mode());
    if (status != AG_OK && status != AG_EPYTHON)
        ag_fail(status, status == AG_EANOMALY ? id : 0);
    return status;
}

/* ---- forward replay ---- */

/* Recomputes every node under root from the current data of its leaves, in the
 * cached order, through its tape (compiled on the first call). Control flow that ran
 * in Python is not re-run; branches inside ops (relu) are. A graph holding a node made
 * by hand (Value(data, children, ...)) is refused before anything changes. With
 * anomaly mode on, stops at the first nan or inf. Calls no Python. */
int ag_forward(ag_id root)
{
    cached_order *hit = cache_find(root);
    if (!hit) {
        int status = cache_add(root, &hit);
        if (status != AG_OK) {
            if (status != AG_ENOREPLAY && status != AG_ECHOSEN && status != AG_EANOMALY)
                ag_fail(status, 0);
            return status;
        }
        if (!hit) /* replayed uncached */
            return AG_OK;
    }
    ag_id bad = 0;
    return ag_tape_forward(&hit->tape, ag_anomaly_mode(), &bad);
}

size_t ag_graph_size(ag_id root)
{
    cached_order *hit = cache_find(root);
    if (hit)
        return hit->order.n;
    ag_order order;
    if (topo_sort(root, &order, NULL, 0, NULL, NULL) != AG_OK) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    shrink_scratch(order.n);
    return order.n;
}

/* What sweep.c keeps beside the arena (arena.h). */
const ag_side_table ag_sweep_table = {AG_FLAG_ORDER, order_cache_forget, order_cache_bytes, scratch_fit,
                                      sweeps_after_fork};
