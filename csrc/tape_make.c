/* Compiling a root's order into a tape (tape.h), which tape.c runs.
 *
 * Slots first: every node of the order gets one, a layer's rows consecutive ones. Then
 * the instructions, in the order's order, with their operands as slots. Then the two
 * schedules: forward's (by level, a layer's neurons as blocks, stretches of one kind
 * together) and backward's (the order reversed, a sample's dots over one input row as
 * one group, stretches of one op together). Each schedule keeps the bits of the sweep
 * over the order: forward computes each value from its inputs alone, backward gives each
 * adjoint its contributions in the sweep's order (tape.c). */
#include "tape.h"

#include <stdlib.h>
#include <string.h>
#include "key_sort.h"
#include "nodes.h"
#include "ops.h"

#define NO_SLOT UINT64_MAX /* in node->slot while the tape is made: none yet */

void ag_tape_free(ag_tape *tape)
{
    void *arrays[] = {tape->nodes,     tape->ids,      tape->by_id,  tape->kinds,       tape->skip,
                      tape->out,       tape->first,    tape->operands,    tape->forward_order, tape->run,
                      tape->values,    tape->adjoints, tape->block_of,    tape->blocks,      tape->block_slots,
                      tape->block_values, tape->backward_order, tape->groups, tape->group_g, tape->group_w,
                      tape->group_to_w, tape->back_run, tape->back_slots, tape->forward_slots};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        free(arrays[i]);
    *tape = (ag_tape){0};
}

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

/* Slots: each row of a layer's dot nodes on consecutive slots, the other nodes after, in
 * the order of their ids (so that the passes over the nodes in that order, tape.h, go
 * through the values in one direction too). Grads are set aside into tape->adjoints
 * (indexed by order position) first. AG_OK or AG_ENOMEM (then nothing changed). */
static int place_slots(const ag_order *order, ag_tape *tape)
{
    uint64_t *ids = malloc((order->n ? order->n : 1) * sizeof(uint64_t));
    uint32_t *positions = malloc((order->n ? order->n : 1) * sizeof(uint32_t));
    for (size_t i = 0; ids && positions && i < order->n; i++) {
        ids[i] = order->ids[i];
        positions[i] = (uint32_t)i;
    }
    if (!ids || !positions || ag_sort_by_keys(ids, positions, order->n) != AG_OK) {
        free(ids);
        free(positions);
        return AG_ENOMEM;
    }
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
    for (size_t i = 0; i < order->n; i++)
        place(tape, order->ids[positions[i]], &next);
    free(ids);
    free(positions);
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
        int32_t *operands = tape->operands + operand;
        uint32_t level = 0;
        tape->out[i] = (int32_t)node->slot;
        tape->first[i] = (uint32_t)operand;
        tape->kinds[i] = node->op;
        tape->skip[i] = 0;
        if (node->op == AG_DOT && as_row_dot(in, k, operands)) {
            tape->kinds[i] = AG_TAPE_ROW_DOT;
            operand += 4;
        } else {
            for (size_t j = 0; j < k; j++)
                operands[j] = (int32_t)slot_of(in[j]);
            operand += k;
            if (node->op != AG_SUM && node->op != AG_DOT)
                tape->skip[i] = (uint8_t)((ag_node_at(in[0])->op == AG_CONST ? AG_TAPE_SKIP_A : 0)
                                          | (k > 1 && ag_node_at(in[1])->op == AG_CONST ? AG_TAPE_SKIP_B : 0));
        }
        if (tape->kinds[i] == AG_TAPE_ROW_DOT) { /* its inputs: two ranges of slots, a bias */
            for (int32_t j = 0; j < operands[2]; j++) {
                level = level_of[operands[0] + j] > level ? level_of[operands[0] + j] : level;
                level = level_of[operands[1] + j] > level ? level_of[operands[1] + j] : level;
            }
            if (operands[3] >= 0 && level_of[operands[3]] > level)
                level = level_of[operands[3]];
        } else {
            for (size_t j = 0; j < k; j++)
                level = level_of[operands[j]] > level ? level_of[operands[j]] : level;
        }
        level_of[node->slot] = levels[i] = level + 1;
        i++;
    }
    tape->first[i] = (uint32_t)operand;
}

