/* Forward mode and the Hessian-vector product: the op table's derivative language read
 * on tangents and on dual numbers (pyautograd.jvp, hvp, hessian).
 *
 * Every pass-back in ops.h is linear in G: input k gets G times d out / d input k. Read
 * with G = input k's tangent (its rate of change along the direction), it is what input
 * k adds to the result's tangent, so forward mode is the same rows, summed over inputs
 * in the order of the graph (jvp). No op has a tangent rule of its own.
 *
 * The Hessian-vector product is forward over reverse, without building a node: one
 * forward sweep computes every node's tangent along the vector, then one reverse sweep
 * runs the chain rule on dual numbers (a value and its tangent), the language read with
 * each word acting on duals: OP2(E, x, y) is the row's forward on the values, and its
 * tangent is the row's own pass-backs read with G = x's and y's tangents. The adjoints'
 * tangents at the inputs are H v. A tangent that is zero by structure (a number, a node
 * that depends on no input) is skipped, never multiplied: 0 * inf would be nan where
 * the math has nothing.
 *
 * Both sweeps keep their state in arrays of their own, indexed by a node's position in
 * the order; the position sits in the node's grad field for the call (zeroed by the
 * sort and put back after, as grad() does), so no .grad changes. Python rules have no
 * derivative to read: a graph holding one is refused (AG_EPYRULE). Calls no Python.
 * Not here: grad() (grad.c), the reverse sweep (sweep.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "core.h"
#include "higher.h"
#include "nodes.h"
#include "sweep.h"

/* ---- positions: a node's place in the order, in its grad field's slot for the call ---- */

static void set_position(ag_node *node, size_t i) { node->slot = (uint64_t)i + 1; }

/* i + 1, for a node of the order (inputs of its nodes) */
static size_t position(const ag_node *node) { return (size_t)node->slot; }

/* ---- dual numbers and the language read on them ---- */

typedef struct dual {
    double v, d; /* value, tangent */
    int zero;    /* the tangent is 0 by structure: never multiplied */
} dual;

static const dual no_dual = {0.0, 0.0, 1};

/* op applied to duals: its forward on the values, and as tangent the row's pass-backs
 * read with G = each operand's tangent (ops.h: linear in G). */
AG_INLINE dual dual_apply(int op, dual x, dual y)
{
    dual out = {ag_forward_elementwise(op, x.v, y.v), 0.0, 1};
    double c;
    if (!x.zero) {
        ag_contributions(op, x.d, x.v, y.v, out.v, &c, NULL);
        out.d = c;
        out.zero = 0;
    }
    if (ag_arity(op) == 2 && !y.zero) {
        ag_contributions(op, y.d, x.v, y.v, out.v, NULL, &c);
        out.d = out.zero ? c : out.d + c;
        out.zero = 0;
    }
    return out;
}

static inline dual dual_add(dual x, dual y)
{
    return (dual){x.v + y.v, x.zero ? y.d : y.zero ? x.d : x.d + y.d, x.zero && y.zero};
}

#define G dg
#define A da
#define B db
#define OUT dout
#define NUM(x) ((dual){(x), 0.0, 1})
#define OP1(E, x) dual_apply(AG_##E, (x), no_dual)
#define OP2(E, x, y) dual_apply(AG_##E, (x), (y))
#define SELECT(condition, x, y) ((condition) ? (x) : (y))
#define IN(k) input_dual(value, at, k, with_tangents)
#define LOCAL(k) local[k]
#include "derivative_words.h"

/* Input k of a node whose inputs' positions are at[]: its value, and its tangent only
 * when with_tangents (forward mode reads the rules on plain values). */
static inline dual input_dual(const dual *value, const uint32_t *at, size_t k, int with_tangents)
{
    dual x = value[at[k]];
    if (!with_tangents)
        x.zero = 1;
    return x;
}

/* What an elementwise node passes back to input `which`, on duals. SELECT's conditions
 * read the plain values a, b and out. */
