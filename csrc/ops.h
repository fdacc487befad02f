/* The op table: every differentiable scalar op, defined once.
 *
 * One row per elementwise op: its enum name, its Python name, the symbol `_op` shows,
 * its arity, where Python reaches it (a number slot such as nb_add, `method` for
 * v.relu(), `method_slope` for v.leaky_relu(slope=0.01), `function` for
 * pyautograd.maximum(a, b), `internal` for ops only derivatives make), its forward value
 * and what it passes back to each input. Everything else is generated from the rows:
 * the C forward and backward (nodes.h), Value's operators and methods (value.c), the
 * derivative graphs of grad(create_graph=True) (higher.c), forward mode and the
 * Hessian-vector product (tangents.c), replay, and the names Python sees. Adding an op
 * is one row here plus its tests.
 *
 * The forward is C on doubles: `a`, `b` are the input values. What an op passes back
 * is written like PyTorch's derivatives.yaml, in terms of G, the gradient arriving at
 * its result: for MUL, input a gets G * b. It is written in a small language, read
 * several ways: on doubles for backward(), as new nodes for derivatives that are
 * themselves differentiable, and on dual numbers (a value and its rate of change along
 * a direction) for forward mode. Its words (derivative_words.h):
 *   G, A, B, OUT   the incoming gradient, the inputs and the result;
 *   NUM(x)         the number x (ONE and ZERO are NUM(1.0) and NUM(0.0));
 *   OP1(E, x), OP2(E, x, y)  any row of this table applied to terms (ADD(x, y) is
 *                  OP2(ADD, x, y), and so on for SUB MUL DIV NEG POW LOG STEP GATE);
 *   SELECT(condition, x, y)  x or y by a condition on the current values a, b, out (C's
 *                  ?:, so only the chosen side is computed or built; a derivative graph
 *                  that holds such a choice is refused by replay, higher.c).
 * Every pass-back is linear in G (it is G times a local derivative), so the same row
 * read with G = an input's tangent is the op's tangent rule: forward mode needs no rule
 * of its own. Domain errors follow IEEE like PyTorch: log(-1) is nan, 1/0 is inf,
 * nothing traps. At the edges, PyTorch's rules:
 *   relu: GATE(G, OUT): G where out > 0, else exactly 0, even from an inf or nan G
 *         (PyTorch's where, not 0 * inf = nan); so 0 at 0 (micrograd's `out > 0`) and
 *         at nan, and relu's second derivative is 0 (GATE's own row).
 *   leaky_relu: G where a > 0, else G * slope (at 0 too), through LEAKY_SLOPE.
 *   abs:  G * sign(a), so 0 at 0.
 *   maximum, minimum: G to the larger (smaller) input, exactly 0 to the other, G / 2 to
 *         each at a tie, G to both where one is nan (MAX_SHARE, through GATE so an inf G
 *         gives no nan).
 *   pow:  to the base G * b * a^(b-1), but exactly 0 where b == 0 (x ** 0 is constant,
 *         PyTorch's rule); to the exponent G * out * log(a), but G * 0 where a == 0 and
 *         b >= 0 (PyTorch's rule: nan only from a nan or inf G, as in PyTorch).
 *   log:  G * (1/a), so at 0 it is inf and below 0 the value is already nan.
 *   sqrt: G / (2 * out), inf at 0.
 *   div:  to b, -(G * ((a/b)/b)), not -a/(b*b): b*b overflows or underflows for |b| past
 *         1e154 or below 1e-154. PyTorch's formula, so the results agree; like it, a/b
 *         is computed again, not read from the node: a derivative graph then does not
 *         go through the node, and d/d (a/b) of it is torch's (an interior input).
 *   softplus: log1p(exp(a)), and a itself past 20 (PyTorch's threshold); its derivative
 *         is SOFTPLUS_D, exp(a) / (exp(a) + 1), and exactly 1 past 20.
 *   gelu: the tanh form, PyTorch's gelu(approximate='tanh'), formula for formula.
 *   detach: its input's value, and exactly 0 back (softmax's shift: replay recomputes
 *         it, backward passes nothing through it). That 0 goes on through the graph
 *         below like any other, so 0 * an inf local derivative there is nan, where
 *         PyTorch's detach cuts the graph instead.
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

/* PyTorch's gelu(approximate='tanh'), operation for operation. */
#define AG_GELU_BETA (1.41421356237309504880 * 1.12837916709551257390 * 0.5) /* sqrt(2) 2/sqrt(pi) / 2 */
#define AG_GELU_KAPPA 0.044715
static inline double ag_gelu(double a)
{
    double inner = AG_GELU_BETA * (a + AG_GELU_KAPPA * (a * a * a));
    return 0.5 * a * (1.0 + tanh(inner));
}

