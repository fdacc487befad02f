/* grad(): derivatives as new nodes, no .grad touched (pyautograd.grad).
 *
 * grad() runs its sweep in the grad fields of the graph's nodes (zeroed into `kept` by
 * the sort, and put back at the end), so what it keeps per node sits in the node the
 * sweep reads anyway: the first-order sweep adds numbers there as backward() does; the
 * create_graph sweep keeps there (ag_node.slot) the indices of the node's first and
 * last contributions, terms waiting in a pool. Not here: the sort and the first-order sweep
 * (sweep.c), the derivative formulas as nodes (higher.c). */
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "core.h"
#include "higher.h"
#include "nodes.h"
#include "sweep.h"

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
    uint64_t index = ++pool->n, bits = node->slot;
    if (bits) /* append after its last contribution */
        pool->entries[(bits >> 32) - 1].next = (uint32_t)index;
    node->slot = (bits ? (bits & 0xffffffffu) : index) | index << 32;
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
            uint32_t soon = (uint32_t)ag_node_at(order->ids[i - AG_AHEAD])->slot;
            if (soon)
                AG_PREFETCH(&pool->entries[soon - 1]);
        }
        ag_id id = order->ids[i];
        ag_node *node = ag_node_at(id);
        uint32_t first = (uint32_t)node->slot;
        if (!first)
            continue; /* nothing came to it */
        if ((status = sum_in_place(pool, first)) != AG_OK)
            break;
        if ((node->flags & AG_FLAG_PYRULE) && ag_hooks.has_rule(node)) {
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
    ag_sorted sorted = {{NULL, 0}, {NULL, 0}, {{NULL, 0}, 0}, 0, NULL};
    pool pool = {NULL, 0, 0};
    double *value = malloc((n_inputs ? n_inputs : 1) * sizeof *value);
    ag_id bad = 0;
    /* create_graph asks for a graph: it is built under no_grad too, as torch does */
    int recording = ag_grad_enabled();
    if (create_graph && !recording)
        ag_set_grad_enabled(1);
    ag_choice_noted(1);
    int status = value ? ag_sort_for_grad(root, &sorted) : AG_ENOMEM;
    const ag_order order = sorted.order;
    int marked = sorted.marked;
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
        status = ag_sweep_first_order(&order, &bad);
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
            uint32_t first = input->flags & AG_FLAG_SORTING ? (uint32_t)input->slot : 0;
            if (first)
                out[k] = ag_term_own(pool.entries[first - 1].term);
            if (!out[k] && first)
                value[k] = pool.entries[first - 1].term.constant; /* a number */
        }
        if (status == AG_OK && ag_choice_noted(0))
            status = ag_mark_chosen(out, n_inputs);
    }
    /* The sort left its marks (create_graph), or the first-order path made them: they
     * are cleared here, with the grads put back, in one pass (invariant 3). */
    for (size_t i = 0; i < order.n; i++) {
        ag_node *node = ag_node_at(order.ids[i]);
        node->grad = 0.0;
        node->flags &= (uint16_t)~AG_FLAG_SORTING;
    }
    ag_put_back(&sorted.kept);
    if (status == AG_OK) /* the numbers become leaves */
        for (size_t k = 0; k < n_inputs && status == AG_OK; k++)
            if (!out[k]) {
                if (!(out[k] = ag_leaf(value[k])))
                    status = AG_ENOMEM;
                else if (create_graph && ag_choice_noted(0))
                    ag_node_at(out[k])->flags |= AG_FLAG_CHOSEN;
            }
    if (create_graph && !recording) /* before any Python code can run (below) */
        ag_set_grad_enabled(0);
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
    if (value)
        ag_sorted_done(&sorted); /* releases the root: may run Python, so last */
    return status;
}

