/* Replay's compiled tape (tape.h): the order of a root that replays, as arrays.
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

enum { SKIP_A = 1, SKIP_B = 2 }; /* tape.h: an elementwise op's CONST inputs */
#define NO_SLOT UINT64_MAX        /* in node->slot while the tape is made: none yet */

/* The loops that run a tape work on AG_LANES doubles at once: in GCC's and clang's vector
 * types (lanes), which the compiler turns into the widest vector operations it may use.
 * Where the system picks a function's version at load time (GNU ifuncs on x86-64 Linux),
 * the two loops are built twice (AG_WIDE): for any x86-64 (two SSE2 operations per
 * four lanes) and for processors with AVX2 (one). Every lane does the same IEEE
 * operations as the plain C (no fused multiply-add: -ffp-contract=off, and the AVX2
 * version is not an FMA one), so every version gives the same bits. */
#define AG_LANES 4
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

void ag_tape_free(ag_tape *tape)
{
    void *arrays[] = {tape->nodes,     tape->ids,      tape->by_address,  tape->kinds,       tape->skip,
                      tape->out,       tape->first,    tape->operands,    tape->forward_order, tape->run,
                      tape->values,    tape->adjoints, tape->block_of,    tape->blocks,      tape->block_slots,
                      tape->block_values, tape->backward_order, tape->groups, tape->group_g, tape->group_w,
                      tape->group_to_w, tape->back_run, tape->back_slots, tape->forward_slots};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        free(arrays[i]);
    *tape = (ag_tape){0};
}

/* ---- making a tape ---- */

static void *array_of(size_t n, size_t size, size_t *bytes)
{
    *bytes += (n ? n : 1) * size;
    return malloc((n ? n : 1) * size);
}

static int is_source(const ag_node *node)
{
    return ag_op_is_source(node->op) || ag_op_is_hand_made(node->op); /* replayable: no inputs */
}

/* While a tape is made, a node's slot is kept in its grad field (node->slot; the order's
 * nodes are all distinct); the grads wait in the adjoints array and go back at the end. */
static int64_t slot_of(ag_id id) { return (int64_t)ag_node_at(id)->slot; }

static void place(ag_tape *tape, ag_id id, size_t *next)
{
    ag_node *node = ag_node_at(id);
    if (node->slot != NO_SLOT)
        return;
    node->slot = *next;
    tape->nodes[*next] = node;
    tape->ids[*next] = id;
    ++*next;
}

/* A row's nodes on consecutive slots, when none of them has one yet. */
static void place_row(ag_tape *tape, const ag_row *row, size_t *next)
{
    for (uint32_t k = 0; k < row->n; k++)
        if (ag_node_at(row->ids[k])->slot != NO_SLOT)
            return; /* placed with an earlier row, or elsewhere: its dots go the generic way */
    for (uint32_t k = 0; k < row->n; k++)
        place(tape, row->ids[k], next);
}

static int by_node_address(const void *pa, const void *pb)
{
    uintptr_t a = (uintptr_t)ag_node_at(*(const ag_id *)pa), b = (uintptr_t)ag_node_at(*(const ag_id *)pb);
    return a < b ? -1 : a > b;
}

/* Slots: each row of a layer's dot nodes on consecutive slots, the other nodes after, in
 * the order of their addresses (so that the passes over the nodes in that order, tape.h,
 * go through the values in one direction too). Grads are set aside into tape->adjoints
 * (indexed by order position) first. AG_OK or AG_ENOMEM. */
static int place_slots(const ag_order *order, ag_tape *tape)
{
    ag_id *by_address = malloc((order->n ? order->n : 1) * sizeof(ag_id));
    if (!by_address)
        return AG_ENOMEM;
    for (size_t i = 0; i < order->n; i++) {
        ag_node *node = ag_node_at(order->ids[i]);
        tape->adjoints[i] = node->grad;
        node->slot = NO_SLOT;
    }
    size_t next = 0;
    for (size_t i = 0; i < order->n; i++) {
        const ag_dot_rows *rows = ag_rows_of(ag_node_at(order->ids[i]));
        if (rows) {
            place_row(tape, rows->weights, &next);
            place_row(tape, rows->xs, &next);
        }
    }
    memcpy(by_address, order->ids, order->n * sizeof(ag_id));
    qsort(by_address, order->n, sizeof(ag_id), by_node_address);
    for (size_t i = 0; i < order->n; i++)
        place(tape, by_address[i], &next);
    free(by_address);
    return AG_OK;
}