/* forward's schedule: by level; within a level a block's row dots first, by block and
 * input row (each row's dots together, in the block's order), then the other
 * instructions by kind (the row dots over the same weights together); then by position.
 * So forward runs each stretch of one kind as one loop. kind_key gives the middle field,
 * as a key that sorts as the signed number it stands for. */
static uint64_t kind_key(const ag_tape *tape, uint32_t i)
{
    const int32_t *op = ag_tape_operands(tape, i);
    int64_t key = tape->kinds[i];
    if (tape->block_of[i] >= 0) /* below every kind: blocks < 2^29 (each has 4 dots or more) */
        key = INT64_MIN / 2 + ((int64_t)tape->block_of[i] << 32) + op[1];
    else if (tape->kinds[i] == AG_TAPE_ROW_DOT)
        key = AG_TAPE_ROW_DOT + (int64_t)op[0];
    return (uint64_t)key ^ (UINT64_C(1) << 63);
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

/* forward_order, run and forward_slots. AG_OK or AG_ENOMEM. */
static int schedule_forward(ag_tape *tape, const uint32_t *levels)
{
    uint64_t *keys = malloc((tape->n_code ? tape->n_code : 1) * sizeof(uint64_t));
    if (!keys)
        return AG_ENOMEM;
    for (size_t i = 0; i < tape->n_code; i++) {
        tape->forward_order[i] = (uint32_t)i;
        keys[i] = kind_key(tape, (uint32_t)i);
    }
    int status = ag_sort_by_keys(keys, tape->forward_order, tape->n_code);
    for (size_t p = 0; status == AG_OK && p < tape->n_code; p++)
        keys[p] = levels[tape->forward_order[p]];
    if (status == AG_OK)
        status = ag_sort_by_keys(keys, tape->forward_order, tape->n_code);
    free(keys);
    if (status != AG_OK)
        return status;
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
    return AG_OK;
}

/* ---- forward's blocks ---- */

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
    uint32_t width = (count + AG_TAPE_LANES - 1) / AG_TAPE_LANES * AG_TAPE_LANES;
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

/* Blocks for the row dots that share their level, input row and length with at least
 * AG_TAPE_LANES - 1 others, over weights that are sources: block_of, blocks, block_slots and
 * block_values (zeros: the padding lanes stay zero). AG_OK or AG_ENOMEM. */
static int find_blocks(ag_tape *tape, const uint32_t *levels)
{
    size_t n_dots = 0, n_slots = 0, n_values = 0;
    for (size_t i = 0; i < tape->n_code; i++) {
        tape->block_of[i] = -1;
        n_dots += tape->kinds[i] == AG_TAPE_ROW_DOT;
    }
    uint32_t *dots = malloc((n_dots ? n_dots : 1) * sizeof(uint32_t));
    uint64_t *keys = malloc((n_dots ? n_dots : 1) * sizeof(uint64_t));
    int32_t *first_block = malloc((tape->n ? tape->n : 1) * sizeof(int32_t));
    int32_t *next_block = malloc((n_dots / AG_TAPE_LANES + 1) * sizeof(int32_t));
    tape->blocks = malloc((n_dots / AG_TAPE_LANES + 1) * sizeof(ag_tape_block));
    tape->block_slots = malloc((2 * n_dots + 1) * sizeof(int32_t));
    int status = dots && keys && first_block && next_block && tape->blocks && tape->block_slots ? AG_OK : AG_ENOMEM;
    for (size_t i = 0, d = 0; status == AG_OK && i < tape->n_code; i++)
        if (tape->kinds[i] == AG_TAPE_ROW_DOT)
            dots[d++] = (uint32_t)i;
    if (status == AG_OK) { /* by level, input row and length, then by position: the dots of
                              one run of these are one sample's neurons of one layer */
        for (size_t s = 0; s < tape->n; s++)
            first_block[s] = -1;
        for (size_t d = 0; d < n_dots; d++) {
            const int32_t *op = ag_tape_operands(tape, dots[d]);
            keys[d] = (uint64_t)(uint32_t)op[1] << 32 | (uint32_t)op[2];
        }
        status = ag_sort_by_keys(keys, dots, n_dots);
        for (size_t d = 0; status == AG_OK && d < n_dots; d++)
            keys[d] = levels[dots[d]];
        if (status == AG_OK)
            status = ag_sort_by_keys(keys, dots, n_dots);
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
        if (end - start < AG_TAPE_LANES || !sources)
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
    free(keys);
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
    const int32_t *in = ag_tape_operands(tape, i);
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
 * apart from the row and its bias apart from its weights (a group adds every bias share
 * before the weights', where the sweep adds it last), and, when in is the group's,
 * untouched by the group's dots. */
static int can_join(const ag_tape *tape, uint32_t i, const grouping *group)
{
    if (tape->kinds[i] != AG_TAPE_ROW_DOT)
        return 0;
    const int32_t *in = ag_tape_operands(tape, i), out = tape->out[i];
    int32_t x = in[1], pairs = in[2];
    if (in[0] == x || (out >= x && out < x + pairs) || (in[3] >= x && in[3] < x + pairs))
        return 0; /* dot(p, p), or a dot over its own output: never met, kept out */
    if (in[3] >= in[0] && in[3] < in[0] + pairs)
        return 0; /* a bias that is also one of the dot's weights */
    if (group && (x != group->x || pairs != group->pairs))
        return 0;
    return !group
           || !(group->stamp[out] == group->mark || range_marked(group, in[0], pairs)
                || (in[3] >= 0 && group->stamp[in[3]] == group->mark));
}

static void join(const ag_tape *tape, uint32_t i, grouping *group)
{
    const int32_t *in = ag_tape_operands(tape, i);
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
        const int32_t *in = ag_tape_operands(tape, i);
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

/* by_id: the sources' slots, then the computed nodes', each in the order of the nodes'
 * ids, which is the order of their addresses within each block of the arena (arena.h):
 * the passes that read or write every node go through memory in one direction, where
 * the processor fetches ahead, not all over the graph. And nodes, from by slot to in
 * by_id's order. AG_OK or AG_ENOMEM. */
static int order_by_id(ag_tape *tape)
{
    ag_node **by_slot = malloc((tape->n ? tape->n : 1) * sizeof(ag_node *));
    uint64_t *keys = malloc((tape->n ? tape->n : 1) * sizeof(uint64_t));
    int status = by_slot && keys ? AG_OK : AG_ENOMEM;
    for (size_t s = 0; status == AG_OK && s < tape->n; s++) {
        tape->by_id[s] = (uint32_t)s;
        keys[s] = (uint64_t)!is_source(tape->nodes[s]) << 32 | tape->ids[s];
    }
    if (status == AG_OK)
        status = ag_sort_by_keys(keys, tape->by_id, tape->n);
    if (status == AG_OK) {
        memcpy(by_slot, tape->nodes, tape->n * sizeof(ag_node *));
        for (size_t i = 0; i < tape->n; i++)
            tape->nodes[i] = by_slot[tape->by_id[i]];
    }
    free(by_slot);
    free(keys);
    return status;
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
        .by_id = array_of(n, sizeof(uint32_t), &bytes),
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
    void *all[] = {tape->nodes,    tape->ids,           tape->by_id, tape->kinds,  tape->skip,
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
    if (status == AG_OK)
        status = schedule_forward(tape, levels);
    if (status == AG_OK) {
        tape->root_slot = ag_node_at(order->ids[n - 1])->slot;
        status = order_by_id(tape);
    }
    for (size_t i = 0; i < n; i++) /* the grads back where they were */
        ag_node_at(order->ids[i])->grad = tape->adjoints[i];
    free(level_of);
    free(levels);
    if (status != AG_OK)
        ag_tape_free(tape);
    return status;
}
