/* The op table: every differentiable scalar op, defined once.
 *
 * One row per elementwise op: its enum name, its Python name, the symbol `_op` shows,
 * its arity, where Python reaches it (a number slot such as nb_add, `method` for
 * v.relu(), `internal` for ops only the engine makes), its forward value and what it
 * passes back to each input. Everything else is generated from the rows: the C forward
 * and the C backward (below), Value's operators and methods (csrc/value.c), the
 * derivative graphs of pyautograd.grad(create_graph=True) (csrc/higher.c) and the
 * names Python sees. Adding an op is one row here plus its tests.
 *
 * The forward is C on doubles: `a`, `b` are the input values. What an op passes back
 * is written like PyTorch's derivatives.yaml, in terms of G, the gradient arriving at
 * its result: for MUL, input a gets G * b. It is written in a small language read two
 * ways: on doubles for backward(), and as new nodes for derivatives that are themselves
 * differentiable. In it, G, A, B and OUT are the incoming gradient, the inputs and the
 * result, ONE and ZERO numbers, ADD SUB MUL DIV NEG POW LOG STEP GATE ops of this table,
 * and SELECT(condition, x, y) picks x or y by a condition on the current values a, b
 * and out (C's ?:, so only the chosen side is computed or built). Domain errors follow
 * IEEE like PyTorch: log(-1) is nan, 1/0 is inf, nothing traps. At the edges:
 *   relu: GATE(G, OUT): G where out > 0, else exactly 0, even from an inf or nan G
 *         (PyTorch's where, not 0 * inf = nan); so 0 at 0 (micrograd's `out > 0`) and
 *         at nan, and relu's second derivative is 0 (GATE's own row).
 *   pow:  to the base G * b * a^(b-1), but exactly 0 where b == 0 (x ** 0 is constant,
 *         PyTorch's rule); to the exponent G * out * log(a), but G * 0 where a == 0 and
 *         b >= 0 (PyTorch's rule: nan only from a nan or inf G, as in PyTorch).
 *   log:  G * (1/a), so at 0 it is inf and below 0 the value is already nan.
 *   div:  to b, -(G * ((a/b)/b)), not -a/(b*b): b*b overflows or underflows for |b| past
 *         1e154 or below 1e-154. PyTorch's formula, so the results agree.
 * The products are written G * (derivative), in the order backward() has always
 * computed them, so its results stay bitwise what they were.
 */
#ifndef AG_OPS_H
#define AG_OPS_H

#include <math.h>
#include <stddef.h>

/* For the few functions the per-op path must not call: each op's row folds into them. */
#if defined(__GNUC__) || defined(__clang__)
#define AG_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define AG_INLINE static __forceinline
#else
#define AG_INLINE static inline
#endif

/* Asks the memory system for an address about to be used (a no-op where unsupported). */
#if defined(__GNUC__) || defined(__clang__)
#define AG_PREFETCH(address) __builtin_prefetch((address), 1)
#else
#define AG_PREFETCH(address) ((void)0)
#endif

static inline double ag_sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }

#define AG_POW_TO_BASE SELECT(b == 0.0, ZERO, MUL(G, MUL(B, POW(A, SUB(B, ONE)))))
#define AG_POW_TO_EXPONENT MUL(G, SELECT(a == 0.0 && b >= 0.0, ZERO, MUL(OUT, LOG(A))))

/* X(ENUM, python name, symbol, arity, python, forward, to a, to b) */
#define AG_ELEMENTWISE_OPS(X)                                                                   \
    X(ADD,     "add",     "+",       2, nb_add,         a + b,              G,  G)             \
    X(SUB,     "sub",     "-",       2, nb_subtract,    a - b,              G,  NEG(G))        \
    X(MUL,     "mul",     "*",       2, nb_multiply,    a * b,              MUL(G, B), MUL(G, A)) \
    X(DIV,     "truediv", "/",       2, nb_true_divide, a / b,              MUL(G, DIV(ONE, B)), \
                                                                            NEG(MUL(G, DIV(OUT, B)))) \
    X(POW,     "pow",     "**",      2, nb_power,       pow(a, b),          AG_POW_TO_BASE,      \
                                                                            AG_POW_TO_EXPONENT)  \
    X(NEG,     "neg",     "neg",     1, nb_negative,    -a,                 NEG(G), ZERO)      \
    X(RELU,    "relu",    "ReLU",    1, method,         a < 0.0 ? 0.0 : a,  GATE(G, OUT), ZERO) \
    X(TANH,    "tanh",    "tanh",    1, method,         tanh(a),            MUL(G, SUB(ONE, MUL(OUT, OUT))), ZERO) \
    X(EXP,     "exp",     "exp",     1, method,         exp(a),             MUL(G, OUT), ZERO) \
    X(LOG,     "log",     "log",     1, method,         log(a),             MUL(G, DIV(ONE, A)), ZERO) \
    X(SIGMOID, "sigmoid", "sigmoid", 1, method,         ag_sigmoid(a),      MUL(G, MUL(OUT, SUB(ONE, OUT))), ZERO) \
    X(STEP,    "step",    "step",    1, internal,       (double)(a > 0.0),  ZERO, ZERO)        \
    X(GATE,    "gate",    "gate",    2, internal,       b > 0.0 ? a : 0.0,  GATE(G, B), ZERO)