static dual pass_back_dual(int op, int which, dual dg, dual da, dual db, dual dout)
{
    double a = da.v, b = db.v, out = dout.v;
    (void)a; (void)b; (void)out;
    switch (op) {
#define AG_DUAL_CASE(E, name, sym, arity, py, fwd, toA, toB) \
    case AG_##E: return which == 0 ? (toA) : (toB);
        AG_ELEMENTWISE_OPS(AG_DUAL_CASE)
#undef AG_DUAL_CASE
    default: return (dual){NAN, NAN, 0};
    }
}

/* What an n-ary node passes back to input k, on duals (its inputs at value[at[...]]). */
static dual pass_back_dual_nary(int op, size_t k, size_t n, dual dg, const dual *value, const uint32_t *at,
                                const double *local, int with_tangents)
{
    switch (op) {
    case AG_SUM: return AG_SUM_TO_INPUT(k);
    case AG_DOT: return (n & 1) && k == n - 1 ? AG_DOT_TO_BIAS : k % 2 == 0 ? AG_DOT_TO_WEIGHT(k) : AG_DOT_TO_X(k);
    case AG_LOCAL: return AG_LOCAL_TO_INPUT(k);
    default: return no_dual;
    }
}

#include "derivative_language_end.h"

/* ---- the sweeps ---- */

/* A sweep's own compact copy of the graph, by position in the order: each node's op,
 * value and tangent, and its inputs' positions (a tape, as replay's), so that the sweeps
 * read arrays in order instead of chasing nodes. */
typedef struct tangent_sweep {
    ag_sorted sorted;
    ag_order order;
    uint8_t *op;
    uint32_t *start;  /* node i's inputs' positions are at[start[i]] up to at[start[i + 1]] */
    uint32_t *at;
    dual *value;      /* the node's value and its tangent along the direction */
    dual *adjoint;    /* hvp: d root / d node and its tangent */
    uint8_t *swept;   /* hvp: something was passed back to it */
} tangent_sweep;

/* ---- scratch: the arrays are kept from call to call (fresh pages for a big graph
 * each time cost more than the sweep), and given back when far bigger than the graph
 * just swept. No Python code runs while a sweep uses them, so no other sweep can. ---- */

typedef struct scratch {
    void *p;
    size_t bytes;
} scratch;

static scratch scratch_op, scratch_start, scratch_at, scratch_value, scratch_adjoint, scratch_swept;

/* At least `bytes` of s (contents kept), or NULL. */
static void *room(scratch *s, size_t bytes)
{
    if (bytes > s->bytes) {
        size_t want = s->bytes ? s->bytes : 4096;
        while (want < bytes)
            want *= 2;
        void *grown = realloc(s->p, want);
        if (!grown)
            return NULL;
        s->p = grown;
        s->bytes = want;
    }
    return s->p;
}

