/* The arena: where every node lives, and how nodes are born and freed.
 *
 * Nodes sit in fixed-size blocks, so a node's address never changes while it lives
 * (no realloc, no stale pointers). Ids index the blocks; freed ids go on a free list
 * and are reused, and whole free blocks go back to the system beyond a reserve.
 *
 * Invariants the rest of the core relies on (cited by number across csrc/ and docs/):
 *  1. A node's inputs exist before it and never change after it is made; the graph
 *     is an immutable DAG. Only data of leaves and every grad are written later.
 *  2. refs counts what holds the node: its Value (at most one, invariant 8), each
 *     live node that uses it as an input (once per use: a + a adds 2), each owned
 *     id list (NodeList, optimizers) and each row (ag_row) it is in. A dot node made
 *     by a layer holds its two rows instead of its inputs (ag_dot_rows). A node is
 *     freed when refs reaches 0, through a worklist, never by recursion.
 *  3. AG_FLAG_SORTING is clear between calls, and whenever Python code may run: the
 *     sort sets it, and it is cleared by the end of the sort, or (when no node under
 *     the root has a Python _backward) by the sweep or grad() pass that follows it in
 *     the same call. STRINGS and ORDER say what side tables hold for the node, so
 *     freeing a node looks them up only when it has something there.
 *  4. Every call runs with the GIL held, so the arena needs no lock of its own. Only
 *     the Python hooks below run Python code; every caller of ag_release and of the
 *     sweep is ready for that (the arena is consistent whenever a hook runs).
 *  5. No recursion on graph depth, in C or Python: sorts, sweeps, freeing and walks use
 *     explicit stacks or worklists.
 *  6. Values that carry nothing Python-side hold no Python references and stay out of
 *     the cyclic GC; each reference a pin holds for a holder the GC cannot see through
 *     is reported by the Value that alone owns the path from that holder (pins.c).
 *  7. Ownership: every id stored outside a node's own Value holds a reference.
 *  8. Identity: `py` is the one Python Value of the node while one exists, else NULL.
 *     A node whose Value carries Python state (attributes, a Python _backward, a
 *     subclass) keeps that Value alive while anything else holds the node (PINNED),
 *     so the state is there when the node comes back to Python through `_prev`: it
 *     holds refs - 1 references to the Value, one for each other holder (so that the
 *     GC can account for each holder's share, invariant 6).
 *     A Value never moves to another node once it has been handed out (value_new.c).
 *  9. Nodes may carry Python rules (AG_FLAG_PYRULE); the sweep runs them in order.
 * 10. Re-entrancy: wherever C calls Python (ag_hooks, and the C-API files' calls listed
 *     in docs/how-it-works.md), anything may happen: Values made, dropped, given
 *     state; backward() or grad() run, in this thread or another. Across such a point a
 *     C frame keeps only what it owns: a reference to every node it will touch after
 *     (a sweep retains its root, whose graph holds the rest), no half-made Value
 *     reachable from Python, and its working state in buffers of its own. A sweep
 *     that runs Python keeps its adjoints in the nodes' grad fields (Python rules read
 *     them there), so it marks its nodes AG_FLAG_OWNED while it runs, and any other
 *     sweep that reaches one refuses (AG_EBUSY) rather than mix its adjoints in. A
 *     sort that reads no grads (a replay's, graph_size's) walks owned nodes as any.
 */
#ifndef AG_ARENA_H
#define AG_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include "ag.h"
#include "ops.h"

#define AG_BLOCK_SHIFT 12
#define AG_BLOCK_NODES ((size_t)1 << AG_BLOCK_SHIFT)
#define AG_MAX_NODES ((size_t)1 << 31) /* ids stay below 2^31: sweep.c uses the top bit */

/* Whole free blocks beyond this many free node slots go back to the system once a
 * graph dies, so one big graph does not pin its memory for the life of the process,
 * while a training loop's graphs of up to this size keep reusing the same nodes. (A
 * graph that dies a node at a time can leave up to an eighth more: see arena.c.) */
#define AG_RESERVE_NODES ((size_t)1 << 19)

