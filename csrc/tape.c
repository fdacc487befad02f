/* Running replay's compiled tape (tape.h; tape_make.c compiles it): the order of a root
 * that replays, as arrays.
 *
 * The sweeps over a graph chase pointers: each input is a node somewhere in the arena,
 * reached through an id or an address. A root that replays runs the same order every
 * step, so its order is compiled once into slots: values and adjoints in two contiguous
 * arrays, operands as int32 slots, a layer's rows as consecutive slots. A run reads the
 * nodes' data once into the values, runs the arrays, and writes the results back to the
 * nodes once.
 *
 * Bits: every value is computed by the op table's own arithmetic (ops.h, nodes.h) on the
 * same operands in the same order, and every adjoint receives the same contributions in
 * the same order as the sweep over the order (sweep.c), starting from zero as that
 * sweep's zeroed grads do; the earlier grad is added to the result as backward() adds it
 * back. So replay through a tape gives exactly what rebuilding the graph gives. */
#include "tape.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "nodes.h"
#include "ops.h"

/* The loops that run a tape work on AG_LANES doubles at once: in GCC's and clang's vector
 * types (lanes), which the compiler turns into the widest vector operations it may use.
 * Where the system picks a function's version at load time (GNU ifuncs on x86-64 Linux),
 * the two loops are built twice (AG_WIDE): for any x86-64 (two SSE2 operations per
 * four lanes) and for processors with AVX2 (one). Every lane does the same IEEE
 * operations as the plain C (no fused multiply-add: -ffp-contract=off, and the AVX2
 * version is not an FMA one), so every version gives the same bits. */
#define AG_LANES AG_TAPE_LANES
#if defined(__GNUC__) || defined(__clang__)
#define AG_VECTORS
typedef double lanes __attribute__((vector_size(AG_LANES * sizeof(double)), aligned(sizeof(double))));
#define AG_LOAD(p) (*(const lanes *)(p))
#endif
#if defined(AG_VECTORS) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) \
    && !defined(__SANITIZE_ADDRESS__)
#define AG_WIDE __attribute__((target_clones("avx2", "default")))
#else
#define AG_WIDE
#endif

/* ---- forward ---- */

/* One instruction's value: the op table's forward (ag_sum_forward, ag_dot_forward,
 * ag_forward_elementwise), on slots. */
AG_INLINE double value_of(int kind, const double *v, const int32_t *in, size_t n)
{
    switch (kind) {
    case AG_TAPE_ROW_DOT: { /* [bias] + w0*x0 + w1*x1 + ... */
        const double *w = v + in[0], *x = v + in[1];
        double acc = in[3] >= 0 ? v[in[3]] : 0.0;
        for (int32_t k = 0; k < in[2]; k++)
            acc += w[k] * x[k];
        return acc;
    }
    case AG_SUM: {
        double acc = n ? v[in[0]] : 0.0;
        for (size_t i = 1; i < n; i++)
            acc += v[in[i]];
        return acc;
    }
    case AG_DOT: {
        double acc = (n & 1) ? v[in[n - 1]] : 0.0;
        for (size_t i = 0; i + 1 < n; i += 2)
            acc += v[in[i]] * v[in[i + 1]];
        return acc;
    }
    default:
        return ag_forward_elementwise(kind, v[in[0]], n > 1 ? v[in[1]] : 0.0);
    }
}

/* AG_LANES row dots over the same weights at once: each its own chain of additions in
 * value_of's order (a lane), so each gives the same bits as alone, while the processor
 * works on the chains side by side. */
AG_INLINE void row_dots_side_by_side(const ag_tape *tape, const uint32_t *code, double *v)
{
    const int32_t *op[AG_LANES];
    const double *x[AG_LANES];
    for (int l = 0; l < AG_LANES; l++) {
        op[l] = tape->operands + tape->first[code[l]];
        x[l] = v + op[l][1];
    }
    const double *w = v + op[0][0];
    double bias = op[0][3] >= 0 ? v[op[0][3]] : 0.0; /* the same weights: the same bias */
    int32_t pairs = op[0][2];
#ifdef AG_VECTORS
    lanes sum = {bias, bias, bias, bias};
    for (int32_t k = 0; k < pairs; k++) {
        const lanes wk = {w[k], w[k], w[k], w[k]}, xk = {x[0][k], x[1][k], x[2][k], x[3][k]};
        sum += wk * xk;
    }
#else
    double sum[AG_LANES] = {bias, bias, bias, bias};
    for (int32_t k = 0; k < pairs; k++)
        for (int l = 0; l < AG_LANES; l++)
            sum[l] += w[k] * x[l][k];
#endif
    for (int l = 0; l < AG_LANES; l++)
        v[tape->out[code[l]]] = sum[l];
}