static void *zeroed_room(scratch *s, size_t bytes)
{
    void *p = room(s, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

#define AG_TANGENT_SCRATCH_KEEP ((size_t)1 << 24) /* bytes always worth keeping */

static size_t scratch_held(void)
{
    return scratch_op.bytes + scratch_start.bytes + scratch_at.bytes + scratch_value.bytes
         + scratch_adjoint.bytes + scratch_swept.bytes;
}

static void fit_scratch(size_t used)
{
    scratch *all[] = {&scratch_op, &scratch_start, &scratch_at, &scratch_value,
                      &scratch_adjoint, &scratch_swept};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->bytes > AG_TANGENT_SCRATCH_KEEP && all[i]->bytes / 8 > used * sizeof(dual)) {
            free(all[i]->p);
            *all[i] = (scratch){NULL, 0};
        }
}

/* i + 1 for node id at place i of the order, 0 for a node outside it: an input or output
 * the caller names may be outside root's graph, where the field holds its .grad, not a
 * place, so the place is believed only where the order has that very node. */
static size_t position_of(const tangent_sweep *s, ag_id id)
{
    size_t p = position(ag_node_at(id));
    return p >= 1 && p <= s->order.n && s->order.ids[p - 1] == id ? p : 0;
}

/* Sorts root's graph and copies it into the sweep's arrays; a graph with a Python rule
 * is refused. The seeds (inputs under root) get their tangents, which add up for an
 * input given twice. Every input of a node comes before it in the order (invariant 1),
 * so its position is known when the node is reached. */
static int begin(tangent_sweep *s, ag_id root, const ag_id *inputs, const double *tangents, size_t n_inputs,
                 ag_id *bad)
{
    memset(s, 0, sizeof *s);
    int status = ag_sort_for_grad(root, &s->sorted);
    s->order = s->sorted.order;
    if (status != AG_OK)
        return status;
    size_t n = s->order.n, cap = 2 * n + 16, k = 0;
    if (n >= UINT32_MAX)
        return AG_ENOMEM;
    s->op = room(&scratch_op, n + 1);
    s->start = room(&scratch_start, (n + 1) * sizeof *s->start);
    s->at = room(&scratch_at, cap * sizeof *s->at);
    s->value = room(&scratch_value, (n + 1) * sizeof *s->value);
    if (!s->op || !s->start || !s->at || !s->value)
        return AG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        ag_node *node = ag_node_at(s->order.ids[i]);
        if ((node->flags & AG_FLAG_PYRULE) && ag_hooks.has_rule(node)) {
            *bad = s->order.ids[i];
            return AG_EPYRULE; /* a Python function is no derivative to read */
        }
        size_t m;
        const ag_id *in = ag_inputs_of(node, &m);
        if (k + m > cap) {
            while (k + m > cap)
                cap *= 2;
            uint32_t *grown = cap < UINT32_MAX ? room(&scratch_at, cap * sizeof *grown) : NULL;
            if (!grown)
                return AG_ENOMEM;
            s->at = grown;
        }
        s->start[i] = (uint32_t)k;
        for (size_t j = 0; j < m; j++)
            s->at[k++] = (uint32_t)(position(ag_node_at(in[j])) - 1);
        set_position(node, i);
        s->op[i] = node->op;
        s->value[i] = (dual){node->data, 0.0, 1};
    }
    s->start[n] = (uint32_t)k;
    for (size_t j = 0; j < n_inputs; j++) {
        size_t p = position_of(s, inputs[j]);
        if (p && s->op[p - 1] != AG_CONST) {
            dual *v = &s->value[p - 1];
            double t = tangents ? tangents[j] : 0.0;
            v->d = v->zero ? t : v->d + t;
            v->zero = !tangents;
        }
    }
    return AG_OK;
}

static const double *local_of(const tangent_sweep *s, size_t i)
{
    return s->op[i] == AG_LOCAL ? ag_local_grads_of(ag_node_at(s->order.ids[i])) : NULL;
}

/* Every node's tangent, inputs first: the sum over its inputs, in order, of what each
 * passes on when its tangent is the G arriving (the rows read on doubles; the n-ary
 * rules on plain values). A seed that is an interior node adds what flows into it to
 * its own tangent: with x and t = x*y both inputs, t moves with x too, as grad()'s
 * d/dx counts the path through t, so the result is grad . tangents. */
static void sweep_forward(tangent_sweep *s)
{
    for (size_t i = 0; i < s->order.n; i++) {
        int op = s->op[i];
        if (ag_op_is_source(op) || op == AG_CUSTOM)
            continue;
        const uint32_t *at = s->at + s->start[i];
        size_t n = s->start[i + 1] - s->start[i];
        dual *self = &s->value[i];
        for (size_t k = 0; k < n; k++) {
            const dual *in = &s->value[at[k]];
            if (in->zero || s->op[at[k]] == AG_CONST)
                continue;
            double c = 0.0;
            if (ag_op_is_nary(op))
                c = pass_back_dual_nary(op, k, n, (dual){in->d, 0.0, 1}, s->value, at, local_of(s, i), 0).v;
            else
                ag_contributions(op, in->d, s->value[at[0]].v, n > 1 ? s->value[at[1]].v : 0.0, self->v,
                                 k == 0 ? &c : NULL, k == 1 ? &c : NULL);
            self->d = self->zero ? c : self->d + c;
            self->zero = 0;
        }
    }
}