typedef struct ag_node {
    union {
        double data;      /* forward value */
        ag_id next_dying; /* while waiting to be freed: the next node in the worklist */
    };
    union {
        double grad;      /* accumulated d root / d node */
        uint64_t slot;    /* during a sweep that keeps the grads aside (grad() with
                             create_graph, jvp, hvp): that sweep's index for the node (its
                             pool entries, its position), 0 for none; the grads come back
                             after (sweep.h, grads_kept) */
    };
    void *py;             /* the node's Value (a PyObject *), or NULL: invariant 8 */
    ag_id in[2];          /* inputs; n-ary ops: in[0] indexes the input lists, in[1] the count;
                             free nodes: in[0] is the next free id */
    uint32_t refs;
    uint8_t op;           /* enum ag_op */
    uint16_t flags;       /* AG_FLAG_* (40 bytes in all, as with 8 bits) */
} ag_node;

enum ag_flag {
    AG_FLAG_SORTING = 1, /* entered by the topological sort under way */
    AG_FLAG_STRINGS = 2, /* has a label or a custom op text (labels.c) */
    AG_FLAG_ORDER = 4,   /* is the root of a cached topological order (sweep.c) */
    AG_FLAG_PYSTATE = 8, /* its Value carries Python state: pinned while others hold the node */
    AG_FLAG_PINNED = 16, /* the node holds a reference to its Value (py) */
    AG_FLAG_PYRULE = 32, /* its Value's dict may hold a Python _backward (set, or the dict
                            was handed out by vars()): the sweep asks (run_rule) and runs
                            that in the op's place, or the op's own rule when there is none */
    AG_FLAG_OWNED = 64,  /* walked by a backward() or grad() that runs Python rules, until it
                            ends: invariant 10 (sweep.c) */
    AG_FLAG_CHOSEN = 128, /* made by grad(create_graph=True) from a derivative that picked a
                             branch by the values at the time (pow at 0): replay refuses it */
    AG_FLAG_REACHES_STATE = 256 /* its Value's state may refer to objects, or it was made
                                   over a node that is so: its Value may hold a pin in a
                                   cycle, and the GC tracks it (value.c, invariant 6) */
};

/* Ids held once for many dot nodes (nn.c). A layer run over a batch makes, for each
 * sample, one dot node per neuron: the nodes of a neuron share its weights and bias
 * (its weight row), and the nodes of a sample share the layer's inputs (an input row).
 * Such a node holds its two rows, one reference each, instead of a reference to every
 * input (invariant 2), so making and freeing it touches two rows, not 2 nin + 1 nodes;
 * and the sort looks at a row's nodes once per sort, not once per node (sweep.c). */
typedef struct ag_row {
    uint64_t sorted_in; /* the number of the sort that found every id here marked */
    ag_node **nodes;    /* the same nodes by address (nodes never move), for the loops
                           that make and sweep a row's dot nodes; after ids[], in the
                           same block */
    uint32_t refs;      /* its maker while it makes nodes (LayerWeights, ag_layer), and
                           each dot node using it */
    uint32_t n;
    ag_id ids[];
} ag_row;

/* The bytes of a row of n ids: the struct, the ids, then (aligned) their addresses. */
static inline size_t ag_row_bytes(size_t n)
{
    size_t ids_end = sizeof(ag_row) + n * sizeof(ag_id);
    return (ids_end + sizeof(void *) - 1) / sizeof(void *) * sizeof(void *) + n * sizeof(void *);
}

/* A dot node's rows: its inputs are w0, x0, w1, x1, ..., bias; the weights and the
 * bias (even positions) are weights->ids, the x's (odd positions) xs->ids. */
typedef struct ag_dot_rows {
    ag_row *weights;
    ag_row *xs;
} ag_dot_rows;

/* An n-ary node's inputs, in a slot of ag_the_arena.lists that node->in[0] names. The
 * slot can move when the array is compacted (arena.c, at the end of a free loop, when
 * it is mostly empty): read a list through its node every time, and hold no slot
 * number or pointer into the array across anything that may free nodes. The ids,
 * local and rows it points at never move. */
typedef struct ag_input_list {
    ag_id *ids;            /* n ids; NULL when the slot is unused */
    union {
        double *local;     /* AG_LOCAL: n local derivatives */
        ag_dot_rows rows;  /* AG_DOT made by a layer; otherwise both NULL */
    };
    uint32_t n;            /* when unused: the next free slot */
    ag_id owner;           /* the node whose list this is, to move it (in the padding) */
} ag_input_list;