/* A stretch of one elementwise op: one loop, with the op's forward (its row in ops.h,
 * as ag_forward_elementwise computes it) inline. */
AG_INLINE void elementwise_stretch(int kind, const int32_t *slots, uint32_t count, double *v)
{
    switch (kind) {
#define AG_STRETCH_CASE(E, name, sym, arity, py, fwd, da, db)                                \
    case AG_##E:                                                                          \
        for (const int32_t *at = slots; at < slots + 4 * (size_t)count; at += 4) {       \
            double a = v[at[1]], b = (arity) == 2 ? v[at[2]] : 0.0;                       \
            (void)b;                                                                      \
            v[at[0]] = (fwd);                                                             \
        }                                                                                 \
        return;
        AG_ELEMENTWISE_OPS(AG_STRETCH_CASE)
#undef AG_STRETCH_CASE
    }
}

/* Each block's weights, transposed, and biases from the values (tape.h). */
AG_INLINE void fill_blocks(const ag_tape *tape, const double *v)
{
    for (size_t b = 0; b < tape->n_blocks; b++) {
        const ag_tape_block *block = tape->blocks + b;
        const int32_t *slots = tape->block_slots + block->slots;
        double *wt = tape->block_values + block->values, *bias = wt + (size_t)block->pairs * block->width;
        for (uint32_t j = 0; j < block->count; j++) {
            const double *w = v + slots[j];
            for (uint32_t k = 0; k < block->pairs; k++)
                wt[(size_t)k * block->width + j] = w[k];
            bias[j] = slots[block->count + j] >= 0 ? v[slots[block->count + j]] : 0.0;
        }
    }
}

/* A block's row dots over the input row x, into out[0..width): lane j computes
 * bias_j + w_j0 * x0 + w_j1 * x1 + ... in value_of's order, so each gives the bits it
 * gives alone; four vectors of lanes at once, as four independent chains. */
AG_INLINE void block_dots(const ag_tape_block *block, const double *wt, const double *x, double *out)
{
    const uint32_t pairs = block->pairs, width = block->width;
    const double *bias = wt + (size_t)pairs * width;
    uint32_t j = 0;
#ifdef AG_VECTORS
    for (; j + 4 * AG_LANES <= width; j += 4 * AG_LANES) {
        lanes a0 = AG_LOAD(bias + j), a1 = AG_LOAD(bias + j + 4), a2 = AG_LOAD(bias + j + 8),
              a3 = AG_LOAD(bias + j + 12);
        for (uint32_t k = 0; k < pairs; k++) {
            const double *w = wt + (size_t)k * width + j;
            const lanes xk = {x[k], x[k], x[k], x[k]};
            a0 += AG_LOAD(w) * xk;
            a1 += AG_LOAD(w + 4) * xk;
            a2 += AG_LOAD(w + 8) * xk;
            a3 += AG_LOAD(w + 12) * xk;
        }
        *(lanes *)(out + j) = a0;
        *(lanes *)(out + j + 4) = a1;
        *(lanes *)(out + j + 8) = a2;
        *(lanes *)(out + j + 12) = a3;
    }
    for (; j < width; j += AG_LANES) {
        lanes a = AG_LOAD(bias + j);
        for (uint32_t k = 0; k < pairs; k++) {
            const lanes xk = {x[k], x[k], x[k], x[k]};
            a += AG_LOAD(wt + (size_t)k * width + j) * xk;
        }
        *(lanes *)(out + j) = a;
    }
#else
    for (; j < width; j++) {
        double a = bias[j];
        for (uint32_t k = 0; k < pairs; k++)
            a += wt[(size_t)k * width + j] * x[k];
        out[j] = a;
    }
#endif
}

AG_INLINE void one_value(const ag_tape *tape, uint32_t i, double *v)
{
    const uint32_t first = tape->first[i];
    v[tape->out[i]] = value_of(tape->kinds[i], v, tape->operands + first, tape->first[i + 1] - first);
}