/* maximum's share of G for input a: all of it, half at a tie, none where b is larger;
 * a nan compares false, so both inputs get all of it (PyTorch's where/masked_fill). */
static inline double ag_max_share(double a, double b) { return a < b ? 0.0 : a == b ? 0.5 : 1.0; }

#define AG_POW_TO_BASE SELECT(b == 0.0, ZERO, MUL(G, MUL(B, POW(A, SUB(B, ONE)))))
#define AG_POW_TO_EXPONENT MUL(G, SELECT(a == 0.0 && b >= 0.0, ZERO, MUL(OUT, LOG(A))))
/* tanh(beta (a + kappa a^3)), and gelu's derivative: 0.5 (1 + t) + 0.5 a (1 - t^2) beta (1 + 3 kappa a^2) */
#define AG_GELU_T OP1(TANH, MUL(NUM(AG_GELU_BETA), ADD(A, MUL(NUM(AG_GELU_KAPPA), MUL(MUL(A, A), A)))))
#define AG_GELU_TO_A MUL(G, ADD(MUL(NUM(0.5), ADD(ONE, AG_GELU_T)),                              \
                                MUL(MUL(MUL(NUM(0.5), A), SUB(ONE, MUL(AG_GELU_T, AG_GELU_T))),    \
                                    MUL(NUM(AG_GELU_BETA), ADD(ONE, MUL(NUM(3.0 * AG_GELU_KAPPA), MUL(A, A)))))))
/* G times a share that is 0, 1/2 or 1, and exactly 0 (not 0 * inf) where it is 0 */
#define AG_SHARE_OF(x, y) GATE(MUL(G, OP2(MAX_SHARE, x, y)), OP2(MAX_SHARE, x, y))

/* X(ENUM, python name, symbol, arity, python, forward, to a, to b) */
#define AG_ELEMENTWISE_OPS(X)                                                                   \
    X(ADD,     "add",     "+",       2, nb_add,         a + b,              G,  G)             \
    X(SUB,     "sub",     "-",       2, nb_subtract,    a - b,              G,  NEG(G))        \
    X(MUL,     "mul",     "*",       2, nb_multiply,    a * b,              MUL(G, B), MUL(G, A)) \
    X(DIV,     "truediv", "/",       2, nb_true_divide, a / b,              MUL(G, DIV(ONE, B)), \
                                                                            NEG(MUL(G, DIV(DIV(A, B), B)))) \
    X(POW,     "pow",     "**",      2, nb_power,       pow(a, b),          AG_POW_TO_BASE,      \
                                                                            AG_POW_TO_EXPONENT)  \
    X(NEG,     "neg",     "neg",     1, nb_negative,    -a,                 NEG(G), ZERO)      \
    X(RELU,    "relu",    "ReLU",    1, method,         a < 0.0 ? 0.0 : a,  GATE(G, OUT), ZERO) \
    X(TANH,    "tanh",    "tanh",    1, method,         tanh(a),            MUL(G, SUB(ONE, MUL(OUT, OUT))), ZERO) \
    X(EXP,     "exp",     "exp",     1, method,         exp(a),             MUL(G, OUT), ZERO) \
    X(LOG,     "log",     "log",     1, method,         log(a),             MUL(G, DIV(ONE, A)), ZERO) \
    X(SIGMOID, "sigmoid", "sigmoid", 1, method,         ag_sigmoid(a),      MUL(G, MUL(OUT, SUB(ONE, OUT))), ZERO) \
    X(SIN,     "sin",     "sin",     1, method,         sin(a),             MUL(G, OP1(COS, A)), ZERO) \
    X(COS,     "cos",     "cos",     1, method,         cos(a),             NEG(MUL(G, OP1(SIN, A))), ZERO) \
    X(SQRT,    "sqrt",    "sqrt",    1, method,         sqrt(a),            DIV(G, MUL(NUM(2.0), OUT)), ZERO) \
    X(ABS,     "abs",     "abs",     1, method,         fabs(a),            MUL(G, OP1(SIGN, A)), ZERO) \
    X(LEAKY_RELU, "leaky_relu", "LeakyReLU", 2, method_slope, a > 0.0 ? a : a * b,             \
                                                                            MUL(G, OP2(LEAKY_SLOPE, A, B)), \
                                                                            MUL(G, SUB(A, GATE(A, A)))) \
    X(GELU,    "gelu",    "GELU",    1, method,         ag_gelu(a),         AG_GELU_TO_A, ZERO) \
    X(SOFTPLUS, "softplus", "softplus", 1, method,      a > 20.0 ? a : log1p(exp(a)),          \
                                                                            MUL(G, OP1(SOFTPLUS_D, A)), ZERO) \
    X(DETACH,  "detach",  "detach",  1, method,         a,                  ZERO, ZERO)        \
    X(MAXIMUM, "maximum", "max",     2, function,       isnan(a) || isnan(b) ? a + b : a >= b ? a : b, \
                                                                            AG_SHARE_OF(A, B), AG_SHARE_OF(B, A)) \
    X(MINIMUM, "minimum", "min",     2, function,       isnan(a) || isnan(b) ? a + b : a <= b ? a : b, \
                                                                            AG_SHARE_OF(B, A), AG_SHARE_OF(A, B)) \
    X(STEP,    "step",    "step",    1, internal,       (double)(a > 0.0),  ZERO, ZERO)        \
    X(GATE,    "gate",    "gate",    2, internal,       b > 0.0 ? a : 0.0,  GATE(G, B), ZERO)  \
    X(SIGN,    "sign",    "sign",    1, internal,       (double)((a > 0.0) - (a < 0.0)), ZERO, ZERO) \
    X(LEAKY_SLOPE, "leaky_slope", "leaky_slope", 2, internal, a > 0.0 ? 1.0 : b, ZERO,           \
                                                                            MUL(G, SUB(ONE, STEP(A)))) \
    X(SOFTPLUS_D, "softplus_d", "softplus_d", 1, internal, a > 20.0 ? 1.0 : exp(a) / (exp(a) + 1.0), \
                                                                            MUL(G, MUL(OUT, SUB(ONE, OUT))), ZERO) \
    X(MAX_SHARE, "max_share", "max_share", 2, internal, ag_max_share(a, b), ZERO, ZERO)