/* Puts every grad back (and clears the marks of a sort that left them), frees the
 * sweep's arrays and ends the call: the root is released, which may run Python, last. */
static void end(tangent_sweep *s, int grads_done)
{
    for (size_t i = 0; !grads_done && i < s->order.n; i++) {
        ag_node *node = ag_node_at(s->order.ids[i]);
        node->grad = 0.0;
        node->flags &= (uint16_t)~AG_FLAG_SORTING;
    }
    if (!grads_done)
        ag_put_back(&s->sorted.kept);
    fit_scratch(s->sorted.order.n);
    ag_sorted_done(&s->sorted);
}

/* ---- jvp: the outputs' tangents along the inputs' ---- */

int ag_jvp(ag_id root, const ag_id *outputs, size_t n_outputs, const ag_id *inputs, const double *tangents,
           size_t n_inputs, double *out)
{
    tangent_sweep s;
    ag_id bad = 0;
    int status = begin(&s, root, inputs, tangents, n_inputs, &bad);
    if (status == AG_OK)
        sweep_forward(&s);
    for (size_t k = 0; status == AG_OK && k < n_outputs; k++) {
        size_t at = position_of(&s, outputs[k]);
        out[k] = at && !s.value[at - 1].zero ? s.value[at - 1].d : 0.0;
    }
    if (status != AG_OK)
        ag_fail(status, bad);
    end(&s, 0);
    return status;
}

/* ---- jvp with create_graph: the tangents as terms, built as nodes (higher.c) ---- */

int ag_jvp_terms(ag_id root, const ag_id *outputs, size_t n_outputs, const ag_id *inputs,
                 const double *tangents, size_t n_inputs, ag_id *out)
{
    tangent_sweep s;
    ag_id bad = 0;
    int status = begin(&s, root, inputs, NULL, n_inputs, &bad);
    size_t n_order = status == AG_OK ? s.order.n : 0;
    ag_term *term = calloc(n_order ? n_order : 1, sizeof *term);
    uint8_t *has = calloc(n_order ? n_order : 1, 1);
    double *numbers = calloc(n_outputs ? n_outputs : 1, sizeof *numbers);
    if (status == AG_OK && (!term || !has || !numbers))
        status = AG_ENOMEM;
    ag_choice_noted(1);
    for (size_t i = 0; status == AG_OK && i < n_order; i++)
        ag_node_at(s.order.ids[i])->flags |= AG_FLAG_SORTING; /* the graph's own nodes */
    for (size_t k = 0; status == AG_OK && k < n_inputs; k++) {
        size_t at = position_of(&s, inputs[k]);
        if (at && ag_node_at(inputs[k])->op != AG_CONST) { /* a constant has no tangent (begin) */
            ag_term t = ag_term_number(tangents[k]);
            term[at - 1] = has[at - 1] ? ag_term_add(term[at - 1], t) : t;
            has[at - 1] = 1;
        }
    }
    for (size_t i = 0; status == AG_OK && i < n_order; i++) {
        ag_id id = s.order.ids[i];
        const ag_node *node = ag_node_at(id);
        if (ag_op_is_source(node->op) || node->op == AG_CUSTOM)
            continue; /* a seed adds what flows in, as in sweep_forward */
        size_t n;
        ag_inputs_of(node, &n);
        for (size_t k = 0; status == AG_OK && k < n; k++) {
            size_t at = position(ag_node_at(ag_inputs_of(node, &n)[k])); /* read anew: nodes were made */
            if (!at || !has[at - 1])
                continue;
            ag_term c = ag_pass_back_one(id, k, ag_term_copy(term[at - 1]));
            term[i] = has[i] ? ag_term_add(term[i], c) : c;
            has[i] = 1;
            if (ag_term_failed(term[i]))
                status = ag_last_error() ? ag_last_error() : AG_ENOMEM;
        }
    }
    for (size_t k = 0; k < n_outputs; k++) {
        size_t at = status == AG_OK ? position_of(&s, outputs[k]) : 0;
        out[k] = at && has[at - 1] ? ag_term_own(term[at - 1]) : 0;
        if (!out[k] && at && has[at - 1])
            numbers[k] = term[at - 1].constant;
    }
    if (status == AG_OK && ag_choice_noted(0))
        status = ag_mark_chosen(out, n_outputs);
    /* the grads go back before any node can die (releasing terms may free nodes); after
     * a failed begin too, which may have written positions into some */
    for (size_t i = 0; i < s.order.n; i++) {
        ag_node *node = ag_node_at(s.order.ids[i]);
        node->grad = 0.0;
        node->flags &= (uint16_t)~AG_FLAG_SORTING;
    }
    ag_put_back(&s.sorted.kept);
    for (size_t k = 0; status == AG_OK && k < n_outputs; k++)
        if (!out[k]) {
            if (!(out[k] = ag_leaf(numbers[k])))
                status = AG_ENOMEM;
            else if (ag_choice_noted(0))
                ag_node_at(out[k])->flags |= AG_FLAG_CHOSEN;
        }
    for (size_t i = 0; has && i < n_order; i++)
        if (has[i])
            ag_term_release(term[i]);
    ag_constant_nodes_done();
    if (status != AG_OK) {
        for (size_t k = 0; k < n_outputs; k++)
            if (out[k])
                ag_release(out[k]);
        ag_fail(status, bad);
    }
    free(term);
    free(has);
    free(numbers);
    end(&s, 1);
    return status;
}