/* Every instruction, in forward's schedule, a stretch at a time: the computed values. */
AG_WIDE static void run_forward(const ag_tape *tape, double *v)
{
    const uint32_t *order = tape->forward_order;
    fill_blocks(tape, v);
    for (size_t p = 0; p < tape->n_code;) {
        const uint32_t *code = order + p, count = tape->run[p];
        int kind = tape->kinds[code[0]];
        int32_t b = tape->block_of[code[0]];
        uint32_t done = 0;
        if (b >= 0 && count == tape->blocks[b].count) { /* one input row's dots: the block's */
            block_dots(tape->blocks + b, tape->block_values + tape->blocks[b].values,
                       v + tape->operands[tape->first[code[0]] + 1], tape->block_out);
            for (; done < count; done++)
                v[tape->forward_slots[4 * (p + done)]] = tape->block_out[done];
        } else if (kind == AG_TAPE_ROW_DOT)
            for (; done + AG_LANES <= count; done += AG_LANES)
                row_dots_side_by_side(tape, code + done, v);
        else if (ag_arity(kind) > 0)
            elementwise_stretch(kind, tape->forward_slots + 4 * p, done = count, v);
        for (; done < count; done++)
            one_value(tape, code[done], v);
        p += count;
    }
}

int ag_tape_forward(ag_tape *tape, int check, ag_id *bad)
{
    double *v = tape->values;
    ag_node **nodes = tape->nodes;
    const uint32_t *slots = tape->by_id;
    for (size_t i = 0; i < tape->n_sources; i++)
        v[slots[i]] = nodes[i]->data;
    run_forward(tape, v);
    for (size_t i = 0; i < tape->n_code && check; i++) /* in the order's order: the node */
        if (!isfinite(v[tape->out[i]])) {                /* where the sweep stopped */
            int32_t stop = tape->out[i];
            for (size_t j = 0; j <= i; j++)
                ag_node_at(tape->ids[tape->out[j]])->data = v[tape->out[j]];
            ag_note_data_edit(); /* the values ahead of the nodes' data now */
            *bad = tape->ids[stop];
            ag_fail(AG_EANOMALY, *bad);
            ag_fail_value(v[stop]);
            return AG_EANOMALY;
        }
    for (size_t i = tape->n_sources; i < tape->n; i++)
        nodes[i]->data = v[slots[i]];
    tape->data_seen = ++ag_data_edits; /* other tapes over these nodes read them again */
    return AG_OK;
}

/* ---- backward ---- */

/* to[k] += g * from[k] for k < n (apart arrays), AG_LANES at a time where the compiler
 * has vector types: each lane does the same IEEE multiply and add as the plain loop. */
AG_INLINE void add_scaled(double *restrict to, const double *restrict from, double g, int32_t n)
{
    int32_t k = 0;
#ifdef AG_VECTORS
    const lanes gs = {g, g, g, g};
    for (; k + AG_LANES <= n; k += AG_LANES)
        *(lanes *)(to + k) += gs * *(const lanes *)(from + k);
#endif
    for (; k < n; k++)
        to[k] += g * from[k];
}

/* A row dot's step: to each weight G * its x, to each x G * its weight, to the bias G
 * (nodes.h's ag_dot_backward). The ranges are apart, so each adjoint in them gets one
 * contribution, and the two loops add exactly what the sweep adds; or they are the same
 * (restrict: then only to_w is written). The bias comes last, as in the sweep. */
AG_INLINE void row_dot_backward(double g, double *adj, const double *v, const int32_t *in)
{
    double *to_w = adj + in[0], *to_x = adj + in[1];
    const double *w = v + in[0], *x = v + in[1];
    const int32_t pairs = in[2];
    if (to_w == to_x) { /* dot(p, p): each adjoint gets G * p as weight, then as x */
        for (int32_t k = 0; k < pairs; k++) {
            to_w[k] += g * x[k];
            to_w[k] += g * w[k];
        }
    } else {
        add_scaled(to_w, x, g, pairs);
        add_scaled(to_x, w, g, pairs);
    }
    if (in[3] >= 0)
        adj[in[3]] += g;
}

/* An elementwise node's chain-rule step (ag_contributions), on slots. */
AG_INLINE void propagate_elementwise(int kind, int skip, double g, double out, double *adj, const double *v,
                                     const int32_t *in, size_t n)
{
    double ga = 0.0, gb = 0.0;
    int want_a = !(skip & AG_TAPE_SKIP_A), want_b = n > 1 && !(skip & AG_TAPE_SKIP_B);
    ag_contributions(kind, g, v[in[0]], n > 1 ? v[in[1]] : 0.0, out, want_a ? &ga : NULL, want_b ? &gb : NULL);
    if (want_a)
        adj[in[0]] += ga;
    if (want_b)
        adj[in[1]] += gb;
}

