/* Replay's compiled tape: a sorted graph turned into arrays that the forward and the
 * backward sweep run through like compiled code. tape_make.c compiles a tape, tape.c
 * runs it. Internal to the C core (sweep.c owns the tapes, in its cache of roots that
 * replay). */
#ifndef AG_TAPE_H
#define AG_TAPE_H

#include <stddef.h>
#include <stdint.h>
#include "arena.h"
#include "sweep.h"

/* Every node of the order has a slot; its value and adjoint sit at that slot in two
 * contiguous arrays, and instructions name their operands by int32 slot, never by node.
 * A layer's rows (arena.h, ag_row) get consecutive slots, so that a neuron's dot node
 * runs as two loops over contiguous arrays. The nodes are read once before a run (their
 * data) and written once after (data, or grad).
 *
 * The instructions are the order's computed nodes, in the order's order: backward runs
 * them in reverse, which adds every contribution to every adjoint in the sweep's order
 * (sweep.c). Forward may run them in any order that computes inputs first, since each
 * value is a function of its inputs alone: it runs them level by level, and a level's
 * dot nodes over the same weights side by side, as independent chains of additions.
 *
 * A tape stays valid while its root lives: nodes never move (arena.h), the root keeps
 * every node under it alive (invariant 2) with the same inputs (invariant 1). It holds
 * no reference of its own: the cache drops it when the root dies (sweep.c). */
/* A layer's neurons, as forward runs their row dots over one input row (a sample's):
 * count row dots, each over pairs weights and a bias, all sources. Forward copies
 * their weights into block_values transposed (pairs rows of width doubles: width is
 * count rounded up to whole lanes, the padding zeros), then the biases, once per run;
 * then each input row's dots run side by side, a lane a neuron (tape.c). */
typedef struct ag_tape_block {
    uint32_t count, pairs, width;
    size_t slots;  /* its first index into block_slots: count weight slots, count bias slots */
    size_t values; /* its first index into block_values: pairs * width weights, width biases */
} ag_tape_block;

typedef struct ag_tape {
    size_t n, n_sources, n_code;
    ag_node **nodes;          /* in by_id's order (while the tape is made: by slot) */
    ag_id *ids;               /* by slot, for error reports */
    uint32_t *by_id;          /* the sources' slots, then the computed nodes', each in
                                 the order of their nodes' ids (tape_make.c) */
    uint8_t *kinds;           /* by instruction: the op, or AG_TAPE_ROW_DOT */
    uint8_t *skip;            /* by instruction: the CONST inputs an elementwise op
                                 passes nothing to (nodes.h) */
    int32_t *out;             /* by instruction: its node's slot */
    uint32_t *first;          /* by instruction: n_code + 1 offsets into operands */
    int32_t *operands;        /* input slots; AG_TAPE_ROW_DOT: weights, xs, pairs, bias */
    uint32_t *forward_order;  /* instructions in the order forward runs them */
    int32_t *forward_slots;   /* by position in forward_order, four each: the output and
                                 an elementwise op's inputs, which forward reads in a row */
    uint32_t *run;            /* by position in forward_order: how many instructions from
                                 there on are of the same level and kind (row dots: over the
                                 same weights), which forward runs as one loop */
    uint32_t *backward_order; /* instructions in the order backward runs them (tape.c) */
    uint32_t *groups;         /* each group of dots over one input row: its first
                                 position in backward_order, its number of dots */
    size_t n_groups;
    uint32_t *back_run;       /* by position in backward_order: how many instructions from
                                 there on are of the same elementwise op, which backward
                                 runs as one loop (1 for the others) */
    int32_t *back_slots;      /* by position in backward_order, four each: an elementwise
                                 op's output, inputs and skip; a row dot's output, first
                                 weight and bias (or -1); backward reads them in a row */
    uint32_t widest_group;
    double *group_g;          /* widest_group doubles: a group's dots' adjoints */
    const double **group_w;   /* and their weights */
    double **group_to_w;      /* and their weights' adjoints */
    double *values, *adjoints; /* by slot; the root's slot is out[n_code - 1] (or 0) */
    int32_t *block_of;        /* by instruction: the block whose row dot it is, or -1 */
    ag_tape_block *blocks;    /* forward's blocks (below) */
    size_t n_blocks;
    int32_t *block_slots;     /* each block's weight rows' first slots, then its biases' */
    double *block_values;     /* each block's weights transposed, then its biases */
    double *block_out;        /* the last width doubles of block_values: one row's dots */
    size_t root_slot, bytes;
    uint64_t data_seen;  /* ag_data_edits when values were last every node's data */
    uint64_t rules_seen; /* ag_rule_edits when no node had a Python rule, or 0 (arena.h) */
} ag_tape;

/* A dot node whose weights (and bias) and xs are consecutive slots: operands are the
 * first weight's slot, the first x's, the number of pairs and the bias's slot (or -1). */
#define AG_TAPE_ROW_DOT AG_OP_COUNT

/* skip's bits: an elementwise op's inputs that are CONST nodes (nodes.h) */
enum { AG_TAPE_SKIP_A = 1, AG_TAPE_SKIP_B = 2 };

/* How many doubles the tape's loops work on at once (tape.c); a block's width is a
 * whole number of them. */
#define AG_TAPE_LANES 4

/* Instruction i's operands. */
static inline const int32_t *ag_tape_operands(const ag_tape *tape, uint32_t i)
{
    return tape->operands + tape->first[i];
}

/* Compiles a replayable order (every node computed by an op of the table, or a source).
 * AG_OK or AG_ENOMEM (and *tape empty). */
int ag_tape_make(const ag_order *order, ag_tape *tape);
void ag_tape_free(ag_tape *tape);

/* Recomputes every computed node's data from the sources' current data. With check
 * (detect_anomaly), a nan or inf stops it: AG_EANOMALY with *bad its node; that node
 * and the ones before it in the order have their new data (as the walk that stops
 * there leaves them), the ones after keep theirs. Calls no Python. */
int ag_tape_forward(ag_tape *tape, int check, ag_id *bad);

/* backward() of the root through the tape: adds d root / d node to every node's grad
 * (root: +1), bitwise what the sweep over the order gives. Returns 0 and changes
 * nothing when some node has a Python _backward or is owned by a running sweep (those
 * need the order's own sweep: sweep.c), else 1. With sweeps_running (some sweep is
 * running Python), the nodes are checked for owned marks. Calls no Python. */
int ag_tape_backward(ag_tape *tape, int sweeps_running);

#endif