/* Ops that are not elementwise: their forward and backward are written out in nodes.h.
 * X(ENUM, python name, symbol, arity); arity -1: any number of inputs, kept in an
 * input list beside the node (arena.h). */
#define AG_STRUCTURAL_OPS(X)                                                                    \
    X(LEAF,    "leaf",    "",        0)  /* a Value the user made */                             \
    X(CONST,   "const",   "",        0)  /* a number an op promoted, like micrograd's Value(2); \
                                            nothing needs its gradient, so none is computed */   \
    X(SUM,     "sum",     "sum",    -1)  /* inputs[0] + inputs[1] + ..., left to right */         \
    X(DOT,     "dot",     "dot",    -1)  /* [bias] + w0*x0 + w1*x1 + ..., inputs are            \
                                            (w0, x0, w1, x1, ...) and an odd count means the     \
                                            last input is the bias, added first */               \
    X(CUSTOM,  "custom",  "",       -1)  /* Value(data, _children, _op): keeps its inputs alive; \
                                            passes no gradient unless given a Python _backward */ \
    X(LOCAL,   "local",   "",       -1)  /* Value(data, children, local_grads): its local       \
                                            derivatives are numbers kept with its inputs */

#define AG_ENUM_ELEMENTWISE(E, name, sym, arity, py, fwd, da, db) AG_##E,
#define AG_ENUM_STRUCTURAL(E, name, sym, arity) AG_##E,
enum ag_op {
    AG_STRUCTURAL_OPS(AG_ENUM_STRUCTURAL)
    AG_ELEMENTWISE_OPS(AG_ENUM_ELEMENTWISE)
    AG_OP_COUNT,
    AG_FREE = 255 /* marks a node on the free list */
};
#undef AG_ENUM_ELEMENTWISE
#undef AG_ENUM_STRUCTURAL

static inline int ag_arity(int op)
{
    switch (op) {
#define AG_ARITY_E(E, name, sym, arity, py, fwd, da, db) case AG_##E: return arity;
#define AG_ARITY_S(E, name, sym, arity) case AG_##E: return arity;
        AG_STRUCTURAL_OPS(AG_ARITY_S)
        AG_ELEMENTWISE_OPS(AG_ARITY_E)
#undef AG_ARITY_E
#undef AG_ARITY_S
    default: return 0;
    }
}

/* Inputs kept in a list beside the node rather than in the node itself. */
static inline int ag_op_is_nary(int op) { return ag_arity(op) < 0; }

/* Sources (leaves and constants) have no inputs and nothing to recompute. */
static inline int ag_op_is_source(int op) { return ag_arity(op) == 0; }

/* Nodes whose value was computed in Python, so replay cannot recompute it. */
static inline int ag_op_is_hand_made(int op) { return op == AG_CUSTOM || op == AG_LOCAL; }

/* ---- forward ---- */

static inline double ag_forward_elementwise(int op, double a, double b)
{
    (void)b;
    switch (op) {
#define AG_FORWARD_CASE(E, name, sym, arity, py, fwd, da, db) case AG_##E: return (fwd);
        AG_ELEMENTWISE_OPS(AG_FORWARD_CASE)
#undef AG_FORWARD_CASE
    default: return NAN;
    }
}

/* ---- backward, on doubles ----
 * The language read as C arithmetic: the first-order sweep (nodes.h). */

#define G g
#define ONE 1.0
#define ZERO 0.0
#define A a
#define B b
#define OUT out
#define ADD(x, y) ((x) + (y))
#define SUB(x, y) ((x) - (y))
#define MUL(x, y) ((x) * (y))
#define DIV(x, y) ((x) / (y))
#define NEG(x) (-(x))
#define POW(x, y) pow((x), (y))
#define LOG(x) log(x)
#define STEP(x) ((double)((x) > 0.0))
#define GATE(x, s) ((s) > 0.0 ? (x) : 0.0)
#define SELECT(condition, x, y) ((condition) ? (x) : (y))

/* What an elementwise node passes back: *ga to input a, *gb to input b, each computed
 * only when asked for (a constant input needs none: pow's is a log). */
static inline void ag_contributions(int op, double g, double a, double b, double out, double *ga,
                                    double *gb)
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

#include "derivative_language_end.h"

#endif
