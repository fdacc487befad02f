/* Whole-graph work: the topological sort, the backward sweep, forward replay and
 * the cache of topological orders (compiled to tapes) that replay reuses.
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

typedef struct ag_order {
    ag_id *ids;  /* inputs before the nodes that use them; the root is last */
    size_t n;
} ag_order;

/* ---- scratch buffers ----
 * Reused from call to call, so a sweep over a big graph does not fault its way
 * through fresh pages every time. A sweep that calls Python takes the ones it keeps
 * (take) and puts them back after (put_back): a sweep started meanwhile, nested or
 * in another thread, finds them empty and makes its own. */

typedef struct buffer {
    void *p;
    size_t cap; /* in elements */
} buffer;

static buffer stack_buf, order_buf, grads_buf, address_buf;

static int reserve(buffer *b, size_t need, size_t elem)
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

/* arena.c, when it gives blocks back: scratch sized for a dead graph goes too. */
void ag_scratch_fit(size_t live) { shrink_scratch(live); }

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

typedef struct grads_kept {
    buffer list; /* earlier_grad */
    size_t n;
} grads_kept;

static int zero_and_keep(ag_id id, ag_node *node, grads_kept *kept)
{
    if (node->grad != 0.0) {
        if (reserve(&kept->list, kept->n + 1, sizeof(earlier_grad)) != AG_OK)
            return AG_ENOMEM;
        ((earlier_grad *)kept->list.p)[kept->n++] = (earlier_grad){id, node->grad};
        node->grad = 0.0;
    }
    return AG_OK;
}