/* The n-ary ops' pass-backs, in the same language, with IN(k) for input k's value and
 * LOCAL(k) for a local-gradient node's k-th number. DOT's inputs are (w0, x0, w1, x1,
 * ..., [bias]): weight k gets G * x, its x gets G * w, the bias gets G. */
#define AG_SUM_TO_INPUT(k) G
#define AG_DOT_TO_WEIGHT(k) MUL(G, IN((k) + 1))
#define AG_DOT_TO_X(k) MUL(G, IN((k) - 1))
#define AG_DOT_TO_BIAS G
#define AG_LOCAL_TO_INPUT(k) MUL(G, NUM(LOCAL(k)))

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

/* Each op's arity (0 leaf, 1 unary, 2 binary, -1 any), read by table: the free loop
 * and the sweeps ask for every node. */
#define AG_ARITY_E(E, name, sym, arity, py, fwd, da, db) arity,
#define AG_ARITY_S(E, name, sym, arity) arity,
static const signed char ag_arities[AG_OP_COUNT] = {AG_STRUCTURAL_OPS(AG_ARITY_S) AG_ELEMENTWISE_OPS(AG_ARITY_E)};
#undef AG_ARITY_E
#undef AG_ARITY_S

static inline int ag_arity(int op) { return op >= 0 && op < AG_OP_COUNT ? ag_arities[op] : 0; }

/* Inputs kept in a list beside the node rather than in the node itself. */
static inline int ag_op_is_nary(int op) { return ag_arity(op) < 0; }

/* Sources (leaves and constants) have no inputs and nothing to recompute. */
static inline int ag_op_is_source(int op) { return ag_arity(op) == 0; }

/* Nodes whose value was computed in Python, so replay cannot recompute it. */
static inline int ag_op_is_hand_made(int op) { return op == AG_CUSTOM || op == AG_LOCAL; }

/* ---- forward ---- */

AG_INLINE double ag_forward_elementwise(int op, double a, double b)
{
    (void)b;
    switch (op) {
#define AG_FORWARD_CASE(E, name, sym, arity, py, fwd, da, db) case AG_##E: return (fwd);
        AG_ELEMENTWISE_OPS(AG_FORWARD_CASE)
#undef AG_FORWARD_CASE
    default: return NAN;
    }
}

#endif
