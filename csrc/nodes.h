/* What every op computes, node by node: its forward value and its chain-rule step,
 * side by side per op. Elementwise ops come from the table (ops.h); the n-ary ops are
 * written out here. Making a node (nodes.c), replaying a graph and the backward sweep
 * (sweep.c) all compute through these, which keeps replay bitwise equal to rebuilding.
 * Inputs are reached by address (in[0..n)), as the sweep's tapes hold them. */
#ifndef AG_NODES_H
#define AG_NODES_H

#include <math.h>
#include "arena.h"

/* ---- modes (nodes.c) ---- */

extern int ag_threads_in_modes;  /* threads with no_grad or detect_anomaly on */
int ag_grad_enabled(void);       /* this thread's flags (thread-local: slower to read) */
int ag_anomaly_mode(void);

static inline int ag_recording(void) { return !ag_threads_in_modes || ag_grad_enabled(); }
static inline int ag_checking(void) { return ag_threads_in_modes && ag_anomaly_mode(); }

/* ---- the op table's derivative language read as C arithmetic on doubles ----
 * (ops.h): the first-order sweep. OP1/OP2 call the row's forward, which folds to the
 * plain expression (MUL(x, y) is x * y), so backward's arithmetic is what it always was. */
#define G g
#define A a
#define B b
#define OUT out
#define NUM(x) (x)
#define OP1(E, x) ag_forward_elementwise(AG_##E, (x), 0.0)
#define OP2(E, x, y) ag_forward_elementwise(AG_##E, (x), (y))
#define SELECT(condition, x, y) ((condition) ? (x) : (y))
#define IN(k) in[k]->data
#define LOCAL(k) local[k]
#include "derivative_words.h"

/* What an elementwise node passes back: *ga to input a, *gb to input b, each computed
 * only when asked for (a constant input needs none: pow's is a log). */
AG_INLINE void ag_contributions(int op, double g, double a, double b, double out, double *ga, double *gb)
{
    (void)a; (void)b; (void)out;
    switch (op) {
#define AG_GRAD_CASE(E, name, sym, arity, py, fwd, toA, toB) \
    case AG_##E: if (ga) *ga = (toA); if (gb) *gb = (toB); return;
        AG_ELEMENTWISE_OPS(AG_GRAD_CASE)
#undef AG_GRAD_CASE
    default: if (ga) *ga = NAN; if (gb) *gb = NAN; return;
    }
}

/* sum: inputs[0] + inputs[1] + ..., left to right */
static inline double ag_sum_forward(ag_node *const *in, size_t n)
{
    double acc = n ? in[0]->data : 0.0;
    for (size_t i = 1; i < n; i++)
        acc += in[i]->data;
    return acc;
}

static inline int ag_sum_backward(double g, ag_node *const *in, size_t n, int check)
{
    for (size_t k = 0; k < n; k++)
        in[k]->grad += AG_SUM_TO_INPUT(k);
    return !check || isfinite(g);
}

/* dot: [bias] + w0*x0 + w1*x1 + ..., micrograd's sum(w*x for ..., b) order */
static inline double ag_dot_forward(ag_node *const *in, size_t n)
{
    double acc = (n & 1) ? in[n - 1]->data : 0.0;
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += in[i]->data * in[i + 1]->data;
    return acc;
}

static inline int ag_dot_backward(double g, ag_node *const *in, size_t n, int check)
{
    int ok = 1;
    if (check) {
        for (size_t k = 0; k + 1 < n; k += 2) {
            double dw = AG_DOT_TO_WEIGHT(k), dx = AG_DOT_TO_X(k + 1);
            in[k]->grad += dw;
            in[k + 1]->grad += dx;
            ok &= isfinite(dw) && isfinite(dx);
        }
    } else { /* training's hottest loop: no checks to pay for */
        for (size_t k = 0; k + 1 < n; k += 2) {
            in[k]->grad += AG_DOT_TO_WEIGHT(k);
            in[k + 1]->grad += AG_DOT_TO_X(k + 1);
        }
    }
    if (n & 1)
        in[n - 1]->grad += AG_DOT_TO_BIAS;
    return !check || (ok && isfinite(g));
}

/* A layer's dot node (arena.h, ag_dot_rows): the same sum and the same step as
 * ag_dot_forward and ag_dot_backward, over its rows' node addresses, so no input is
 * looked up by id: weight k is weights->nodes[k], its x xs->nodes[k], the bias last in
 * the weight row. */
static inline double ag_dot_rows_forward(const ag_dot_rows *rows)
{
    ag_node *const *w = rows->weights->nodes, *const *x = rows->xs->nodes;
    size_t pairs = rows->xs->n;
    double acc = rows->weights->n > pairs ? w[pairs]->data : 0.0;
    for (size_t k = 0; k < pairs; k++)
        acc += w[k]->data * x[k]->data;
    return acc;
}

