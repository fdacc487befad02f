/* Making nodes: the ops Python calls (through value.c and graph.c), the op table's
 * names, and the per-thread modes (no_grad, detect_anomaly).
 * Not here: storage and freeing (arena.c), whole-graph sweeps (sweep.c). */
#include <math.h>
#include <stdlib.h>
#include "arena.h"
#include "nodes.h"
#include "ops.h"
#include "core.h"

static _Thread_local int grad_disabled;  /* pyautograd.no_grad() */
static _Thread_local int anomaly_mode;   /* pyautograd.detect_anomaly() */

void ag_set_grad_enabled(int enabled) { grad_disabled = !enabled; }
int ag_grad_enabled(void) { return !grad_disabled; }
void ag_set_anomaly_mode(int enabled) { anomaly_mode = enabled != 0; }
int ag_anomaly_mode(void) { return anomaly_mode; }

/* ---- the op table's names, indexed by enum ag_op ---- */

#define AG_NAME_E(E, name, sym, arity, py, fwd, da, db) [AG_##E] = name,
#define AG_NAME_S(E, name, sym, arity) [AG_##E] = name,
static const char *const op_names[AG_OP_COUNT] = {
    AG_STRUCTURAL_OPS(AG_NAME_S) AG_ELEMENTWISE_OPS(AG_NAME_E)};

#define AG_SYMBOL_E(E, name, sym, arity, py, fwd, da, db) [AG_##E] = sym,
#define AG_SYMBOL_S(E, name, sym, arity) [AG_##E] = sym,
static const char *const op_symbols[AG_OP_COUNT] = {
    AG_STRUCTURAL_OPS(AG_SYMBOL_S) AG_ELEMENTWISE_OPS(AG_SYMBOL_E)};

#define AG_PYTHON_E(E, name, sym, arity, py, fwd, da, db) [AG_##E] = #py,
#define AG_PYTHON_S(E, name, sym, arity) [AG_##E] = "",
static const char *const op_pythons[AG_OP_COUNT] = {
    AG_STRUCTURAL_OPS(AG_PYTHON_S) AG_ELEMENTWISE_OPS(AG_PYTHON_E)};

static int valid_op(int op) { return op >= 0 && op < AG_OP_COUNT; }

int ag_op_count(void) { return AG_OP_COUNT; }
const char *ag_op_name(int op) { return valid_op(op) ? op_names[op] : ""; }
const char *ag_op_symbol(int op) { return valid_op(op) ? op_symbols[op] : ""; }
int ag_op_arity(int op) { return valid_op(op) ? ag_arity(op) : 0; }
const char *ag_op_python(int op) { return valid_op(op) ? op_pythons[op] : ""; }

/* ---- making nodes ---- */

/* An op's result is rejected here, before any node exists, when anomaly mode sees
 * nan or inf. */
static int rejected(double out)
{
    if (anomaly_mode && !isfinite(out)) {
        ag_fail(AG_EANOMALY, 0);
        ag_fail_value(out);
        return 1;
    }
    return 0;
}

static ag_id new_node(int op, double data)
{
    ag_id id;
    ag_alloc_node(op, data, &id);
    return id;
}

ag_id ag_leaf(double data) { return new_node(AG_LEAF, data); }

/* An elementwise op on existing nodes (b is ignored by unary ops). */
ag_id ag_apply(int op, ag_id a, ag_id b)
{
    int arity = ag_arity(op);
    double out = ag_forward_elementwise(op, ag_node_at(a)->data, arity == 2 ? ag_node_at(b)->data : 0.0);
    if (rejected(out))
        return 0;
    if (grad_disabled)
        return new_node(AG_LEAF, out);
    ag_id id;
    ag_node *node = ag_alloc_node(op, out, &id);
    if (node) {
        node->in[0] = a;
        ag_retain(a);
        if (arity == 2) {
            node->in[1] = b;
            ag_retain(b);
        }
    }
    return id;
}