typedef struct ag_arena {
    ag_node **blocks;      /* NULL where a block went back to the system */
    size_t n_blocks, blocks_cap, present_blocks;
    uint16_t *block_live;  /* live nodes in each block (blocks_cap of them) */
    size_t empty_blocks;   /* present blocks with no live node, block 0 included */
    uint32_t *released;    /* indices of blocks given back, reused first */
    size_t n_released;
    ag_id free_head;       /* 0: empty */
    size_t live;
    size_t node_limit;     /* 0: none */
    size_t give_back_at;   /* free slots past which empty blocks are given back */
    ag_id dying;           /* the free worklist (invariant 2), threaded through next_dying */
    int releasing;         /* the worklist is being run: ag_release only adds to it */
    ag_id freeing;         /* the node the loop is taking apart (off the worklist, not yet
                              free), or 0; for a fork child to finish (arena.c) */
    uint32_t freeing_next; /* the next of its held ids to release */
    ag_input_list *lists;  /* n-ary inputs */
    size_t n_lists, lists_cap, lists_live;
    uint32_t free_list_head; /* 0: empty (list 0 is never used) */
    size_t list_bytes;
} ag_arena;

extern ag_arena ag_the_arena;

/* What a replay tape's copy of its nodes cannot see (tape.c), counted: data written to
 * an existing node other than by a tape's forward (ag_note_data_edit), and a Python rule
 * given to a node (ag_note_rule_edit). Every such write calls its function, so a tape
 * that finds both counts where it last left them knows that its values are still every
 * node's data and that no node under it has a Python rule. */
extern uint64_t ag_data_edits, ag_rule_edits;
static inline void ag_note_data_edit(void) { ag_data_edits++; }
static inline void ag_note_rule_edit(void) { ag_rule_edits++; }

/* Per-thread error state, set by failing calls. */
void ag_fail(int status, ag_id node);
void ag_fail_value(double value);  /* the nan or inf an op produced, for AG_EANOMALY */
/* Gives the calling thread its block of the core's thread-locals now: the C library
 * makes it on a thread's first use of one, and ends the process when it cannot (no
 * status to return). ag_python_init calls it for the importing thread, so that no call
 * into the core from that thread meets it with memory short. */
void ag_thread_locals_ready(void);

static inline ag_node *ag_node_at(ag_id id)
{
    return &ag_the_arena.blocks[id >> AG_BLOCK_SHIFT][id & (AG_BLOCK_NODES - 1)];
}

/* The node `id` names if it is a live node, else NULL: for entry points that take ids
 * from outside (cffi), which must never trust one (invariant 7). */
ag_node *ag_node_checked(ag_id id);

/* What the Python layer (value.c) does when the arena needs Python: taking and dropping
 * the reference a node holds on its Value (invariant 8), and running a Python-written
 * _backward. The C core never includes Python.h; these are set once at import. */
typedef struct ag_python_hooks {
    /* the node has Python state and just got a holder besides its Value: one more
     * reference to the Value (invariant 8) */
    void (*pin)(ag_node *node);
    /* the pinned node just lost a holder: one reference to the Value fewer; when only
     * the Value still holds the node, the pin goes, which may run any Python code (the
     * Value may die); before that, none */
    void (*unpin)(ag_node *node);
    /* AG_OK, AG_EPYTHON with the exception set, or AG_ENORULE when the Value's dict
     * holds no _backward after all (the sweep then runs the op's own rule) */
    int (*run_rule)(ag_node *node);
    int (*has_rule)(ag_node *node); /* 1 if it holds one, 0 if not; runs no Python code */
} ag_python_hooks;

#define AG_ENORULE (-1) /* run_rule: no Python rule there; not a status Python sees */

extern ag_python_hooks ag_hooks;

/* Takes a reference to a node that is alive. A node whose Value carries Python state
 * keeps that Value alive, with one reference for each holder besides the Value. */
static inline void ag_retain(ag_id id)
{
    ag_node *node = ag_node_at(id);
    node->refs++;
    if (node->flags & AG_FLAG_PYSTATE)
        ag_hooks.pin(node);
}

/* Frees a node whose last reference just went, and whatever dies with it (arena.c). */
void ag_free_dead(ag_id id);

/* Drops a reference, freeing what dies. May run Python code through ag_hooks.unpin:
 * a pinned node that only its Value still holds stops keeping the Value alive. */
static inline void ag_release(ag_id id)
{
    ag_node *node = ag_node_at(id);
    if (--node->refs == 0)
        ag_free_dead(id);
    else if (node->flags & AG_FLAG_PINNED)
        ag_hooks.unpin(node);
}

