/* Making nodes: the ops Python calls (through value.c and graph.c), the op table's
 * names, and the per-thread modes (no_grad, detect_anomaly).
 * Not here: storage and freeing (arena.c), whole-graph sweeps (sweep.c). */
#include <math.h>
#include <stdlib.h>
#include "arena.h"
#include "nodes.h"
#include "ops.h"
#include "core.h"

/* Per-thread modes, like torch.no_grad. Reading a thread-local from a shared object
 * costs a library call, so ag_threads_in_modes counts the threads that have any mode
 * on, and the ops read their thread's flags only when it is not 0. */
static _Thread_local int grad_disabled;  /* pyautograd.no_grad() */
static _Thread_local int anomaly_mode;   /* pyautograd.detect_anomaly() */
int ag_threads_in_modes;

static void set_modes(int disabled, int anomaly)
{
    ag_threads_in_modes += (disabled || anomaly) - (grad_disabled || anomaly_mode);
    grad_disabled = disabled;
    anomaly_mode = anomaly;
}

void ag_set_grad_enabled(int enabled) { set_modes(!enabled, anomaly_mode); }
int ag_grad_enabled(void) { return !grad_disabled; }
void ag_set_anomaly_mode(int enabled) { set_modes(grad_disabled, enabled != 0); }
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

/* ---- making nodes (the one- and two-input ops are inline, in nodes.h) ---- */

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

/* An n-ary node over inputs (ids the caller keeps alive); local: AG_LOCAL's numbers;
 * rows: a layer's dot node over its two rows (its value and inputs come from them). */
static ag_id new_nary(int op, const ag_id *inputs, size_t n, double data, const double *local,
                      const ag_dot_rows *rows)
{
    int status = AG_OK;
    if (rows)
        data = ag_dot_rows_forward(rows);
    else
        status = nary_value(op, inputs, n, &data);
    if (status != AG_OK) {
        ag_fail(status, 0);
        return 0;
    }
    if (ag_rejected(data))
        return 0;
    if (!ag_recording())
        return ag_leaf(data);
    ag_id id;
    ag_node *node = ag_alloc_node(op, data, &id);
    if (!node)
        return 0;
    status = rows ? ag_attach_rows_list(id, rows) : ag_attach_list(id, inputs, n, local);
    if (status != AG_OK) {
        node->op = AG_LEAF; /* no inputs were taken: free it as a plain leaf */
        ag_release(id);
        ag_fail(status, 0);
        return 0;
    }
    return id;
}

ag_id ag_sum(const ag_id *inputs, size_t n) { return new_nary(AG_SUM, inputs, n, 0.0, NULL, NULL); }

ag_id ag_custom(double data, const ag_id *inputs, size_t n)
{
    return new_nary(AG_CUSTOM, inputs, n, data, NULL, NULL);
}

ag_id ag_local(double data, const ag_id *inputs, const double *local, size_t n)
{
    return new_nary(AG_LOCAL, inputs, n, data, local, NULL);
}

/* The dot node: bias + w0*x0 + w1*x1 + ..., its inputs interleaved (w0, x0, w1, x1, ...,
 * bias), the order the sum is taken in. */
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
    ag_id id = new_nary(AG_DOT, interleaved, count, 0.0, NULL, NULL);
    if (interleaved != small)
        free(interleaved);
    return id;
}

/* A layer's dot node: the same node as ag_dot over the rows' ids, interleaved straight
 * into its list. */
ag_id ag_dot_over_rows(ag_row *weights, ag_row *xs)
{
    ag_dot_rows rows = {weights, xs};
    return new_nary(AG_DOT, NULL, 0, 0.0, NULL, &rows);
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
