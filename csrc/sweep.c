/* Whole-graph work: the topological sort, the backward sweep, forward replay and
 * the cache of topological orders that replay reuses.
 *
 * Everything here costs time proportional to the subgraph reachable from the root,
 * never to the arena's size, and nothing recurses on graph depth. */
#include <math.h>
#include <stdlib.h>
#include "arena.h"
#include "nodes.h"
#include "ops.h"

typedef struct ag_order {
    ag_id *ids;  /* inputs before the nodes that use them; the root is last */
    size_t n;
} ag_order;

/* ---- scratch buffers ----
 * Reused from call to call (the GIL serialises calls), so a sweep over a big graph
 * does not fault its way through fresh pages every time. They only grow; a cached
 * order takes the order buffer with it. */

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

/* Scratch grown for a far bigger graph than the one just swept goes back to the
 * system, so one huge backward does not pin its memory for the life of the process,
 * while sweeping graphs of one size keeps reusing the same pages. */
#define AG_SCRATCH_KEEP ((size_t)1 << 20) /* elements always worth keeping */

static void shrink_scratch(size_t used)
{
    buffer *all[] = {&stack_buf, &order_buf, &grads_buf, &address_buf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->cap > AG_SCRATCH_KEEP && all[i]->cap / 8 > used) {
            free(all[i]->p);
            *all[i] = (buffer){0};
        }
}

static size_t scratch_bytes(void)
{
    return stack_buf.cap * sizeof(ag_id) + order_buf.cap * sizeof(ag_id) + grads_buf.cap * sizeof(double)
           + address_buf.cap * sizeof(ag_node *);
}

/* ---- topological sort ---- */

/* Depth-first post-order from root with an explicit stack. Entering a node pushes a
 * marker for it (its id with AG_SORT_EXIT set), then its inputs not yet entered (a node
 * may be pushed more than once; later copies are skipped). When the marker comes back
 * to the top, everything above it is in the order, so the node joins it: an input still
 * unfinished would be below its marker, a cycle, impossible in a DAG (invariant 1).
 * Markers keep the exit from touching the node again: on a deep chain the node has long
 * left the cache by then. Relies on invariant 3 (sort flags clear on entry) and
 * restores it before returning, on failure too. */
#define AG_SORT_EXIT ((ag_id)1 << 31) /* ids stay below it: see AG_MAX_NODES */