int ag_add_block(void); /* arena.c: more free nodes, AG_OK or AG_ENOMEM */

/* A new node with refs = 1 and the given op; its inputs are set by the caller,
 * which must retain them. NULL (and *id = 0) when memory runs out. */
AG_INLINE ag_node *ag_alloc_node(int op, double data, ag_id *id)
{
    ag_arena *ar = &ag_the_arena;
    if ((ar->node_limit && ar->live >= ar->node_limit) || (!ar->free_head && ag_add_block() != AG_OK)) {
        ag_fail(AG_ENOMEM, 0);
        *id = 0;
        return NULL;
    }
    *id = ar->free_head;
    ag_node *node = ag_node_at(*id);
    ar->free_head = node->in[0];
    if (ar->block_live[*id >> AG_BLOCK_SHIFT]++ == 0) /* counted so empty blocks can go back */
        ar->empty_blocks--;
    /* Nodes are made in bursts from a free list that mostly ascends (tidy_free_nodes):
     * ask for the next free node, and for the slot a few ahead in memory. */
    if (ar->free_head)
        AG_PREFETCH(ag_node_at(ar->free_head));
    if ((*id & (AG_BLOCK_NODES - 1)) < AG_BLOCK_NODES - 8)
        AG_PREFETCH(node + 8);
    ar->live++;
    node->data = data;
    node->grad = 0.0;
    node->py = NULL;
    node->in[0] = node->in[1] = 0;
    node->refs = 1;
    node->op = (uint8_t)op;
    node->flags = 0;
    return node;
}

/* Inputs of any node, as a pointer and a count (valid until the arena changes). */
static inline const ag_id *ag_inputs_of(const ag_node *node, size_t *n)
{
    if (ag_op_is_nary(node->op)) {
        const ag_input_list *list = &ag_the_arena.lists[node->in[0]];
        *n = list->n;
        return list->ids;
    }
    *n = (size_t)ag_arity(node->op);
    return node->in;
}

/* The rows a dot node holds its inputs through, or NULL when it holds them itself. */
static inline const ag_dot_rows *ag_rows_of(const ag_node *node)
{
    if (node->op != AG_DOT)
        return NULL;
    const ag_dot_rows *rows = &ag_the_arena.lists[node->in[0]].rows;
    return rows->weights ? rows : NULL;
}

/* AG_LOCAL's numbers, one per input. */
static inline const double *ag_local_grads_of(const ag_node *node)
{
    return ag_the_arena.lists[node->in[0]].local;
}

/* Stores an n-ary input list (and AG_LOCAL's local derivatives, else NULL) on the fresh
 * node `id` and retains the inputs. AG_ENOMEM on failure, with nothing taken. */
int ag_attach_list(ag_id id, const ag_id *ids, size_t n, const double *local);
/* The same for a dot node over rows: its list is their interleaving (as ag_dot_rows
 * says), and it retains the two rows, not the ids. */
int ag_attach_rows_list(ag_id id, const ag_dot_rows *rows);

/* A row of n ids and then `last` (unless it is 0), each retained, with one reference
 * for the caller; NULL when memory runs out. Releasing its last reference releases
 * the ids (which may run Python, as ag_release). */
ag_row *ag_row_new(const ag_id *ids, size_t n, ag_id last);
void ag_row_release(ag_row *row);

/* What the modules above the arena keep beside it (labels.c: labels and op text;
 * sweep.c: cached orders, scratch and running sweeps; tangents.c: scratch; pins.c: a
 * count of the nodes flagged AG_FLAG_REACHES_STATE), registered
 * once at start-up (python.c), so that the arena names none of them: it tells each when
 * a node carrying its flag dies, asks each for the bytes it holds, has each fit its
 * memory when blocks go back, and has each repair itself in the child of a fork. */
typedef struct ag_side_table {
    uint16_t flag;             /* the AG_FLAG_* of nodes it holds something for; 0: none */
    void (*forget)(ag_id id);  /* a node with that flag died */
    size_t (*bytes)(void);
    void (*fit)(size_t live);  /* blocks went back: memory sized for far more nodes goes */
    void (*after_fork)(void);  /* in a fork's child, before the arena's own repair */
} ag_side_table;

/* AG_OK, or AG_EINVALID when AG_SIDE_TABLES are registered already. */
#define AG_SIDE_TABLES 4
int ag_register_side_table(const ag_side_table *table);

#endif