/* A dot node's inputs (w0, x0, w1, x1, ..., [bias]) as a row dot when its weights are
 * consecutive slots and so are its xs, in ranges that are the same or apart (then
 * backward may add to the weights' adjoints first and the xs' after, and each adjoint
 * still gets its contributions in the sweep's order). */
static int as_row_dot(const ag_id *in, size_t n, int32_t operands[4])
{
    size_t pairs = n / 2;
    if (pairs == 0)
        return 0;
    int64_t w = slot_of(in[0]), x = slot_of(in[1]);
    for (size_t k = 1; k < pairs; k++)
        if (slot_of(in[2 * k]) != w + (int64_t)k || slot_of(in[2 * k + 1]) != x + (int64_t)k)
            return 0;
    if (w != x && w < x + (int64_t)pairs && x < w + (int64_t)pairs)
        return 0;
    operands[0] = (int32_t)w;
    operands[1] = (int32_t)x;
    operands[2] = (int32_t)pairs;
    operands[3] = (n & 1) ? (int32_t)slot_of(in[n - 1]) : -1;
    return 1;
}

/* Instructions in the order's order, with their operands and their levels (1 + the
 * highest level of their inputs; sources are level 0), into level_of (by slot). */
static void write_code(const ag_order *order, ag_tape *tape, uint32_t *level_of, uint32_t *levels)
{
    size_t operand = 0, i = 0, k;
    for (size_t s = 0; s < tape->n; s++)
        level_of[s] = 0;
    for (size_t position = 0; position < order->n; position++) {
        ag_node *node = ag_node_at(order->ids[position]);
        if (is_source(node))
            continue;
        const ag_id *in = ag_inputs_of(node, &k);
        uint32_t level = 0;
        for (size_t j = 0; j < k; j++)
            if (level_of[slot_of(in[j])] > level)
                level = level_of[slot_of(in[j])];
        level_of[node->slot] = levels[i] = level + 1;
        tape->out[i] = (int32_t)node->slot;
        tape->first[i] = (uint32_t)operand;
        tape->kinds[i] = node->op;
        tape->skip[i] = 0;
        if (node->op == AG_DOT && as_row_dot(in, k, tape->operands + operand)) {
            tape->kinds[i] = AG_TAPE_ROW_DOT;
            operand += 4;
        } else {
            for (size_t j = 0; j < k; j++)
                tape->operands[operand++] = (int32_t)slot_of(in[j]);
            if (node->op != AG_SUM && node->op != AG_DOT)
                tape->skip[i] = (uint8_t)((ag_node_at(in[0])->op == AG_CONST ? SKIP_A : 0)
                                          | (k > 1 && ag_node_at(in[1])->op == AG_CONST ? SKIP_B : 0));
        }
        i++;
    }
    tape->first[i] = (uint32_t)operand;
}

/* forward's schedule: by level; within a level a block's row dots first, by block and
 * input row (each row's dots together, in the block's order), then the other
 * instructions by kind (the row dots over the same weights together); then by position.
 * So forward runs each stretch of one kind as one loop. */
static const uint32_t *sort_levels;
static const ag_tape *sort_tape;

static int64_t kind_key(uint32_t i)
{
    const ag_tape *t = sort_tape;
    const int32_t *op = t->operands + t->first[i];
    if (t->block_of[i] >= 0) /* below every kind: blocks < 2^29 (each has 4 dots or more) */
        return INT64_MIN / 2 + ((int64_t)t->block_of[i] << 32) + op[1];
    return t->kinds[i] == AG_TAPE_ROW_DOT ? AG_TAPE_ROW_DOT + (int64_t)op[0] : t->kinds[i];
}