static inline int ag_dot_rows_backward(double g, const ag_dot_rows *rows, int check)
{
    ag_node *const *w = rows->weights->nodes, *const *x = rows->xs->nodes;
    size_t pairs = rows->xs->n;
    int ok = 1;
    for (size_t k = 0; k < pairs; k++) {
        ag_node *const in[2] = {w[k], x[k]}; /* the pair, as IN(0) and IN(1) */
        double dw = AG_DOT_TO_WEIGHT(0), dx = AG_DOT_TO_X(1);
        in[0]->grad += dw;
        in[1]->grad += dx;
        if (check)
            ok &= isfinite(dw) && isfinite(dx);
    }
    if (rows->weights->n > pairs)
        w[pairs]->grad += AG_DOT_TO_BIAS;
    return !check || (ok && isfinite(g));
}

/* local: Value(data, children, local_grads), derivatives given as numbers */
static inline int ag_local_backward(double g, const double *local, ag_node *const *in, size_t n, int check)
{
    int ok = 1;
    for (size_t k = 0; k < n; k++) {
        double d = AG_LOCAL_TO_INPUT(k);
        in[k]->grad += d;
        ok &= !check || isfinite(d);
    }
    return ok;
}

#include "derivative_language_end.h"

/* ---- elementwise ops: the table's rows ---- */

/* A constant input (CONST, like micrograd's Value(2) in x * 2) gets no gradient:
 * nothing reads it, and pow's d/d exponent of x ** 2.0 would cost a log and turn
 * into nan for x < 0, which detect_anomaly would report for ordinary code. */
static inline int ag_elementwise_backward(const ag_node *node, ag_node *a, ag_node *b, int check)
{
    double ga = 0.0, gb = 0.0;
    int want_a = a->op != AG_CONST, want_b = b && b->op != AG_CONST;
    ag_contributions(node->op, node->grad, a->data, b ? b->data : 0.0, node->data,
                     want_a ? &ga : NULL, want_b ? &gb : NULL);
    if (want_a)
        a->grad += ga;
    if (want_b)
        b->grad += gb;
    return !check || ((!want_a || isfinite(ga)) && (!want_b || isfinite(gb)));
}

/* ---- every op ---- */

/* The value of a node of op `op` from its inputs. Sources and hand-made nodes keep
 * their own data (`own`). */
static inline double ag_value_from(int op, ag_node *const *in, size_t n, double own)
{
    switch (op) {
    case AG_SUM: return ag_sum_forward(in, n);
    case AG_DOT: return ag_dot_forward(in, n);
    default:
        if (ag_op_is_source(op) || ag_op_is_hand_made(op))
            return own;
        return ag_forward_elementwise(op, in[0]->data, n > 1 ? in[1]->data : 0.0);
    }
}

/* One node's chain-rule step: adds grad * d node / d input to each input's grad.
 * Returns 0 when `check` (detect_anomaly) is on and a contribution is nan or inf.
 * A Python-written _backward (AG_FLAG_PYRULE) is the sweep's business, not this. */
static inline int ag_propagate(const ag_node *node, ag_node *const *in, size_t n, int check)
{
    switch (node->op) {
    case AG_SUM: return ag_sum_backward(node->grad, in, n, check);
    case AG_DOT: return ag_dot_backward(node->grad, in, n, check);
    case AG_LOCAL: return ag_local_backward(node->grad, ag_local_grads_of(node), in, n, check);
    default:
        if (ag_op_is_source(node->op) || node->op == AG_CUSTOM)
            return 1; /* nothing to pass on (micrograd's default _backward) */
        return ag_elementwise_backward(node, in[0], n > 1 ? in[1] : NULL, check);
    }
}

/* ---- making nodes: the ops Python calls most, inline so each op's row folds in ---- */

/* An op's result is rejected here, before any node exists, when detect_anomaly sees
 * nan or inf. */
static inline int ag_rejected(double out)
{
    if (ag_checking() && !isfinite(out)) {
        ag_fail(AG_EANOMALY, 0);
        ag_fail_value(out);
        return 1;
    }
    return 0;
}

AG_INLINE ag_id ag_leaf(double data)
{
    ag_id id;
    ag_alloc_node(AG_LEAF, data, &id);
    return id;
}

/* An elementwise op on existing nodes (b is ignored by unary ops). Under no_grad the
 * result is a leaf. */
AG_INLINE ag_id ag_apply(int op, ag_id a, ag_id b)
{
    int arity = ag_arity(op);
    double out = ag_forward_elementwise(op, ag_node_at(a)->data, arity == 2 ? ag_node_at(b)->data : 0.0);
    if (ag_rejected(out))
        return 0;
    if (!ag_recording())
        return ag_leaf(out);
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
AG_INLINE ag_id ag_apply_const(int op, ag_id a, double constant, int constant_first)
{
    double x = ag_node_at(a)->data;
    double out = constant_first ? ag_forward_elementwise(op, constant, x)
                                : ag_forward_elementwise(op, x, constant);
    if (ag_rejected(out))
        return 0;
    if (!ag_recording())
        return ag_leaf(out);
    ag_id c = ag_leaf(constant);
    if (!c)
        return 0;
    ag_node_at(c)->op = AG_CONST;
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

#endif