/* ---- hvp: forward over reverse, on dual numbers ---- */

int ag_hvp(ag_id root, const ag_id *inputs, const double *vector, size_t n_inputs, double *out)
{
    tangent_sweep s;
    ag_id bad = 0;
    int status = begin(&s, root, inputs, vector, n_inputs, &bad);
    size_t n_order = status == AG_OK ? s.order.n : 0;
    if (status == AG_OK) {
        sweep_forward(&s);
        s.adjoint = room(&scratch_adjoint, (n_order + 1) * sizeof *s.adjoint);
        s.swept = zeroed_room(&scratch_swept, n_order + 1);
        if (!s.adjoint || !s.swept)
            status = AG_ENOMEM;
    }
    if (status == AG_OK && n_order) { /* d root / d root = 1, along any direction */
        s.adjoint[n_order - 1] = (dual){1.0, 0.0, 1};
        s.swept[n_order - 1] = 1;
    }
    for (size_t i = n_order; status == AG_OK && i-- > 0;) {
        int op = s.op[i];
        if (!s.swept[i] || ag_op_is_source(op) || op == AG_CUSTOM)
            continue;
        const uint32_t *at = s.at + s.start[i];
        size_t n = s.start[i + 1] - s.start[i];
        const double *local = local_of(&s, i);
        for (size_t k = 0; k < n; k++) {
            size_t p = at[k];
            if (s.op[p] == AG_CONST)
                continue; /* nothing needs its gradient */
            dual c = ag_op_is_nary(op)
                         ? pass_back_dual_nary(op, k, n, s.adjoint[i], s.value, at, local, 1)
                         : pass_back_dual(op, (int)k, s.adjoint[i], s.value[at[0]],
                                          n > 1 ? s.value[at[1]] : no_dual, s.value[i]);
            s.adjoint[p] = s.swept[p] ? dual_add(s.adjoint[p], c) : c;
            s.swept[p] = 1;
        }
    }
    for (size_t k = 0; status == AG_OK && k < n_inputs; k++) {
        size_t p = position_of(&s, inputs[k]);
        out[k] = p && s.swept[p - 1] && !s.adjoint[p - 1].zero ? s.adjoint[p - 1].d : 0.0;
    }
    if (status != AG_OK)
        ag_fail(status, bad);
    end(&s, 0);
    return status;
}

/* What tangents.c keeps beside the arena (arena.h): its scratch. */
const ag_side_table ag_tangents_table = {0, NULL, scratch_held, fit_scratch, NULL};