static void add_back(const grads_kept *kept)
{
    const earlier_grad *e = kept->list.p;
    for (size_t i = 0; i < kept->n; i++)
        ag_node_at(e[i].id)->grad += e[i].grad;
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

/* The order is written to order_buf (valid until the next sort). With kept, each node
 * also has its grad zeroed when entered (backward: the node is in cache then). With
 * keep_marks, the nodes keep their AG_FLAG_SORTING after a successful sort when none
 * of them has a Python _backward (*kept_marks says whether they did): the caller
 * clears them in a pass it makes anyway, and no Python code can run before (Python
 * could start another sort, which needs them clear: invariant 3). */
static int topo_sort(ag_id root, ag_order *out, grads_kept *kept, int keep_marks, int *kept_marks)
{
    size_t depth = 0, n = 0;
    int status = AG_OK, python = 0;

    if (reserve(&stack_buf, 1, sizeof(ag_id)) != AG_OK)
        return AG_ENOMEM;
    ag_id *stack = stack_buf.p;
    stack[depth++] = root;

    while (depth) {
        ag_id top = stack[--depth];
        if (top & AG_SORT_EXIT) {
            if (reserve(&order_buf, n + 1, sizeof(ag_id)) != AG_OK) {
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
        size_t n_inputs;
        const ag_id *inputs = ag_inputs_of(node, &n_inputs);
        if (reserve(&stack_buf, depth + 1 + n_inputs, sizeof(ag_id)) != AG_OK) {
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
        for (size_t i = 0; i < n_inputs; i++)
            if (!(ag_node_at(inputs[i])->flags & AG_FLAG_SORTING))
                stack[depth++] = inputs[i];
    }

    /* The marks stay until the sort is done: they are also how it knows what it has seen. */
    ag_id *ids = order_buf.p;
    for (size_t i = 0; i < depth; i++) /* after a failure: the nodes entered, not left */
        if (stack[i] & AG_SORT_EXIT)
            ag_node_at(stack[i] & ~AG_SORT_EXIT)->flags &= (uint8_t)~AG_FLAG_SORTING;
    keep_marks = keep_marks && status == AG_OK && !python;
    for (size_t i = 0; i < n && !keep_marks; i++)
        ag_node_at(ids[i])->flags &= (uint8_t)~AG_FLAG_SORTING;
    if (kept_marks)
        *kept_marks = keep_marks;
    out->ids = ids;
    out->n = n;
    return status;
}

/* ---- tapes: orders compiled to addresses, for replay ----
 * A root that replays runs the same order again and again, so its order is compiled
 * once into a tape: each node's address and, one node after another, its inputs'
 * addresses. The sweeps then follow pointers instead of turning an id into an address
 * at every input, which was half of replay's time. A tape stays valid while its root
 * lives: nodes never move (arena.h) and the root keeps every node under it alive
 * (invariant 2), with the same inputs (invariant 1). */

typedef struct ag_tape {
    ag_node **nodes;  /* the order's nodes, by address */
    ag_node **inputs; /* node i's inputs are inputs[start[i]] up to inputs[start[i + 1]] */
    size_t *start;    /* n + 1 offsets */
    size_t bytes;
} ag_tape;

static void tape_free(ag_tape *tape)
{
    free(tape->nodes);
    free(tape->inputs);
    free(tape->start);
    *tape = (ag_tape){0};
}

static int tape_make(const ag_order *order, ag_tape *tape)
{
    size_t n_inputs = 0, n;
    for (size_t i = 0; i < order->n; i++) {
        ag_inputs_of(ag_node_at(order->ids[i]), &n);
        n_inputs += n;
    }
    *tape = (ag_tape){
        .nodes = malloc((order->n ? order->n : 1) * sizeof(ag_node *)),
        .inputs = malloc((n_inputs ? n_inputs : 1) * sizeof(ag_node *)),
        .start = malloc((order->n + 1) * sizeof(size_t)),
        .bytes = order->n * sizeof(ag_node *) + n_inputs * sizeof(ag_node *)
                 + (order->n + 1) * sizeof(size_t),
    };
    if (!tape->nodes || !tape->inputs || !tape->start) {
        tape_free(tape);
        return AG_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < order->n; i++) {
        ag_node *node = ag_node_at(order->ids[i]);
        const ag_id *in = ag_inputs_of(node, &n);
        tape->nodes[i] = node;
        tape->start[i] = k;
        for (size_t j = 0; j < n; j++)
            tape->inputs[k++] = ag_node_at(in[j]);
    }
    tape->start[order->n] = k;
    return AG_OK;
}

/* ---- the cache of orders, for roots that replay with forward() ----
 * A cached order stays valid while its root lives: the root keeps every node in it
 * alive (invariant 2) and graphs never change shape (invariant 1). The cache holds the
 * most recently used roots; arena.c calls ag_order_cache_forget when a root dies. A
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
    tape_free(&slot->tape);
    ag_node_at(slot->root)->flags &= (uint8_t)~AG_FLAG_ORDER;
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

/* A node whose value was computed in Python has no forward to replay. */
static ag_id first_hand_made(const ag_order *order)
{
    for (size_t i = 0; i < order->n; i++) {
        const ag_node *node = ag_node_at(order->ids[i]);
        size_t n;
        ag_inputs_of(node, &n);
        if (ag_op_is_hand_made(node->op) && n > 0)
            return order->ids[i];
    }
    return 0;
}

/* Sorts root's graph, checks it can be replayed, compiles its tape and caches both. */
static int cache_add(ag_id root, cached_order **added)
{
    ag_order order;
    ag_tape tape;
    int status = topo_sort(root, &order, NULL, 0, NULL);
    if (status != AG_OK)
        return status;
    ag_id hand_made = first_hand_made(&order);
    if (hand_made) {
        ag_fail(AG_ENOREPLAY, hand_made);
        return AG_ENOREPLAY;
    }
    cached_order *slot = cache_slot();
    if (!slot)
        return AG_EINVALID; /* 16 replays nested inside Python _backward calls */
    status = tape_make(&order, &tape);
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

void ag_order_cache_forget(ag_id id)
{
    if (!n_cached)
        return;
    for (size_t i = 0; i < AG_ORDER_CACHE_SIZE; i++)
        if (cache[i].root == id)
            cache_drop(&cache[i]);
}

size_t ag_order_cache_bytes(void) { return cache_bytes + scratch_bytes(); }

/* ---- walking an order ---- */

/* An order and, when its root replays, its tape: the one view both sweeps walk. */
typedef struct walk {
    ag_order order;
    const ag_tape *tape; /* NULL: look inputs up by id */
} walk;

static inline ag_node *walk_node(const walk *w, size_t i)
{
    return w->tape ? w->tape->nodes[i] : ag_node_at(w->order.ids[i]);
}

/* Node i's inputs by address. Without a tape they are looked up now, into `pair` for
 * one or two inputs or into address_buf for an n-ary node (read before any Python
 * runs: a nested sweep may move it). NULL when address_buf cannot grow. */
static inline ag_node *const *walk_inputs(const walk *w, size_t i, const ag_node *node, size_t *n,
                                          ag_node *pair[2])
{
    if (w->tape) {
        size_t first = w->tape->start[i];
        *n = w->tape->start[i + 1] - first;
        return w->tape->inputs + first;
    }
    const ag_id *ids = ag_inputs_of(node, n);
    ag_node **in = pair;
    if (*n > 2) {
        if (reserve(&address_buf, *n, sizeof(ag_node *)) != AG_OK)
            return NULL;
        in = address_buf.p;
    }
    for (size_t k = 0; k < *n; k++)
        in[k] = ag_node_at(ids[k]);
    return in;
}

/* ---- backward ---- */

/* One node's chain-rule step: its Python _backward if it has one, else its op's. */
static int step(const walk *w, size_t i, ag_node *node, int check)
{
    if (node->flags & AG_FLAG_PYRULE)
        return ag_hooks.run_rule(node);
    size_t n;
    ag_node *pair[2];
    ag_node *const *in = walk_inputs(w, i, node, &n, pair);
    if (!in)
        return AG_ENOMEM;
    return ag_propagate(node, in, n, check) ? AG_OK : AG_EANOMALY;
}

/* The sweep over an order (a cached tape, or a sort), in reverse. May call Python. */
#define AG_AHEAD 8 /* nodes fetched ahead of the sweep: a node far down the order is
                      somewhere else in memory, so each one's wait overlaps the others' */

/* Asks for node i of the order and, a few steps later, its inputs, before the sweep
 * gets there. Changes nothing: the order and the arithmetic are the same. */
static inline void fetch_ahead(const walk *w, size_t i)
{
    if (w->tape || i < 2 * AG_AHEAD)
        return;
    const ag_node *soon = ag_node_at(w->order.ids[i - AG_AHEAD]);
    AG_PREFETCH(ag_node_at(w->order.ids[i - 2 * AG_AHEAD]));
    if (!ag_op_is_nary(soon->op) && soon->in[0]) {
        AG_PREFETCH(ag_node_at(soon->in[0]));
        if (soon->in[1])
            AG_PREFETCH(ag_node_at(soon->in[1]));
    }
}

/* With unmark, each node's sort mark is cleared as it is swept (it is in cache then),
 * which saves backward a pass over the graph; on failure the rest are cleared. */
static int sweep_order(const walk *w, int check, int unmark, ag_id *bad)
{
    for (size_t i = w->order.n; i-- > 0;) {
        fetch_ahead(w, i);
        ag_node *node = walk_node(w, i);
        if (unmark)
            node->flags &= (uint8_t)~AG_FLAG_SORTING;
        int status = step(w, i, node, check);
        if (status != AG_OK) {
            *bad = w->order.ids[i];
            for (size_t k = 0; unmark && k < i; k++)
                walk_node(w, k)->flags &= (uint8_t)~AG_FLAG_SORTING;
            return status;
        }
    }
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
    int check = ag_anomaly_mode(), status = AG_OK;
    ag_id bad = 0;
    grads_kept kept = {take(&grads_buf), 0};
    buffer my_order = {0};
    walk w = {{NULL, 0}, NULL};
    cached_order *hit = cache_find(root);
    if (hit) { /* a root that replays: its tape */
        w.order = hit->order;
        w.tape = &hit->tape;
        hit->in_use++;
        for (size_t i = 0; i < w.order.n && status == AG_OK; i++)
            status = zero_and_keep(w.order.ids[i], walk_node(&w, i), &kept);
    }
    int marked = 0; /* the sort left its marks for the sweep to clear */
    if (!hit) {
        status = topo_sort(root, &w.order, &kept, 1, &marked);
        my_order = take(&order_buf); /* w.order.ids points into it */
    }
    if (status == AG_OK) {
        ag_node_at(root)->grad = 1.0;
        status = sweep_order(&w, check, marked, &bad);
        if (status != AG_OK) /* every grad under the root was zeroed: zero, then restore */
            for (size_t i = 0; i < w.order.n; i++)
                walk_node(&w, i)->grad = 0.0;
    }
    add_back(&kept); /* after a failed sort: the grads zeroed so far */
    if (status != AG_OK && status != AG_EPYTHON)
        ag_fail(status, status == AG_EANOMALY ? bad : 0);
    if (hit)
        hit->in_use--;
    put_back(&order_buf, my_order);
    put_back(&grads_buf, kept.list);
    shrink_scratch(w.order.n);
    return status;
}

/* ---- grad(): derivatives as new nodes, no .grad touched ----
 * grad() runs its sweep in the grad fields of the graph's nodes (zeroed into `kept` by
 * the sort, and put back at the end), so what it keeps per node sits in the node the
 * sweep reads anyway: the first-order sweep adds numbers there as backward() does; the
 * create_graph sweep keeps there the indices of the node's first and last
 * contributions, terms waiting in a pool. */

static uint64_t field_bits(const ag_node *node)
{
    uint64_t bits;
    memcpy(&bits, &node->grad, sizeof bits);
    return bits;
}

static void set_field_bits(ag_node *node, uint64_t bits) { memcpy(&node->grad, &bits, sizeof bits); }

/* What has been passed back to each node, while grad(create_graph=True) sweeps: its
 * contributions in the order they came, chained through the pool (node->grad holds the
 * first's and the last's index + 1), summed into one term (one SUM node over them) when
 * the sweep reaches the node; the sum then takes the first's place. One SUM node instead
 * of a chain of ADD nodes keeps derivative graphs small, and its left-to-right sum is the
 * order backward() adds in, so the numbers are the same. */
typedef struct passed {
    ag_term term;
    uint32_t next; /* the next contribution to the same node, + 1; 0: none */
} passed;

typedef struct pool {
    passed *entries;
    size_t n, capacity;
} pool;

static int pass_back(pool *pool, ag_node *node, ag_term t)
{
    if (pool->n == pool->capacity) {
        size_t capacity = pool->capacity ? 2 * pool->capacity : 1024;
        passed *grown = capacity < UINT32_MAX ? realloc(pool->entries, capacity * sizeof *grown) : NULL;
        if (!grown) {
            ag_term_release(t);
            return AG_ENOMEM;
        }
        pool->entries = grown;
        pool->capacity = capacity;
    }
    pool->entries[pool->n] = (passed){t, 0};
    uint64_t index = ++pool->n, bits = field_bits(node);
    if (bits) /* append after its last contribution */
        pool->entries[(bits >> 32) - 1].next = (uint32_t)index;
    set_field_bits(node, (bits ? (bits & 0xffffffffu) : index) | index << 32);
    return AG_OK;
}

/* The sum of the contributions from entry `first` on, as one term, left in that entry
 * (the others become the number 0). AG_OK or the status of a failed SUM node. */
static int sum_in_place(pool *pool, uint32_t first)
{
    passed *e = pool->entries;
    if (!e[first - 1].next)
        return AG_OK;
    size_t k = 0, numbers = 0;
    for (uint32_t i = first; i; i = e[i - 1].next, k++)
        numbers += !e[i - 1].term.node;
    ag_term sum;
    if (numbers == k) { /* all numbers: add them as backward() would */
        double total = 0.0;
        for (uint32_t i = first; i; i = e[i - 1].next)
            total += e[i - 1].term.constant;
        sum = ag_term_number(total);
    } else {
        ag_id small[16], *ids = k <= 16 ? small : malloc(k * sizeof *ids);
        size_t made = 0;
        for (uint32_t i = first; ids && i; i = e[i - 1].next) {
            ag_term t = e[i - 1].term;
            ids[made] = t.node ? ag_term_own(t) : ag_constant_node(t.constant);
            if (!ids[made])
                break;
            made++;
        }
        ag_id node = ids && made == k ? ag_sum(ids, k) : 0;
        for (size_t i = 0; i < made; i++)
            ag_release(ids[i]); /* the sum holds them now */
        if (ids != small)
            free(ids);
        sum = node ? (ag_term){node, 0, 0.0} : ag_term_failure();
    }
    for (uint32_t i = first, next; i; i = next) {
        next = e[i - 1].next;
        ag_term_release(e[i - 1].term);
        e[i - 1] = (passed){ag_term_number(0.0), 0};
    }
    e[first - 1].term = sum;
    return ag_term_failed(sum) ? (ag_last_error() ? ag_last_error() : AG_ENOMEM) : AG_OK;
}

/* The create_graph sweep: every node's adjoint as a term, from root = 1 back, each
 * node's chain-rule step built of nodes (higher.c), so the adjoints are graphs. A node
 * something passed a gradient to (even the number 0, which still passes on as
 * 0 * derivative, nan where the derivative is inf, as in backward()) is swept. */
static int sweep_terms(const ag_order *order, pool *pool, ag_id *bad)
{
    ag_term small[2], *contributions = small;
    size_t capacity = 2;
    int status = order->n ? pass_back(pool, ag_node_at(order->ids[order->n - 1]), ag_term_number(1.0))
                          : AG_OK;
    for (size_t i = order->n; i-- > 0 && status == AG_OK;) {
        if (i >= 2 * AG_AHEAD) { /* the nodes coming up, and what waits for them in the pool */
            AG_PREFETCH(ag_node_at(order->ids[i - 2 * AG_AHEAD]));
            uint32_t soon = (uint32_t)field_bits(ag_node_at(order->ids[i - AG_AHEAD]));
            if (soon)
                AG_PREFETCH(&pool->entries[soon - 1]);
        }
        ag_id id = order->ids[i];
        ag_node *node = ag_node_at(id);
        uint32_t first = (uint32_t)field_bits(node);
        if (!first)
            continue; /* nothing came to it */
        if ((status = sum_in_place(pool, first)) != AG_OK)
            break;
        if (node->flags & AG_FLAG_PYRULE) {
            *bad = id;
            status = AG_EPYRULE; /* a Python function is no graph: nothing to differentiate */
            break;
        }
        size_t n;
        ag_inputs_of(node, &n);
        if (n > capacity) {
            ag_term *grown = realloc(contributions == small ? NULL : contributions, n * sizeof *grown);
            if (!grown) {
                status = AG_ENOMEM;
                break;
            }
            contributions = grown;
            capacity = n;
        }
        if ((status = ag_chain_terms(id, ag_term_copy(pool->entries[first - 1].term), contributions, n)) != AG_OK)
            break;
        const ag_id *inputs = ag_inputs_of(node, &n); /* nodes never change */
        for (size_t k = 0; k < n; k++) {
            ag_node *input = ag_node_at(inputs[k]);
            if (status != AG_OK || input->op == AG_CONST)
                ag_term_release(contributions[k]); /* sources pass nothing on */
            else
                status = pass_back(pool, input, contributions[k]);
        }
    }
    if (contributions != small)
        free(contributions);
    return status;
}

/* d root / d inputs[k] into out[k], a new node holding one reference each: with
 * create_graph a node whose graph depends on the inputs (differentiable again), else a
 * leaf. An input root does not depend on gets a leaf 0. No grad changes: the sweep runs
 * in the grad fields, which are put back as they were. The first-order sweep may call
 * Python (a Python _backward), create_graph refuses those (AG_EPYRULE). */
int ag_grad(ag_id root, const ag_id *inputs, size_t n_inputs, int create_graph, ag_id *out)
{
    grads_kept kept = {take(&grads_buf), 0};
    ag_order order = {NULL, 0};
    pool pool = {NULL, 0, 0};
    double *value = malloc((n_inputs ? n_inputs : 1) * sizeof *value);
    ag_id bad = 0;
    int marked = 0;
    int status = value ? topo_sort(root, &order, &kept, 1, &marked) : AG_ENOMEM;
    buffer my_order = take(&order_buf); /* order.ids points into it */
    for (size_t k = 0; k < n_inputs; k++) {
        out[k] = 0;
        if (value)
            value[k] = 0.0;
    }
    if (status == AG_OK && create_graph && !marked) /* the sweep calls no Python: mark them */
        for (size_t i = 0; i < order.n; i++)
            ag_node_at(order.ids[i])->flags |= AG_FLAG_SORTING;
    if (status == AG_OK && !create_graph) {
        ag_node_at(root)->grad = 1.0;
        walk w = {order, NULL};
        status = sweep_order(&w, ag_anomaly_mode(), 0, &bad);
        for (size_t i = 0; i < order.n && !marked; i++) /* marks what is under root (below) */
            ag_node_at(order.ids[i])->flags |= AG_FLAG_SORTING;
        for (size_t k = 0; status == AG_OK && k < n_inputs; k++) {
            const ag_node *input = ag_node_at(inputs[k]);
            if (input->flags & AG_FLAG_SORTING) /* else not under root: its grad is not ours */
                value[k] = input->grad;
        }
    } else if (status == AG_OK) {
        status = sweep_terms(&order, &pool, &bad);
        for (size_t k = 0; status == AG_OK && k < n_inputs; k++) {
            const ag_node *input = ag_node_at(inputs[k]);
            uint32_t first = input->flags & AG_FLAG_SORTING ? (uint32_t)field_bits(input) : 0;
            if (first)
                out[k] = ag_term_own(pool.entries[first - 1].term);
            if (!out[k] && first)
                value[k] = pool.entries[first - 1].term.constant; /* a number */
        }
    }
    /* The sort left its marks (create_graph), or the first-order path made them: they
     * are cleared here, with the grads put back, in one pass (invariant 3). */
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = ag_node_at(order.ids[i]);
        node->grad = 0.0;
        node->flags &= (uint8_t)~AG_FLAG_SORTING;
    }
    add_back(&kept);
    if (status == AG_OK) /* the numbers become leaves */
        for (size_t k = 0; k < n_inputs && status == AG_OK; k++)
            if (!out[k] && !(out[k] = ag_leaf(value[k])))
                status = AG_ENOMEM;
    for (size_t i = 0; i < pool.n; i++)
        ag_term_release(pool.entries[i].term); /* may free nodes: after the grads are back */
    free(pool.entries);
    ag_constant_nodes_done();
    if (status != AG_OK) {
        for (size_t k = 0; k < n_inputs; k++)
            if (out[k])
                ag_release(out[k]);
        if (status != AG_EPYTHON)
            ag_fail(status, bad);
    }
    free(value);
    put_back(&order_buf, my_order);
    put_back(&grads_buf, kept.list);
    shrink_scratch(order.n);
    return status;
}

/* Micrograd's v._backward() for a node made by a C op: its one chain-rule step, with
 * the grad it has now. */
int ag_backward_step(ag_id id)
{
    walk none = {{&id, 1}, NULL};
    int status = step(&none, 0, ag_node_at(id), ag_anomaly_mode());
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
            if (status != AG_ENOREPLAY)
                ag_fail(status, 0);
            return status;
        }
    }
    const ag_tape *tape = &hit->tape;
    int check = ag_anomaly_mode();
    for (size_t i = 0; i < hit->order.n; i++) {
        ag_node *node = tape->nodes[i];
        int op = node->op;
        if (ag_op_is_source(op) || ag_op_is_hand_made(op))
            continue; /* their data is what the user set */
        size_t first = tape->start[i];
        node->data = ag_value_from(op, tape->inputs + first, tape->start[i + 1] - first, node->data);
        if (check && !isfinite(node->data)) {
            ag_fail(AG_EANOMALY, hit->order.ids[i]);
            ag_fail_value(node->data);
            return AG_EANOMALY;
        }
    }
    return AG_OK;
}

size_t ag_graph_size(ag_id root)
{
    cached_order *hit = cache_find(root);
    if (hit)
        return hit->order.n;
    ag_order order;
    if (topo_sort(root, &order, NULL, 0, NULL) != AG_OK) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    shrink_scratch(order.n);
    return order.n;
}
