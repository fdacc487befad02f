/* Derivatives that are themselves graphs: the op table's derivative language read as
 * node-building, for pyautograd.grad(create_graph=True).
 *
 * ops.h writes each op's local derivatives once, in a small language (A, B, OUT, ONE,
 * ADD, MUL, SELECT, ...). Read as C arithmetic it is the first-order sweep; read here,
 * each word builds nodes instead, so a gradient becomes a Value whose graph depends on
 * the inputs and can be differentiated again, to any order. Nothing about derivatives
 * is written a second time.
 *
 * A term is a node or a plain number. Numbers fold (ONE * x is x, no node), which keeps
 * a derivative graph about as small as the graph it came from. Terms own their node's
 * reference (but for the differentiated graph's own nodes, borrowed: its root keeps
 * them alive), and the operations take their operands' references (so the nested
 * formulas of the table free everything they no longer need). A failed allocation
 * makes a failed term, which every operation passes on. Calls no Python.
 * Not here: the sweep that uses this (grad.c, ag_grad). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "higher.h"
#include "nodes.h"

#define FAILED ((ag_id)UINT32_MAX)

static const ag_term failed_term = {FAILED, 1, 0.0};

ag_term ag_term_number(double x) { return (ag_term){0, 1, x}; }

ag_term ag_term_node(ag_id id)
{
    ag_retain(id);
    return (ag_term){id, 0, 0.0};
}

ag_term ag_term_borrowed(ag_id id) { return (ag_term){id, 1, 0.0}; }

int ag_term_failed(ag_term t) { return t.node == FAILED; }

ag_term ag_term_failure(void) { return failed_term; }

ag_term ag_term_copy(ag_term t)
{
    if (!t.borrowed)
        ag_retain(t.node);
    return t;
}

ag_id ag_term_own(ag_term t)
{
    if (t.node)
        ag_retain(t.node);
    return t.node;
}

void ag_term_release(ag_term t)
{
    if (!t.borrowed)
        ag_release(t.node);
}

/* A new node's term (its one reference), or the failed term. */
static ag_term made(ag_id id) { return id ? (ag_term){id, 0, 0.0} : failed_term; }

/* ---- numbers as nodes ----
 * An op between a node and a number needs the number as a node (a CONST, as x * 2
 * makes). A derivative graph uses a few numbers (1 in 1 - out*out, an exponent) over
 * and over, so each one's node is made once per grad() call and shared. */

#define AG_SHARED_CONSTANTS 16

static struct { double value; ag_id node; } shared[AG_SHARED_CONSTANTS];
static size_t n_shared;

/* The CONST node for x (a new reference), 0 when memory runs out. */
ag_id ag_constant_node(double x)
{
    for (size_t i = 0; i < n_shared; i++)
        if (memcmp(&shared[i].value, &x, sizeof x) == 0) { /* bitwise: 0.0 and -0.0 differ */
            ag_retain(shared[i].node);
            return shared[i].node;
        }
    ag_id id = ag_leaf(x);
    if (!id)
        return 0;
    ag_node_at(id)->op = AG_CONST;
    if (n_shared < AG_SHARED_CONSTANTS) {
        shared[n_shared].value = x;
        shared[n_shared++].node = id;
        ag_retain(id); /* the table's own reference */
    }
    return id;
}

/* Drops the shared numbers' nodes: at the end of each grad() call. */
void ag_constant_nodes_done(void)
{
    for (size_t i = 0; i < n_shared; i++)
        ag_release(shared[i].node);
    n_shared = 0;
}

/* op applied to two terms, taking their references. */
static ag_term binary(int op, ag_term a, ag_term b)
{
    ag_term out;
    if (ag_term_failed(a) || ag_term_failed(b))
        out = failed_term;
    else if (!a.node && !b.node)
        out = ag_term_number(ag_forward_elementwise(op, a.constant, b.constant));
    else if (!a.node || !b.node) {
        ag_id c = ag_constant_node(a.node ? b.constant : a.constant);
        out = made(c ? ag_apply(op, a.node ? a.node : c, b.node ? b.node : c) : 0);
        if (c)
            ag_release(c); /* the op's node holds it */
    } else
        out = made(ag_apply(op, a.node, b.node));
    ag_term_release(a);
    ag_term_release(b);
    return out;
}