static int by_schedule(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    if (sort_levels[a] != sort_levels[b])
        return sort_levels[a] < sort_levels[b] ? -1 : 1;
    int64_t ka = kind_key(a), kb = kind_key(b);
    if (ka != kb)
        return ka < kb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int same_stretch(const ag_tape *tape, const uint32_t *levels, uint32_t i, uint32_t j)
{
    if (levels[i] != levels[j] || tape->kinds[i] != tape->kinds[j] || tape->block_of[i] != tape->block_of[j])
        return 0;
    if (tape->kinds[i] != AG_TAPE_ROW_DOT)
        return 1;
    const int32_t *a = tape->operands + tape->first[i], *b = tape->operands + tape->first[j];
    if (tape->block_of[i] >= 0)
        return a[1] == b[1];
    return a[0] == b[0] && a[2] == b[2] && a[3] == b[3];
}

static void schedule_forward(ag_tape *tape, const uint32_t *levels)
{
    for (size_t i = 0; i < tape->n_code; i++)
        tape->forward_order[i] = (uint32_t)i;
    sort_levels = levels; /* the GIL is held (invariant 4): no other tape is made meanwhile */
    sort_tape = tape;
    qsort(tape->forward_order, tape->n_code, sizeof(uint32_t), by_schedule);
    const uint32_t *order = tape->forward_order;
    for (size_t p = tape->n_code; p-- > 0;) {
        const int32_t *in = tape->operands + tape->first[order[p]];
        int32_t *at = tape->forward_slots + 4 * p;
        tape->run[p] = p + 1 < tape->n_code && same_stretch(tape, levels, order[p], order[p + 1])
                           ? tape->run[p + 1] + 1
                           : 1;
        at[0] = tape->out[order[p]];
        at[1] = in[0]; /* an elementwise op's inputs (a row dot's: unused) */
        at[2] = tape->kinds[order[p]] < AG_OP_COUNT && ag_arity(tape->kinds[order[p]]) > 1 ? in[1] : 0;
        at[3] = 0;
    }
}

/* ---- forward's blocks ---- */

/* The row dots by level, input row and length, then by position: the dots of one run
 * of these are one sample's neurons of one layer. */
static int by_input_row(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    const int32_t *oa = sort_tape->operands + sort_tape->first[a], *ob = sort_tape->operands + sort_tape->first[b];
    if (sort_levels[a] != sort_levels[b])
        return sort_levels[a] < sort_levels[b] ? -1 : 1;
    if (oa[1] != ob[1] || oa[2] != ob[2])
        return oa[1] != ob[1] ? (oa[1] < ob[1] ? -1 : 1) : (oa[2] < ob[2] ? -1 : 1);
    return a < b ? -1 : a > b;
}

/* Whether a row dot's weights and bias are sources: forward reads them before it runs. */
static int weights_are_sources(const ag_tape *tape, const int32_t *op)
{
    for (int32_t k = 0; k < op[2]; k++)
        if (!is_source(tape->nodes[op[0] + k]))
            return 0;
    return op[3] < 0 || is_source(tape->nodes[op[3]]);
}

/* The block of the dots dots[0..count) (their weights and biases, in that order): one
 * made for an earlier row with the same weights, or a new one. next_block chains the
 * blocks whose first weight slot is the same, from first_block (by slot). */
static int32_t block_for(ag_tape *tape, const uint32_t *dots, uint32_t count, int32_t *first_block,
                         int32_t *next_block, size_t *n_slots, size_t *n_values)
{
    const int32_t *op0 = tape->operands + tape->first[dots[0]];
    for (int32_t b = first_block[op0[0]]; b >= 0; b = next_block[b]) {
        const ag_tape_block *block = tape->blocks + b;
        const int32_t *slots = tape->block_slots + block->slots;
        uint32_t j = 0;
        if (block->count != count || block->pairs != (uint32_t)op0[2])
            continue;
        for (const int32_t *op; j < count; j++)
            if (op = tape->operands + tape->first[dots[j]], slots[j] != op[0] || slots[count + j] != op[3])
                break;
        if (j == count)
            return b;
    }
    int32_t b = (int32_t)tape->n_blocks++;
    uint32_t width = (count + AG_LANES - 1) / AG_LANES * AG_LANES;
    tape->blocks[b] = (ag_tape_block){count, (uint32_t)op0[2], width, *n_slots, *n_values};
    for (uint32_t j = 0; j < count; j++) {
        const int32_t *op = tape->operands + tape->first[dots[j]];
        tape->block_slots[*n_slots + j] = op[0];
        tape->block_slots[*n_slots + count + j] = op[3];
    }
    *n_slots += 2 * (size_t)count;
    *n_values += ((size_t)op0[2] + 1) * width;
    next_block[b] = first_block[op0[0]];
    first_block[op0[0]] = b;
    return b;
}

/* Blocks for the row dots that share their input row with AG_LANES others or more at
 * their level, over weights that are sources: block_of, blocks, block_slots and
 * block_values (zeros: the padding lanes stay zero). AG_OK or AG_ENOMEM. */
static int find_blocks(ag_tape *tape, const uint32_t *levels)
{
    size_t n_dots = 0, n_slots = 0, n_values = 0;
    for (size_t i = 0; i < tape->n_code; i++) {
        tape->block_of[i] = -1;
        n_dots += tape->kinds[i] == AG_TAPE_ROW_DOT;
    }
    uint32_t *dots = malloc((n_dots ? n_dots : 1) * sizeof(uint32_t));
    int32_t *first_block = malloc((tape->n ? tape->n : 1) * sizeof(int32_t));
    int32_t *next_block = malloc((n_dots / AG_LANES + 1) * sizeof(int32_t));
    tape->blocks = malloc((n_dots / AG_LANES + 1) * sizeof(ag_tape_block));
    tape->block_slots = malloc((2 * n_dots + 1) * sizeof(int32_t));
    int status = dots && first_block && next_block && tape->blocks && tape->block_slots ? AG_OK : AG_ENOMEM;
    for (size_t i = 0, d = 0; status == AG_OK && i < tape->n_code; i++)
        if (tape->kinds[i] == AG_TAPE_ROW_DOT)
            dots[d++] = (uint32_t)i;
    if (status == AG_OK) {
        for (size_t s = 0; s < tape->n; s++)
            first_block[s] = -1;
        sort_levels = levels;
        sort_tape = tape;
        qsort(dots, n_dots, sizeof(uint32_t), by_input_row);
    }
    for (size_t start = 0, end; status == AG_OK && start < n_dots; start = end) {
        const int32_t *op = tape->operands + tape->first[dots[start]];
        int sources = weights_are_sources(tape, op);
        for (end = start + 1; end < n_dots; end++) {
            const int32_t *other = tape->operands + tape->first[dots[end]];
            if (levels[dots[end]] != levels[dots[start]] || other[1] != op[1] || other[2] != op[2])
                break;
            sources = sources && weights_are_sources(tape, other);
        }
        if (end - start < AG_LANES || !sources)
            continue;
        int32_t b = block_for(tape, dots + start, (uint32_t)(end - start), first_block, next_block, &n_slots,
                              &n_values);
        for (size_t d = start; d < end; d++)
            tape->block_of[dots[d]] = b;
    }
    uint32_t widest = 0;
    for (size_t b = 0; b < tape->n_blocks; b++)
        widest = tape->blocks[b].width > widest ? tape->blocks[b].width : widest;
    n_values += widest; /* block_out, at the end */
    if (status == AG_OK) {
        tape->block_values = calloc(n_values ? n_values : 1, sizeof(double));
        tape->block_out = tape->block_values + n_values - widest;
        tape->bytes += n_values * sizeof(double) + n_slots * sizeof(int32_t) + tape->n_blocks * sizeof(ag_tape_block);
        status = tape->block_values ? AG_OK : AG_ENOMEM;
    }
    free(dots);
    free(first_block);
    free(next_block);
    return status;
}

/* ---- backward's schedule ---- */

/* Backward runs the instructions in reverse, but a sample's row dots over one input row
 * (a layer's neurons) run as one group, at the place of the last of them: each adds its
 * share to the row's adjoints, which the group keeps in registers from the first dot to
 * the last. The dots run in their own order, so every adjoint still gets its
 * contributions in the sweep's order, provided that the instructions the group's first
 * dots are moved past touch none of the adjoints those dots touch (their output's, their
 * weights', their bias's, the row's). A grouping keeps those adjoints marked. */
typedef struct grouping {
    uint32_t *stamp; /* by slot: mark when the group's dots touch its adjoint */
    uint32_t mark;
    uint32_t *members;
    uint32_t count;
    int32_t x, pairs;
} grouping;

static const int32_t *operands_of(const ag_tape *tape, uint32_t i) { return tape->operands + tape->first[i]; }

static int range_marked(const grouping *group, int32_t first, int32_t count)
{
    for (int32_t k = 0; k < count; k++)
        if (group->stamp[first + k] == group->mark)
            return 1;
    return 0;
}

static void mark_range(grouping *group, int32_t first, int32_t count)
{
    for (int32_t k = 0; k < count; k++)
        group->stamp[first + k] = group->mark;
}

/* Whether instruction i touches an adjoint the group's dots touch. */
static int touches_group(const ag_tape *tape, uint32_t i, const grouping *group)
{
    const int32_t *in = operands_of(tape, i);
    if (group->stamp[tape->out[i]] == group->mark)
        return 1;
    if (tape->kinds[i] == AG_TAPE_ROW_DOT)
        return range_marked(group, in[0], in[2]) || range_marked(group, in[1], in[2])
               || (in[3] >= 0 && group->stamp[in[3]] == group->mark);
    for (uint32_t k = tape->first[i]; k < tape->first[i + 1]; k++)
        if (group->stamp[tape->operands[k]] == group->mark)
            return 1;
    return 0;
}

/* Whether row dot i can be in a group over its input row: its output, weights and bias
 * apart from the row (and, when in is the group's, untouched by the group's dots). */
static int can_join(const ag_tape *tape, uint32_t i, const grouping *group)
{
    if (tape->kinds[i] != AG_TAPE_ROW_DOT)
        return 0;
    const int32_t *in = operands_of(tape, i), out = tape->out[i];
    int32_t x = in[1], pairs = in[2];
    if (in[0] == x || (out >= x && out < x + pairs) || (in[3] >= x && in[3] < x + pairs))
        return 0; /* dot(p, p), or a dot over its own output: never met, kept out */
    if (group && (x != group->x || pairs != group->pairs))
        return 0;
    return !group
           || !(group->stamp[out] == group->mark || range_marked(group, in[0], pairs)
                || (in[3] >= 0 && group->stamp[in[3]] == group->mark));
}

static void join(const ag_tape *tape, uint32_t i, grouping *group)
{
    const int32_t *in = operands_of(tape, i);
    if (group->count == 0) {
        group->mark++;
        group->x = in[1];
        group->pairs = in[2];
        mark_range(group, in[1], in[2]);
    }
    group->members[group->count++] = i;
    group->stamp[tape->out[i]] = group->mark;
    mark_range(group, in[0], in[2]);
    if (in[3] >= 0)
        group->stamp[in[3]] = group->mark;
}

static void close_group(ag_tape *tape, grouping *group, size_t *p)
{
    for (uint32_t j = 0; j < group->count; j++)
        tape->backward_order[*p + j] = group->members[j];
    if (group->count > 1) {
        tape->groups[2 * tape->n_groups] = (uint32_t)*p;
        tape->groups[2 * tape->n_groups++ + 1] = group->count;
    }
    *p += group->count;
    tape->widest_group = group->count > tape->widest_group ? group->count : tape->widest_group;
    group->count = 0;
}

/* backward_order and groups: the instructions in reverse, each group's dots together.
 * AG_OK or AG_ENOMEM. */
static int schedule_backward(ag_tape *tape)
{
    grouping group = {calloc(tape->n ? tape->n : 1, sizeof(uint32_t)), 0,
                      malloc((tape->n_code ? tape->n_code : 1) * sizeof(uint32_t)), 0, 0, 0};
    if (!group.stamp || !group.members) {
        free(group.stamp);
        free(group.members);
        return AG_ENOMEM;
    }
    size_t p = 0;
    for (uint32_t i = (uint32_t)tape->n_code; i-- > 0;) {
        if (group.count && can_join(tape, i, &group)) {
            join(tape, i, &group);
            continue;
        }
        int starts = can_join(tape, i, NULL);
        if (group.count && (starts || touches_group(tape, i, &group)))
            close_group(tape, &group, &p);
        if (starts) {
            join(tape, i, &group);
            continue;
        }
        tape->backward_order[p++] = i;
    }
    close_group(tape, &group, &p);
    free(group.stamp);
    free(group.members);
    for (size_t q = tape->n_code; q-- > 0;) { /* each stretch of one elementwise op */
        uint32_t i = tape->backward_order[q];
        const int32_t *in = operands_of(tape, i);
        int32_t *at = tape->back_slots + 4 * q;
        int elementwise = tape->kinds[i] < AG_OP_COUNT && ag_arity(tape->kinds[i]) > 0;
        tape->back_run[q] = elementwise && q + 1 < tape->n_code && tape->kinds[tape->backward_order[q + 1]] == tape->kinds[i]
                                ? tape->back_run[q + 1] + 1
                                : 1;
        at[0] = tape->out[i];
        if (elementwise) {
            at[1] = in[0];
            at[2] = ag_arity(tape->kinds[i]) > 1 ? in[1] : 0;
            at[3] = tape->skip[i];
        } else if (tape->kinds[i] == AG_TAPE_ROW_DOT) {
            at[1] = in[0];
            at[2] = in[3];
        }
    }
    return AG_OK;
}

/* The sources' slots, then the computed nodes', each in the order of the nodes'
 * addresses: the passes that read or write every node go through memory in one
 * direction, where the processor fetches ahead, not all over the graph. */
static int by_address(const void *pa, const void *pb)
{
    const ag_node *a = sort_tape->nodes[*(const int32_t *)pa], *b = sort_tape->nodes[*(const int32_t *)pb];
    int source_a = is_source(a), source_b = is_source(b);
    if (source_a != source_b)
        return source_a ? -1 : 1;
    return (uintptr_t)a < (uintptr_t)b ? -1 : (uintptr_t)a > (uintptr_t)b;
}

/* by_address, and nodes from by slot to in its order. AG_OK or AG_ENOMEM. */
static int order_by_address(ag_tape *tape)
{
    ag_node **by_slot = malloc((tape->n ? tape->n : 1) * sizeof(ag_node *));
    if (!by_slot)
        return AG_ENOMEM;
    for (size_t s = 0; s < tape->n; s++)
        tape->by_address[s] = (int32_t)s;
    sort_tape = tape;
    qsort(tape->by_address, tape->n, sizeof(int32_t), by_address);
    memcpy(by_slot, tape->nodes, tape->n * sizeof(ag_node *));
    for (size_t i = 0; i < tape->n; i++)
        tape->nodes[i] = by_slot[tape->by_address[i]];
    free(by_slot);
    return AG_OK;
}

int ag_tape_make(const ag_order *order, ag_tape *tape)
{
    size_t n = order->n, n_sources = 0, n_operands = 0, k;
    for (size_t i = 0; i < n; i++) {
        const ag_node *node = ag_node_at(order->ids[i]);
        if (is_source(node))
            n_sources++;
        else
            ag_inputs_of(node, &k), n_operands += k > 4 ? k : 4;
    }
    if (n > INT32_MAX || n_operands > UINT32_MAX)
        return AG_ENOMEM;
    size_t n_code = n - n_sources, bytes = 0;
    *tape = (ag_tape){
        .n = n,
        .n_sources = n_sources,
        .n_code = n_code,
        .nodes = array_of(n, sizeof(ag_node *), &bytes),
        .ids = array_of(n, sizeof(ag_id), &bytes),
        .by_address = array_of(n, sizeof(int32_t), &bytes),
        .kinds = array_of(n_code, 1, &bytes),
        .skip = array_of(n_code, 1, &bytes),
        .out = array_of(n_code, sizeof(int32_t), &bytes),
        .first = array_of(n_code + 1, sizeof(uint32_t), &bytes),
        .operands = array_of(n_operands, sizeof(int32_t), &bytes),
        .forward_order = array_of(n_code, sizeof(uint32_t), &bytes),
        .run = array_of(n_code, sizeof(uint32_t), &bytes),
        .values = array_of(n, sizeof(double), &bytes),
        .adjoints = array_of(n, sizeof(double), &bytes),
        .block_of = array_of(n_code, sizeof(int32_t), &bytes),
        .backward_order = array_of(n_code, sizeof(uint32_t), &bytes),
        .groups = array_of(n_code + 1, sizeof(uint32_t), &bytes), /* a group has 2 dots or more */
        .back_run = array_of(n_code, sizeof(uint32_t), &bytes),
        .back_slots = array_of(4 * n_code, sizeof(int32_t), &bytes),
        .forward_slots = array_of(4 * n_code, sizeof(int32_t), &bytes),
    };
    tape->bytes = bytes;
    tape->data_seen = tape->rules_seen = UINT64_MAX; /* never: the first run reads every node */
    uint32_t *level_of = malloc((n ? n : 1) * sizeof(uint32_t));
    uint32_t *levels = malloc((n_code ? n_code : 1) * sizeof(uint32_t));
    void *all[] = {tape->nodes,    tape->ids,           tape->by_address, tape->kinds,  tape->skip,
                   tape->out,      tape->first,         tape->operands,   tape->forward_order,
                   tape->run,      tape->values,        tape->adjoints,   tape->block_of,
                   tape->backward_order, tape->groups,     tape->back_run,   tape->back_slots,
                   tape->forward_slots, level_of,       levels};
    int status = AG_OK;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        status = all[i] ? status : AG_ENOMEM;
    if (status == AG_OK)
        status = place_slots(order, tape); /* sets the grads aside when it succeeds */
    if (status != AG_OK) {
        free(level_of);
        free(levels);
        ag_tape_free(tape);
        return status;
    }
    write_code(order, tape, level_of, levels);
    status = find_blocks(tape, levels);
    if (status == AG_OK)
        status = schedule_backward(tape);
    if (status == AG_OK) {
        tape->group_g = array_of(tape->widest_group, sizeof(double), &tape->bytes);
        tape->group_w = array_of(tape->widest_group, sizeof(double *), &tape->bytes);
        tape->group_to_w = array_of(tape->widest_group, sizeof(double *), &tape->bytes);
        status = tape->group_g && tape->group_w && tape->group_to_w ? AG_OK : AG_ENOMEM;
    }
    if (status == AG_OK) {
        schedule_forward(tape, levels);
        tape->root_slot = ag_node_at(order->ids[n - 1])->slot;
        status = order_by_address(tape);
    }
    for (size_t i = 0; i < n; i++) /* the grads back where they were */
        ag_node_at(order->ids[i])->grad = tape->adjoints[i];
    free(level_of);
    free(levels);
    if (status != AG_OK)
        ag_tape_free(tape);
    return status;
}

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
    const int32_t *slots = tape->by_address;
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
    int want_a = !(skip & SKIP_A), want_b = n > 1 && !(skip & SKIP_B);
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
    const int32_t *first = operands_of(tape, code[0]), pairs = first[2];
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
    for (; k < pairs; k++) {
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
    const int32_t *slots = tape->by_address;
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
