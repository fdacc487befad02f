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

/* ---- topological sort ---- */

typedef struct frame {
    ag_id id;
    uint32_t next_input; /* the next input of id to visit */
} frame;

static int grow(void **buf, size_t *cap, size_t elem)
{
    size_t new_cap = *cap ? 2 * *cap : 1024;
    void *grown = realloc(*buf, new_cap * elem);
    if (!grown)
        return AG_ENOMEM;
    *buf = grown;
    *cap = new_cap;
    return AG_OK;
}

/* Depth-first post-order from root with an explicit stack. Relies on invariant 3
 * (every mark is 0 on entry) and restores it before returning, on failure too. */
static int topo_sort(ag_id root, ag_order *out)
{
    frame *stack = NULL;
    size_t depth = 0, stack_cap = 0;
    ag_id *ids = NULL;
    size_t n = 0, ids_cap = 0;
    int status = AG_OK;

    if (grow((void **)&stack, &stack_cap, sizeof *stack) != AG_OK)
        return AG_ENOMEM;
    stack[depth++] = (frame){root, 0};
    ag_node_at(root)->mark = 1;

    while (depth) {
        frame *top = &stack[depth - 1];
        size_t n_inputs;
        const ag_id *inputs = ag_inputs_of(ag_node_at(top->id), &n_inputs);
        if (top->next_input < n_inputs) {
            ag_id input = inputs[top->next_input++];
            ag_node *node = ag_node_at(input);
            if (node->mark)
                continue;
            if (depth == stack_cap && grow((void **)&stack, &stack_cap, sizeof *stack) != AG_OK) {
                status = AG_ENOMEM;
                break;
            }
            node->mark = 1;
            stack[depth++] = (frame){input, 0};
        } else {
            if (n == ids_cap && grow((void **)&ids, &ids_cap, sizeof *ids) != AG_OK) {
                status = AG_ENOMEM;
                break;
            }
            ids[n++] = top->id;
            depth--;
        }
    }

    for (size_t i = 0; i < depth; i++)
        ag_node_at(stack[i].id)->mark = 0;
    for (size_t i = 0; i < n; i++)
        ag_node_at(ids[i])->mark = 0;
    free(stack);
    if (status != AG_OK) {
        free(ids);
        return status;
    }
    out->ids = ids;
    out->n = n;
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

size_t ag_order_cache_bytes(void) { return cache_bytes; }

/* The order for root: the cached one (*owned = 0) or a fresh one the caller frees. */
static int order_for(ag_id root, ag_order *order, int *owned)
{
    cached_order *hit = cache_find(root);
    if (hit) {
        *order = hit->order;
        *owned = 0;
        return AG_OK;
    }
    *owned = 1;
    return topo_sort(root, order);
}

/* ---- backward ---- */

/* Adds this node's contributions g * d node / d input to its inputs' grads.
 * Returns 0 when anomaly mode is on and a contribution is nan or inf. */
static int propagate(const ag_node *node, int check)
{
    double g = node->grad;
    size_t n;
    const ag_id *in = ag_inputs_of(node, &n);
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
 * chain rule, then adds the earlier grads back. With anomaly mode on, the first
 * non-finite contribution restores every grad and reports its node. */
int ag_backward(ag_id root)
{
    ag_order order;
    int owned;
    int status = order_for(root, &order, &owned);
    if (status != AG_OK) {
        ag_fail(status, 0);
        return status;
    }
    double *earlier = malloc((order.n ? order.n : 1) * sizeof *earlier);
    if (!earlier) {
        if (owned)
            free(order.ids);
        ag_fail(AG_ENOMEM, 0);
        return AG_ENOMEM;
    }
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = ag_node_at(order.ids[i]);
        earlier[i] = node->grad;
        node->grad = 0.0;
    }
    ag_node_at(root)->grad = 1.0;

    int check = ag_anomaly_mode();
    ag_id bad = 0;
    for (size_t i = order.n; i-- > 0;) {
        if (!propagate(ag_node_at(order.ids[i]), check)) {
            bad = order.ids[i];
            break;
        }
    }
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = ag_node_at(order.ids[i]);
        node->grad = bad ? earlier[i] : node->grad + earlier[i];
    }
    free(earlier);
    if (owned)
        free(order.ids);
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
    int owned;
    if (order_for(root, &order, &owned) != AG_OK) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    if (owned)
        free(order.ids);
    return order.n;
}