static ag_term unary(int op, ag_term a)
{
    ag_term out;
    if (ag_term_failed(a))
        out = failed_term;
    else if (!a.node)
        out = ag_term_number(ag_forward_elementwise(op, a.constant, 0.0));
    else
        out = made(ag_apply(op, a.node, 0));
    ag_term_release(a);
    return out;
}

static int is_number(ag_term t, double x) { return !t.node && t.constant == x; }

/* Products and sums with 0 and 1 fold away: g * 1 is g, g + 0 is g. (0 * g is not
 * folded: it is nan where g is inf, as IEEE and the first-order sweep have it.) */
ag_term ag_term_mul(ag_term a, ag_term b)
{
    if (is_number(a, 1.0))
        return b;
    if (is_number(b, 1.0))
        return a;
    if (is_number(a, -1.0))
        return unary(AG_NEG, b);
    if (is_number(b, -1.0))
        return unary(AG_NEG, a);
    return binary(AG_MUL, a, b);
}

ag_term ag_term_add(ag_term a, ag_term b)
{
    if (is_number(a, 0.0))
        return b;
    if (is_number(b, 0.0))
        return a;
    return binary(AG_ADD, a, b);
}

/* ---- the derivative language, building nodes ---- */

/* A node's input as a term: a constant (CONST, like the 2 in x ** 2) is read as its
 * number, so derivative graphs hold no nodes for numbers and never differentiate them. */
static ag_term input_term(ag_id id)
{
    const ag_node *node = ag_node_at(id);
    return node->op == AG_CONST ? ag_term_number(node->data) : ag_term_borrowed(id);
}

/* Any row applied to two terms: sums and products fold their 0s and 1s. */
static ag_term apply2(int op, ag_term x, ag_term y)
{
    return op == AG_ADD ? ag_term_add(x, y) : op == AG_MUL ? ag_term_mul(x, y) : binary(op, x, y);
}

#define G ag_term_copy(g)
#define A input_term(a_id)
#define B input_term(b_id)
#define OUT ag_term_borrowed(out_id)
#define NUM(x) ag_term_number(x)
#define OP1(E, x) unary(AG_##E, (x))
#define OP2(E, x, y) apply2(AG_##E, (x), (y))
#define IN(k) input_term(inputs[k])
#define LOCAL(k) ag_local_grads_of(node)[k]
#include "derivative_words.h"
#define SELECT(condition, x, y) (note_choice(#condition, a_id, b_id), (condition) ? (x) : (y))

/* ---- branches picked by the values of the time ----
 * SELECT builds one branch, picked by the current values: a derivative graph that
 * holds it is right only while the condition comes out the same. Replay would run it
 * at other values, so grad() marks such graphs (AG_FLAG_CHOSEN) for forward() to
 * refuse. A condition only on inputs that are constants (b == 0.0 in x ** 2) never
 * changes, and does not count. */
static int choice_noted;

/* Whether the C condition `text` reads the variable `name` (a, b or out). */
static int reads(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        int starts = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
        int ends = !(isalnum((unsigned char)p[len]) || p[len] == '_');
        if (starts && ends)
            return 1;
    }
    return 0;
}

static void note_choice(const char *condition, ag_id a_id, ag_id b_id)
{
    int a_varies = ag_node_at(a_id)->op != AG_CONST, b_varies = b_id && ag_node_at(b_id)->op != AG_CONST;
    if ((reads(condition, "a") && a_varies) || (reads(condition, "b") && b_varies)
        || (reads(condition, "out") && (a_varies || b_varies)))
        choice_noted = 1;
}

int ag_choice_noted(int forget)
{
    int noted = choice_noted;
    if (forget)
        choice_noted = 0;
    return noted;
}

/* What an elementwise node passes back to input a (which 0) or b (which 1), given the
 * gradient g arriving at it (borrowed), as a term. */
static ag_term contribution(ag_id out_id, const ag_node *node, int which, ag_term g)
{
    ag_id a_id = node->in[0], b_id = node->in[1];
    double a = ag_node_at(a_id)->data, b = b_id ? ag_node_at(b_id)->data : 0.0, out = node->data;
    (void)a; (void)b; (void)out; (void)b_id;
    switch (node->op) {
#define AG_TERM_CASE(E, name, sym, arity, py, fwd, toA, toB) \
    case AG_##E: return which == 0 ? (toA) : (toB);
        AG_ELEMENTWISE_OPS(AG_TERM_CASE)
#undef AG_TERM_CASE
    default: return failed_term;
    }
}

