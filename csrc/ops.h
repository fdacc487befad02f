/* The op table: every differentiable scalar op, defined once.
 *
 * One row per elementwise op: its enum name, its Python name, the symbol `_op` shows,
 * its arity, its forward value and its local derivatives. The C forward (ops_forward),
 * the C backward (sweep.c) and the Python facade (pyautograd/engine.py reads the
 * names and arities through ag_op_name/ag_op_arity) are all generated from this table:
 * adding an op is one row here plus its tests.
 *
 * In the formulas, `a` and `b` are the input values and `out` is the op's result.
 * Domain errors follow IEEE like PyTorch: log(-1) is nan, 1/0 is inf, nothing traps.
 * Partial derivatives at the edges:
 *   relu: derivative 0 at 0 (micrograd's `out > 0`), nan passes through as nan.
 *   pow:  d/da = b * a^(b-1), but 0 where b == 0 (x ** 0 is constant, PyTorch's rule);
 *         d/db = out * log(a), but 0 where a == 0 and b >= 0 (PyTorch's rule),
 *         so a constant exponent never gets a nan gradient from a zero base.
 *   log:  1/a, so d/da at 0 is inf and below 0 the value is already nan.
 *   div:  d/db = -(a/b)/b, not -a/(b*b): b*b overflows or underflows for |b| past
 *         1e154 or below 1e-154 (1e308/1e308 got 0 instead of -1e-308, 0/1e-200 got
 *         nan instead of 0). PyTorch's formula, so the results agree bitwise.
 */
#ifndef AG_OPS_H
#define AG_OPS_H

#include <math.h>

static inline double ag_sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }

/* x ** 0 is the constant 1, so its base derivative is 0 everywhere, x = 0 included
 * (PyTorch's rule), not 0 * pow(0, -1) = 0 * inf = nan. */
static inline double ag_pow_base_grad(double a, double b)
{
    return b == 0.0 ? 0.0 : b * pow(a, b - 1.0);
}

static inline double ag_pow_exponent_grad(double a, double b, double out)
{
    return (a == 0.0 && b >= 0.0) ? 0.0 : out * log(a);
}

/* X(ENUM, python name, symbol, arity, forward, d out/d a, d out/d b) */
#define AG_ELEMENTWISE_OPS(X)                                                                   \
    X(ADD,     "add",     "+",       2, a + b,              1.0,                1.0)             \
    X(SUB,     "sub",     "-",       2, a - b,              1.0,               -1.0)             \
    X(MUL,     "mul",     "*",       2, a * b,              b,                  a)               \
    X(DIV,     "truediv", "/",       2, a / b,              1.0 / b,           -out / b)         \
    X(POW,     "pow",     "**",      2, pow(a, b),          ag_pow_base_grad(a, b),              \
                                                            ag_pow_exponent_grad(a, b, out))     \
    X(NEG,     "__neg__", "neg",     1, -a,                -1.0,                0.0)             \
    X(RELU,    "relu",    "ReLU",    1, a < 0.0 ? 0.0 : a,  (double)(out > 0.0), 0.0)            \
    X(TANH,    "tanh",    "tanh",    1, tanh(a),            1.0 - out * out,    0.0)             \
    X(EXP,     "exp",     "exp",     1, exp(a),             out,                0.0)             \
    X(LOG,     "log",     "log",     1, log(a),             1.0 / a,            0.0)             \
    X(SIGMOID, "sigmoid", "sigmoid", 1, ag_sigmoid(a),      out * (1.0 - out),  0.0)

/* Ops that are not elementwise. Their forward and backward are written out in sweep.c.
 * X(ENUM, python name, symbol, arity); arity -1 means "any number of inputs". */
#define AG_STRUCTURAL_OPS(X)                                                                    \
    X(LEAF,    "leaf",    "",        0)  /* a Value the user made */                             \
    X(CONST,   "const",   "",        0)  /* a number an op promoted, like micrograd's Value(2) */ \
    X(SUM,     "sum",     "sum",    -1)  /* inputs[0] + inputs[1] + ..., left to right */         \
    X(DOT,     "dot",     "dot",    -1)  /* [bias] + w0*x0 + w1*x1 + ..., inputs are            \
                                            (w0, x0, w1, x1, ...) and an odd count means the     \
                                            last input is the bias, added first */               \
    X(CUSTOM,  "custom",  "",       -1)  /* Value(data, _children, _op): keeps its inputs alive, \
                                            passes no gradient, like micrograd's default          \
                                            _backward */

#define AG_ENUM_ELEMENTWISE(E, name, sym, arity, fwd, da, db) AG_##E,
#define AG_ENUM_STRUCTURAL(E, name, sym, arity) AG_##E,
enum ag_op {
    AG_STRUCTURAL_OPS(AG_ENUM_STRUCTURAL)
    AG_ELEMENTWISE_OPS(AG_ENUM_ELEMENTWISE)
    AG_OP_COUNT,
    AG_FREE = 255 /* marks a node on the free list */
};

static inline int ag_op_is_nary(int op) { return op == AG_SUM || op == AG_DOT || op == AG_CUSTOM; }

/* How many inputs a node of this op has in its in[] (0 for leaves, n-ary ops, free nodes). */
static inline size_t ag_fixed_arity(int op)
{
    switch (op) {
#define AG_ARITY_CASE(E, name, sym, arity, fwd, da, db) \
    case AG_##E: return arity;
        AG_ELEMENTWISE_OPS(AG_ARITY_CASE)
#undef AG_ARITY_CASE
    default: return 0;
    }
}

/* The forward value of an elementwise op (b is ignored by unary ops). */
static inline double ag_forward_elementwise(int op, double a, double b)
{
    (void)b;
    switch (op) {
#define AG_FORWARD_CASE(E, name, sym, arity, fwd, da, db) \
    case AG_##E: return (fwd);
        AG_ELEMENTWISE_OPS(AG_FORWARD_CASE)
#undef AG_FORWARD_CASE
    default: return NAN;
    }
}

/* Where relu is flat (out <= 0, or nan) and for x ** 0, the derivative is 0 by a branch,
 * and the input gets exactly 0 even from an inf or nan gradient: PyTorch selects there
 * (where) rather than multiplying 0 * inf = nan. Elsewhere a contribution is g * d as IEEE
 * has it (x * 0 with an inf gradient is nan, as in PyTorch). sweep.c asks only when the
 * product came out nan, so the common path pays one compare. */
static inline int ag_masks_first_input(int op, double b, double out)
{
    return (op == AG_RELU && !(out > 0.0)) || (op == AG_POW && b == 0.0);
}

/* Local derivatives of an elementwise op: *da = d out/d a, *db = d out/d b. */
static inline void ag_local_grads(int op, double a, double b, double out, double *da, double *db)
{
    (void)b; (void)out;
    switch (op) {
#define AG_GRAD_CASE(E, name, sym, arity, fwd, dA, dB) \
    case AG_##E: *da = (dA); *db = (dB); return;
        AG_ELEMENTWISE_OPS(AG_GRAD_CASE)
#undef AG_GRAD_CASE
    default: *da = NAN; *db = NAN; return;
    }
}

#endif
