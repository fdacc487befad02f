/* The arena: where every node lives, and how nodes are born and freed.
 *
 * Nodes sit in fixed-size blocks, so a node's address never changes while it lives
 * (no realloc, no stale pointers) and the slack is at most one block. Ids index the
 * blocks; freed ids go on a free list and are reused.
 *
 * Invariants the rest of the core relies on:
 *  1. A node's inputs exist before it and never change after it is made; the graph
 *     is an immutable DAG. Only data of leaves and every grad are written later.
 *  2. refs counts the Values (Python) and the live nodes that use this node as an
 *     input, once per use (a + a adds 2). A node is freed when refs reaches 0,
 *     through a worklist, never by recursion.
 *  3. AG_FLAG_SORTING is clear between calls; sweep.c sets it only for the length of
 *     one sort. The other flags say what side tables hold for the node, so freeing a
 *     node looks them up only when it has something there.
 *  4. Every call runs with the GIL held, so the arena needs no lock of its own.
 */
#ifndef AG_ARENA_H
#define AG_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include "ag.h"
#include "ops.h"

#define AG_BLOCK_SHIFT 12
#define AG_MAX_NODES ((size_t)1 << 31) /* ids stay below 2^31: sweep.c uses the top bit */
#define AG_BLOCK_NODES ((size_t)1 << AG_BLOCK_SHIFT)

/* Packed to 2 bytes: 30 bytes a node instead of 32 keeps a node and its Value under
 * 100 bytes. Members are only read and written by name, never through pointers. */
#pragma pack(push, 2)
typedef struct ag_node {
    union {
        double data;      /* forward value */
        ag_id next_dying; /* while waiting to be freed: the next node in the worklist */
    };
    double grad;          /* accumulated d root / d node */
    ag_id in[2];          /* inputs; n-ary ops: in[0] indexes the input lists, in[1] the count;
                             free nodes: in[0] is the next free id */
    uint32_t refs;
    uint8_t op;           /* enum ag_op */
    uint8_t flags;        /* AG_FLAG_* */
} ag_node;
#pragma pack(pop)

enum ag_flag {
    AG_FLAG_SORTING = 1, /* entered by the topological sort under way */
    AG_FLAG_STRINGS = 2, /* has a label or a custom op text (labels.c) */
    AG_FLAG_ORDER = 4    /* is the root of a cached topological order (sweep.c) */
};

typedef struct ag_input_list {
    ag_id *ids;            /* n ids, or the next free list index when unused */
    uint32_t n;
} ag_input_list;

typedef struct ag_arena {
    ag_node **blocks;
    size_t n_blocks, blocks_cap;
    ag_id next_fresh;      /* ids >= next_fresh have never been handed out */
    ag_id free_head;       /* 0: empty */
    size_t live;
    size_t node_limit;     /* 0: none */
    ag_input_list *lists;  /* n-ary inputs */
    size_t n_lists, lists_cap;
    uint32_t free_list_head; /* UINT32_MAX: empty */
    size_t list_bytes;
} ag_arena;

extern ag_arena ag_the_arena;

static inline ag_node *ag_node_at(ag_id id)
{
    return &ag_the_arena.blocks[id >> AG_BLOCK_SHIFT][id & (AG_BLOCK_NODES - 1)];
}

static inline void ag_retain(ag_id id) { ag_node_at(id)->refs++; }

/* A new node with refs = 1 and the given op; its inputs are set by the caller,
 * which must incref them. NULL (and *id = 0) when memory runs out. */
ag_node *ag_alloc_node(int op, double data, ag_id *id);

/* Inputs of any node, as a pointer and a count (valid until the arena changes).
 * A unary or binary node's inputs are copied into `fixed`: in[] sits at a 2-byte
 * boundary of the packed node, so a pointer to it would be a misaligned ag_id *
 * (undefined behaviour; UBSan in the CI's sanitizer build reports it). */
static inline const ag_id *ag_inputs_of(const ag_node *node, size_t *n, ag_id fixed[2])
{
    if (ag_op_is_nary(node->op)) {
        const ag_input_list *list = &ag_the_arena.lists[node->in[0]];
        *n = list->n;
        return list->ids;
    }
    *n = ag_fixed_arity(node->op);
    fixed[0] = node->in[0];
    fixed[1] = node->in[1];
    return fixed;
}

/* Store an n-ary input list on a fresh node; increfs the inputs. AG_ENOMEM on failure. */
int ag_attach_list(ag_node *node, const ag_id *ids, size_t n);

void ag_release(ag_id id);   /* decref, freeing what dies */

/* Per-thread error state, set by failing calls. */
void ag_fail(int status, ag_id node);
void ag_fail_value(double value);  /* the nan or inf an op produced, for AG_EANOMALY */

/* Hooks run when a node with AG_FLAG_STRINGS / AG_FLAG_ORDER dies. */
void ag_labels_forget(ag_id id);
void ag_order_cache_forget(ag_id id);
size_t ag_labels_bytes(void);
size_t ag_order_cache_bytes(void);

#endif
