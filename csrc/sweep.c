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

static buffer stack_buf, order_buf, grads_buf;

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

static size_t scratch_bytes(void)
{
    return stack_buf.cap * sizeof(ag_id) + order_buf.cap * sizeof(ag_id) + grads_buf.cap * sizeof(double);
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

/* ---- the cache of orders, for roots that replay with forward() ----
 * A cached order stays valid while its root lives: the root keeps every node in it
 * alive (invariant 2) and graphs never change shape (invariant 1). The cache holds the
 * most recently used roots; arena.c calls ag_order_cache_forget when any node dies. */

#define AG_ORDER_CACHE_SIZE 16

typedef struct cached_order {
    ag_id root;      /* 0: empty slot */
    ag_order order;
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
    cache_bytes -= slot->order.n * sizeof(ag_id);
    free(slot->order.ids);
    ag_node_at(slot->root)->flags &= (uint8_t)~AG_FLAG_ORDER;
    slot->root = 0;
    slot->order = (ag_order){0};
    n_cached--;
}

static void cache_store(ag_id root, ag_order order)
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
    *slot = (cached_order){root, order, ++cache_clock};
    ag_node_at(root)->flags |= AG_FLAG_ORDER;
    cache_bytes += order.n * sizeof(ag_id);
    n_cached++;
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

/* The order for root: the cached one, or a fresh one in order_buf. */
static int order_for(ag_id root, ag_order *order)
{
    cached_order *hit = cache_find(root);
    if (hit) {
        *order = hit->order;
        return AG_OK;
    }
    return topo_sort(root, order);
}

/* ---- backward ---- */

/* Adds this node's contributions g * d node / d input to its inputs' grads.
 * Returns 0 when anomaly mode is on and a contribution is nan or inf. */
static int propagate(const ag_node *node, int check)
{
    double g = node->grad;
    size_t n;
    ag_id fixed_inputs[2];
    const ag_id *in = ag_inputs_of(node, &n, fixed_inputs);
    switch (node->op) {
    case AG_LEAF:
    case AG_CONST:
    case AG_CUSTOM:
        return 1;
    case AG_SUM:
        for (size_t i = 0; i < n; i++)
            ag_node_at(in[i])->grad += g;
        return !check || isfinite(g);
    case AG_DOT: {
        int ok = 1;
        for (size_t i = 0; i + 1 < n; i += 2) {
            ag_node *w = ag_node_at(in[i]), *x = ag_node_at(in[i + 1]);
            double dw = g * x->data, dx = g * w->data;
            w->grad += dw;
            x->grad += dx;
            ok &= isfinite(dw) && isfinite(dx);
        }
        if (n & 1)
            ag_node_at(in[n - 1])->grad += g;
        return !check || (ok && isfinite(g));
    }
    default: {
        ag_node *a = ag_node_at(in[0]);
        ag_node *b = n > 1 ? ag_node_at(in[1]) : NULL;
        double da, db;
        ag_local_grads(node->op, a->data, b ? b->data : 0.0, node->data, &da, &db);
        double ga = g * da, gb = b ? g * db : 0.0;
        a->grad += ga;
        if (b)
            b->grad += gb;
        return !check || (isfinite(ga) && isfinite(gb));
    }
    }
}

/* d root / d node for every node under root, added to grad once per call (root: +1),
 * like PyTorch. The sweep runs on zeroed grads so earlier grads never leak into the
 * chain rule: walking the order backwards, a node's adjoint is complete when it is
 * reached (all its users come after it in the order), so it passes its contributions on
 * and gets its earlier grad added back in the same step. With anomaly mode on, the
 * first non-finite contribution restores every grad and reports its node. */
int ag_backward(ag_id root)
{
    ag_order order;
    int status = order_for(root, &order);
    if (status == AG_OK)
        status = reserve(&grads_buf, order.n, sizeof(double));
    if (status != AG_OK) {
        ag_fail(status, 0);
        return status;
    }
    double *earlier = grads_buf.p;
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = ag_node_at(order.ids[i]);
        earlier[i] = node->grad;
        node->grad = 0.0;
    }
    ag_node_at(root)->grad = 1.0;

    int check = ag_anomaly_mode();
    ag_id bad = 0;
    for (size_t i = order.n; i-- > 0;) {
        ag_node *node = ag_node_at(order.ids[i]);
        if (!propagate(node, check)) {
            bad = order.ids[i];
            break;
        }
        node->grad += earlier[i];
    }
    if (bad)
        for (size_t i = 0; i < order.n; i++)
            ag_node_at(order.ids[i])->grad = earlier[i];
    if (bad) {
        ag_fail(AG_EANOMALY, bad);
        return AG_EANOMALY;
    }
    return AG_OK;
}

/* ---- forward replay ---- */

/* Recomputes every node under root from the current data of its leaves, in the
 * cached order. Control flow that ran in Python is not re-run; branches inside ops
 * (relu) are. With anomaly mode on, stops at the first nan or inf. */
int ag_forward(ag_id root)
{
    cached_order *hit = cache_find(root);
    if (!hit) {
        ag_order order;
        int status = topo_sort(root, &order);
        if (status != AG_OK) {
            ag_fail(status, 0);
            return status;
        }
        order_buf = (buffer){0}; /* the cache owns this order now */
        ag_id *fitted = realloc(order.ids, (order.n ? order.n : 1) * sizeof(ag_id));
        if (fitted)
            order.ids = fitted;
        cache_store(root, order);
        hit = cache_find(root);
    }
    int check = ag_anomaly_mode();
    for (size_t i = 0; i < hit->order.n; i++) {
        ag_node *node = ag_node_at(hit->order.ids[i]);
        if (node->op == AG_LEAF || node->op == AG_CONST || node->op == AG_CUSTOM)
            continue; /* their data is what the user set */
        node->data = ag_recompute(node);
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
    ag_order order;
    if (order_for(root, &order) != AG_OK) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    return order.n;
}