/* A stretch of one elementwise op in backward's schedule: one loop, with the op's rule
 * (its row in ops.h) inline, in the schedule's order. */
AG_INLINE void elementwise_backward_stretch(int kind, const int32_t *slots, uint32_t count, double *adj,
                                            const double *v)
{
    switch (kind) {
#define AG_BACKWARD_STRETCH_CASE(E, name, sym, arity, py, fwd, da, db)                                      \
    case AG_##E:                                                                                           \
        for (const int32_t *at = slots; at < slots + 4 * (size_t)count; at += 4)                           \
            propagate_elementwise(AG_##E, at[3], adj[at[0]], v[at[0]], adj, v, at + 1, (arity));         \
        return;
        AG_ELEMENTWISE_OPS(AG_BACKWARD_STRETCH_CASE)
#undef AG_BACKWARD_STRETCH_CASE
    }
}

/* One computed node's chain-rule step on the arrays: nodes.h's ag_propagate, on slots
 * (no anomaly check: backward() with detect_anomaly on takes the order's sweep). */
AG_INLINE void propagate(int kind, int skip, double g, double out, double *adj, const double *v, const int32_t *in,
                         size_t n)
{
    switch (kind) {
    case AG_TAPE_ROW_DOT:
        row_dot_backward(g, adj, v, in);
        return;
    case AG_SUM:
        for (size_t k = 0; k < n; k++)
            adj[in[k]] += g;
        return;
    case AG_DOT:
        for (size_t k = 0; k + 1 < n; k += 2) {
            adj[in[k]] += g * v[in[k + 1]];
            adj[in[k + 1]] += g * v[in[k]];
        }
        if (n & 1)
            adj[in[n - 1]] += g;
        return;
    default:
        propagate_elementwise(kind, skip, g, out, adj, v, in, n);
        return;
    }
}

/* A group's dots (backward's schedule): each dot's adjoint (no dot of the group writes
 * another's) and its share to its bias; then, over the input row a stretch at a time,
 * each dot's share to its weights (G * x) and to the row (G * w), the row's adjoints
 * held in registers through the dots. Each adjoint gets what the dots one by one give
 * it, in the group's order. */
AG_INLINE void group_backward(const ag_tape *tape, const uint32_t *code, const int32_t *slots, uint32_t count,
                              double *adj, const double *v)
{
    double *g = tape->group_g;
    const double **w = tape->group_w;
    double **to_w = tape->group_to_w;
    const int32_t *first = ag_tape_operands(tape, code[0]), pairs = first[2];
    const double *x = v + first[1];
    double *to_x = adj + first[1];
    for (uint32_t j = 0; j < count; j++) {
        const int32_t *at = slots + 4 * (size_t)j; /* output, weights, bias */
        g[j] = adj[at[0]];
        w[j] = v + at[1];
        to_w[j] = adj + at[1];
        if (at[2] >= 0)
            adj[at[2]] += g[j];
    }
    int32_t k = 0;
#ifdef AG_VECTORS
    for (; k + 4 * AG_LANES <= pairs; k += 4 * AG_LANES) {
        const lanes x0 = AG_LOAD(x + k), x1 = AG_LOAD(x + k + 4), x2 = AG_LOAD(x + k + 8), x3 = AG_LOAD(x + k + 12);
        lanes s0 = AG_LOAD(to_x + k), s1 = AG_LOAD(to_x + k + 4), s2 = AG_LOAD(to_x + k + 8),
              s3 = AG_LOAD(to_x + k + 12);
        for (uint32_t j = 0; j < count; j++) {
            const lanes gj = {g[j], g[j], g[j], g[j]};
            double *tw = to_w[j] + k;
            const double *wj = w[j] + k;
            *(lanes *)tw = AG_LOAD(tw) + gj * x0;
            *(lanes *)(tw + 4) = AG_LOAD(tw + 4) + gj * x1;
            *(lanes *)(tw + 8) = AG_LOAD(tw + 8) + gj * x2;
            *(lanes *)(tw + 12) = AG_LOAD(tw + 12) + gj * x3;
            s0 += gj * AG_LOAD(wj);
            s1 += gj * AG_LOAD(wj + 4);
            s2 += gj * AG_LOAD(wj + 8);
            s3 += gj * AG_LOAD(wj + 12);
        }
        *(lanes *)(to_x + k) = s0;
        *(lanes *)(to_x + k + 4) = s1;
        *(lanes *)(to_x + k + 8) = s2;
        *(lanes *)(to_x + k + 12) = s3;
    }
    for (; k + AG_LANES <= pairs; k += AG_LANES) {
        const lanes xk = AG_LOAD(x + k);
        lanes sum = AG_LOAD(to_x + k);
        for (uint32_t j = 0; j < count; j++) {
            const lanes gj = {g[j], g[j], g[j], g[j]};
            *(lanes *)(to_w[j] + k) = AG_LOAD(to_w[j] + k) + gj * xk;
            sum += gj * AG_LOAD(w[j] + k);
        }
        *(lanes *)(to_x + k) = sum;
    }
#endif
    for (; k + 2 <= pairs; k += 2) { /* two of the row's adjoints at once: two chains */
        const double x0 = x[k], x1 = x[k + 1];
        double sum0 = to_x[k], sum1 = to_x[k + 1];
        for (uint32_t j = 0; j < count; j++) {
            to_w[j][k] += g[j] * x0;
            to_w[j][k + 1] += g[j] * x1;
            sum0 += g[j] * w[j][k];
            sum1 += g[j] * w[j][k + 1];
        }
        to_x[k] = sum0;
        to_x[k + 1] = sum1;
    }
    if (k < pairs) {
        double sum = to_x[k];
        for (uint32_t j = 0; j < count; j++) {
            to_w[j][k] += g[j] * x[k];
            sum += g[j] * w[j][k];
        }
        to_x[k] = sum;
    }
}

/* Every instruction in backward's schedule, from the root's adjoint 1: the adjoints of
 * this call. */
AG_WIDE static void run_backward(const ag_tape *tape)
{
    double *adj = tape->adjoints;
    const double *v = tape->values;
    memset(adj, 0, tape->n * sizeof(double));
    adj[tape->root_slot] = 1.0;
    size_t p = 0;
    for (size_t group = 0; group <= tape->n_groups; group++) {
        const size_t end = group < tape->n_groups ? tape->groups[2 * group] : tape->n_code;
        while (p < end) {
            const uint32_t i = tape->backward_order[p], first = tape->first[i], count = tape->back_run[p];
            if (count > 1) {
                elementwise_backward_stretch(tape->kinds[i], tape->back_slots + 4 * p, count, adj, v);
                p += count;
                continue;
            }
            const int32_t s = tape->out[i];
            propagate(tape->kinds[i], tape->skip[i], adj[s], v[s], adj, v, tape->operands + first,
                      tape->first[i + 1] - first);
            p++;
        }
        if (group < tape->n_groups) {
            group_backward(tape, tape->backward_order + p, tape->back_slots + 4 * p, tape->groups[2 * group + 1],
                           adj, v);
            p += tape->groups[2 * group + 1];
        }
    }
}

int ag_tape_backward(ag_tape *tape, int sweeps_running)
{
    double *v = tape->values, *adj = tape->adjoints;
    ag_node **nodes = tape->nodes;
    const uint32_t *slots = tape->by_id;
    const size_t n = tape->n;
    /* The values are read from the nodes again, and the nodes checked for rules, unless
     * nothing can have changed since the tape last did (arena.h): then the pass over
     * the nodes is saved, as after a forward() (an optimizer's step comes before it). */
    if (sweeps_running || tape->data_seen != ag_data_edits || tape->rules_seen != ag_rule_edits) {
        uint16_t flags = 0;
        for (size_t i = 0; i < n; i++) {
            const ag_node *node = nodes[i];
            v[slots[i]] = node->data;
            flags |= node->flags;
        }
        if (flags & (AG_FLAG_PYRULE | AG_FLAG_OWNED))
            return 0;
        tape->data_seen = ag_data_edits;
        tape->rules_seen = ag_rule_edits;
    }
    run_backward(tape);
    /* backward() adds this call's grads to the earlier ones; a grad that was exactly +0
     * takes this call's as they are (a -0 adjoint stays -0, as in the sweep). A select,
     * not a branch: which nodes had a grad follows no pattern a processor predicts. */
    for (size_t i = 0; i < n; i++) {
        const double grad = nodes[i]->grad, add = adj[slots[i]], sum = grad + add;
        uint64_t bits;
        memcpy(&bits, &grad, sizeof bits);
        nodes[i]->grad = bits == 0 ? add : sum;
    }
    return 1;
}