/* contribution[k] = what the node passes back to input k given the gradient g arriving
 * at it (taking g's reference), for each of its n inputs; the number 0 for a constant
 * input (nothing needs its gradient). AG_ENOMEM (or the anomaly that stopped an op),
 * with nothing left owned, on failure. */
int ag_chain_terms(ag_id id, ag_term g, ag_term *contributions, size_t n)
{
    const ag_node *node = ag_node_at(id);
    const ag_id *inputs = ag_inputs_of(node, &n);
    for (size_t k = 0; k < n; k++)
        contributions[k] = ag_term_number(0.0);
    switch (node->op) {
    case AG_SUM:
        for (size_t k = 0; k < n; k++)
            contributions[k] = AG_SUM_TO_INPUT(k);
        break;
    case AG_DOT: /* (w0, x0, w1, x1, ..., [bias]) */
        for (size_t k = 0; k + 1 < n; k += 2) {
            contributions[k] = AG_DOT_TO_WEIGHT(k);
            contributions[k + 1] = AG_DOT_TO_X(k + 1);
        }
        if (n & 1)
            contributions[n - 1] = AG_DOT_TO_BIAS;
        break;
    case AG_LOCAL:
        for (size_t k = 0; k < n; k++)
            contributions[k] = AG_LOCAL_TO_INPUT(k);
        break;
    default:
        if (ag_op_is_source(node->op) || node->op == AG_CUSTOM)
            break;
        for (size_t k = 0; k < n; k++)
            if (ag_node_at(inputs[k])->op != AG_CONST)
                contributions[k] = contribution(id, node, (int)k, g);
    }
    ag_term_release(g);
    for (size_t k = 0; k < n; k++)
        if (ag_term_failed(contributions[k])) {
            int status = ag_last_error();
            for (size_t j = 0; j < n; j++)
                ag_term_release(contributions[j]);
            return status ? status : AG_ENOMEM;
        }
    return AG_OK;
}

ag_term ag_pass_back_one(ag_id id, size_t k, ag_term g)
{
    const ag_node *node = ag_node_at(id);
    size_t n;
    const ag_id *inputs = ag_inputs_of(node, &n);
    ag_term out = ag_term_number(0.0);
    if (k >= n || ag_node_at(inputs[k])->op == AG_CONST) {
        /* nothing: a constant's gradient is never needed */
    } else if (node->op == AG_SUM) {
        out = AG_SUM_TO_INPUT(k);
    } else if (node->op == AG_DOT) {
        out = (n & 1) && k == n - 1 ? AG_DOT_TO_BIAS : k % 2 == 0 ? AG_DOT_TO_WEIGHT(k) : AG_DOT_TO_X(k);
    } else if (node->op == AG_LOCAL) {
        out = AG_LOCAL_TO_INPUT(k);
    } else if (!ag_op_is_source(node->op) && node->op != AG_CUSTOM) {
        out = contribution(id, node, (int)k, g);
    }
    ag_term_release(g);
    return out;
}

#include "derivative_language_end.h"

int ag_mark_chosen(const ag_id *out, size_t n_out)
{
    size_t depth = 0, cap = n_out + 64;
    ag_id *stack = malloc(cap * sizeof *stack);
    if (!stack)
        return AG_ENOMEM;
    for (size_t k = 0; k < n_out; k++)
        if (out[k])
            stack[depth++] = out[k];
    while (depth) {
        ag_node *node = ag_node_at(stack[--depth]);
        if (node->flags & (AG_FLAG_SORTING | AG_FLAG_CHOSEN))
            continue;
        node->flags |= AG_FLAG_CHOSEN;
        size_t n;
        const ag_id *inputs = ag_inputs_of(node, &n);
        if (depth + n > cap) {
            while (depth + n > cap)
                cap *= 2;
            ag_id *grown = realloc(stack, cap * sizeof *stack);
            if (!grown) {
                free(stack);
                return AG_ENOMEM;
            }
            stack = grown;
        }
        for (size_t i = 0; i < n; i++)
            stack[depth++] = inputs[i];
    }
    free(stack);
    return AG_OK;
}