/* v + 2.0 or 2.0 - v: the number becomes a CONST leaf, as micrograd makes Value(2.0),
 * so `_prev` shows it and the graph stays uniform. */
ag_id ag_apply_const(int op, ag_id a, double constant, int constant_first)
{
    double x = ag_node_at(a)->data;
    double out = constant_first ? ag_forward_elementwise(op, constant, x)
                                : ag_forward_elementwise(op, x, constant);
    if (rejected(out))
        return 0;
    if (grad_disabled)
        return new_node(AG_LEAF, out);
    ag_id c = new_node(AG_CONST, constant);
    if (!c)
        return 0;
    ag_id id;
    ag_node *node = ag_alloc_node(op, out, &id);
    if (!node) {
        ag_release(c);
        return 0;
    }
    node->in[0] = constant_first ? c : a;
    node->in[1] = constant_first ? a : c;
    ag_retain(a); /* c's one reference passes to the node */
    return id;
}

/* The value of an n-ary op over inputs given by id. AG_ENOMEM when a wide node's
 * addresses find no memory. */
static int nary_value(int op, const ag_id *inputs, size_t n, double *value)
{
    ag_node *small[64];
    ag_node **in = n <= 64 ? small : malloc(n * sizeof *in);
    if (!in)
        return AG_ENOMEM;
    for (size_t i = 0; i < n; i++)
        in[i] = ag_node_at(inputs[i]);
    *value = ag_value_from(op, in, n, *value);
    if (in != small)
        free(in);
    return AG_OK;
}

/* An n-ary node over inputs (ids the caller keeps alive); local: AG_LOCAL's numbers. */
static ag_id new_nary(int op, const ag_id *inputs, size_t n, double data, const double *local)
{
    int status = nary_value(op, inputs, n, &data);
    if (status != AG_OK) {
        ag_fail(status, 0);
        return 0;
    }
    if (rejected(data))
        return 0;
    if (grad_disabled)
        return new_node(AG_LEAF, data);
    ag_id id;
    ag_node *node = ag_alloc_node(op, data, &id);
    if (!node)
        return 0;
    status = ag_attach_list(node, inputs, n, local);
    if (status != AG_OK) {
        node->op = AG_LEAF; /* no inputs were taken: free it as a plain leaf */
        ag_release(id);
        ag_fail(status, 0);
        return 0;
    }
    return id;
}

ag_id ag_sum(const ag_id *inputs, size_t n) { return new_nary(AG_SUM, inputs, n, 0.0, NULL); }

ag_id ag_custom(double data, const ag_id *inputs, size_t n)
{
    return new_nary(AG_CUSTOM, inputs, n, data, NULL);
}

ag_id ag_local(double data, const ag_id *inputs, const double *local, size_t n)
{
    return new_nary(AG_LOCAL, inputs, n, data, local);
}

ag_id ag_dot(const ag_id *ws, const ag_id *xs, size_t n, ag_id bias)
{
    if (n > (SIZE_MAX / sizeof(ag_id) - 1) / 2) {
        ag_fail(AG_EINVALID, 0);
        return 0;
    }
    size_t count = 2 * n + (bias != 0);
    ag_id small[64];
    ag_id *interleaved = count <= 64 ? small : malloc(count * sizeof *interleaved);
    if (!interleaved) {
        ag_fail(AG_ENOMEM, 0);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        interleaved[2 * i] = ws[i];
        interleaved[2 * i + 1] = xs[i];
    }
    if (bias)
        interleaved[2 * n] = bias;
    ag_id id = new_nary(AG_DOT, interleaved, count, 0.0, NULL);
    if (interleaved != small)
        free(interleaved);
    return id;
}

/* ---- entry points that take ids from outside: checked (invariant 7) ---- */

int ag_zero_grads(const ag_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ag_node_checked(ids[i]))
            return AG_EINVALID;
    for (size_t i = 0; i < n; i++)
        ag_node_at(ids[i])->grad = 0.0;
    return AG_OK;
}