/* The order is written to order_buf (valid until the next sort). */
static int topo_sort(ag_id root, ag_order *out)
{
    size_t depth = 0, n = 0;
    int status = AG_OK;

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
        ag_id fixed_inputs[2];
        const ag_id *inputs = ag_inputs_of(node, &n_inputs, fixed_inputs);
        if (reserve(&stack_buf, depth + 1 + n_inputs, sizeof(ag_id)) != AG_OK) {
            status = AG_ENOMEM;
            break;
        }
        stack = stack_buf.p;
        node->flags |= AG_FLAG_SORTING;
        stack[depth++] = top | AG_SORT_EXIT;
        for (size_t i = 0; i < n_inputs; i++)
            if (!(ag_node_at(inputs[i])->flags & AG_FLAG_SORTING))
                stack[depth++] = inputs[i];
    }

    ag_id *ids = order_buf.p;
    for (size_t i = 0; i < depth; i++)
        if (stack[i] & AG_SORT_EXIT)
            ag_node_at(stack[i] & ~AG_SORT_EXIT)->flags &= (uint8_t)~AG_FLAG_SORTING;
    for (size_t i = 0; i < n; i++)
        ag_node_at(ids[i])->flags &= (uint8_t)~AG_FLAG_SORTING;
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
    ag_id fixed[2];
    for (size_t i = 0; i < order->n; i++) {
        ag_inputs_of(ag_node_at(order->ids[i]), &n, fixed);
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
        const ag_id *in = ag_inputs_of(node, &n, fixed);
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
 * most recently used roots; arena.c calls ag_order_cache_forget when any node dies. */

#define AG_ORDER_CACHE_SIZE 16

typedef struct cached_order {
    ag_id root;      /* 0: empty slot */
    ag_order order;
    ag_tape tape;
    uint64_t last_used;
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
    slot->root = 0;
    slot->order = (ag_order){0};
    n_cached--;
}

static cached_order *cache_store(ag_id root, ag_order order, ag_tape tape)
{
    cached_order *slot = &cache[0];
    for (size_t i = 0; i < AG_ORDER_CACHE_SIZE; i++) {
        if (!cache[i].root) {
            slot = &cache[i];
            break;
        }
        if (cache[i].last_used < slot->last_used)
            slot = &cache[i];
    }
    if (slot->root)
        cache_drop(slot);
    *slot = (cached_order){root, order, tape, ++cache_clock};
    ag_node_at(root)->flags |= AG_FLAG_ORDER;
    cache_bytes += order.n * sizeof(ag_id) + tape.bytes;
    n_cached++;
    return slot;
}

/* Sorts root's graph, compiles its tape and caches both. */
static int cache_add(ag_id root, cached_order **added)
{
    ag_order order;
    ag_tape tape;
    int status = topo_sort(root, &order);
    if (status == AG_OK)
        status = tape_make(&order, &tape);
    if (status != AG_OK)
        return status;
    order_buf = (buffer){0}; /* the cache owns this order now */
    ag_id *fitted = realloc(order.ids, (order.n ? order.n : 1) * sizeof(ag_id));
    if (fitted)
        order.ids = fitted;
    *added = cache_store(root, order, tape);
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

/* ---- backward ---- */

/* Adds this node's contributions g * d node / d input to its inputs' grads.
 * Returns 0 when anomaly mode is on and a contribution is nan or inf. */
static inline int propagate_elementwise(const ag_node *node, ag_node *a, ag_node *b, int check)
{
    double g = node->grad, da, db;
    ag_local_grads(node->op, a->data, b ? b->data : 0.0, node->data, &da, &db);
    double ga = g * da, gb = b ? g * db : 0.0;
    if (ga != ga && ag_masks_first_input(node->op, b ? b->data : 0.0, node->data))
        ga = 0.0;
    a->grad += ga;
    if (b)
        b->grad += gb;
    return !check || (isfinite(ga) && isfinite(gb));
}

static int propagate(const ag_node *node, ag_node *const *in, size_t n, int check)
{
    double g = node->grad;
    switch (node->op) {
    case AG_LEAF:
    case AG_CONST:
    case AG_CUSTOM:
        return 1;
    case AG_SUM:
        for (size_t i = 0; i < n; i++)
            in[i]->grad += g;
        return !check || isfinite(g);
    case AG_DOT: {
        int ok = 1;
        if (check) {
            for (size_t i = 0; i + 1 < n; i += 2) {
                ag_node *w = in[i], *x = in[i + 1];
                double dw = g * x->data, dx = g * w->data;
                w->grad += dw;
                x->grad += dx;
                ok &= isfinite(dw) && isfinite(dx);
            }
        } else { /* training's hottest loop: no checks to pay for */
            for (size_t i = 0; i + 1 < n; i += 2) {
                ag_node *w = in[i], *x = in[i + 1];
                w->grad += g * x->data;
                x->grad += g * w->data;
            }
        }
        if (n & 1)
            in[n - 1]->grad += g;
        return !check || (ok && isfinite(g));
    }
    default:
        return propagate_elementwise(node, in[0], n > 1 ? in[1] : NULL, check);
    }
}

/* Propagates one node of an order without a tape, looking its inputs' addresses up
 * now (an n-ary node's go to address_buf). Returns an AG_* status. */
static int propagate_by_id(const ag_node *node, int check)
{
    size_t n;
    if (!ag_op_is_nary(node->op)) {
        n = ag_fixed_arity(node->op);
        if (n == 0)
            return AG_OK;
        ag_node *a = ag_node_at(node->in[0]), *b = n > 1 ? ag_node_at(node->in[1]) : NULL;
        return propagate_elementwise(node, a, b, check) ? AG_OK : AG_EANOMALY;
    }
    ag_id fixed[2];
    const ag_id *ids = ag_inputs_of(node, &n, fixed);
    if (reserve(&address_buf, n, sizeof(ag_node *)) != AG_OK)
        return AG_ENOMEM;
    ag_node **in = address_buf.p;
    for (size_t i = 0; i < n; i++)
        in[i] = ag_node_at(ids[i]);
    return propagate(node, in, n, check) ? AG_OK : AG_EANOMALY;
}

/* d root / d node for every node under root, added to grad once per call (root: +1),
 * like PyTorch. The sweep runs on zeroed grads so earlier grads never leak into the
 * chain rule: walking the order backwards, a node's adjoint is complete when it is
 * reached (all its users come after it in the order), so it passes its contributions on
 * and gets its earlier grad added back in the same step. A root that replays uses its
 * tape. If anomaly mode sees a non-finite contribution, or memory runs out, every grad
 * is restored. */
int ag_backward(ag_id root)
{
    ag_order order;
    const ag_tape *tape = NULL;
    int status = AG_OK;
    cached_order *hit = cache_find(root);
    if (hit) {
        order = hit->order;
        tape = &hit->tape;
    } else {
        status = topo_sort(root, &order);
    }
    if (status == AG_OK)
        status = reserve(&grads_buf, order.n, sizeof(double));
    if (status != AG_OK) {
        ag_fail(status, 0);
        return status;
    }
    double *earlier = grads_buf.p;
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = tape ? tape->nodes[i] : ag_node_at(order.ids[i]);
        earlier[i] = node->grad;
        node->grad = 0.0;
    }
    ag_node_at(root)->grad = 1.0;

    int check = ag_anomaly_mode();
    ag_id bad = 0;
    for (size_t i = order.n; i-- > 0;) {
        ag_node *node;
        if (tape) {
            node = tape->nodes[i];
            size_t first = tape->start[i];
            if (!propagate(node, tape->inputs + first, tape->start[i + 1] - first, check))
                status = AG_EANOMALY;
        } else {
            node = ag_node_at(order.ids[i]);
            status = propagate_by_id(node, check);
        }
        if (status != AG_OK) {
            bad = status == AG_EANOMALY ? order.ids[i] : 0;
            break;
        }
        node->grad += earlier[i];
    }
    if (status != AG_OK) {
        for (size_t i = 0; i < order.n; i++)
            (tape ? tape->nodes[i] : ag_node_at(order.ids[i]))->grad = earlier[i];
        ag_fail(status, bad);
    }
    shrink_scratch(order.n);
    return status;
}

/* ---- forward replay ---- */

/* Recomputes every node under root from the current data of its leaves, in the
 * cached order, through its tape (compiled on the first call). Control flow that ran
 * in Python is not re-run; branches inside ops (relu) are. With anomaly mode on, stops
 * at the first nan or inf. */
int ag_forward(ag_id root)
{
    cached_order *hit = cache_find(root);
    if (!hit) {
        int status = cache_add(root, &hit);
        if (status != AG_OK) {
            ag_fail(status, 0);
            return status;
        }
    }
    const ag_tape *tape = &hit->tape;
    int check = ag_anomaly_mode();
    for (size_t i = 0; i < hit->order.n; i++) {
        ag_node *node = tape->nodes[i];
        int op = node->op;
        if (op == AG_LEAF || op == AG_CONST || op == AG_CUSTOM)
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
    if (topo_sort(root, &order) != AG_OK) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    shrink_scratch(order.n);
    return order.n;
}
