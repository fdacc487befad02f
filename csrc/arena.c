/* Node storage and lifetime: blocks, the free list, n-ary input lists, reference
 * counting, the iterative release of dead subgraphs, giving memory back, and what a
 * fork child must finish of a free loop another thread was running.
 * Not here: what ops compute (ops.h, nodes.c) or graph sweeps (sweep.c). */
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "ops.h"

#if defined(_WIN32)
#include <windows.h>
#else
#include <pthread.h>
#include <sys/mman.h>
#endif

static void watch_forks(void);

ag_arena ag_the_arena = {.give_back_at = AG_RESERVE_NODES}; /* id 0 and list 0 never used */
uint64_t ag_data_edits, ag_rule_edits;
ag_python_hooks ag_hooks;

/* ---- side tables (arena.h): what the modules above keep per node ---- */

static const ag_side_table *side_tables[AG_SIDE_TABLES];
static size_t n_side_tables;
static uint16_t side_flags; /* every registered table's flag: one test per dying node */

int ag_register_side_table(const ag_side_table *table)
{
    for (size_t i = 0; i < n_side_tables; i++)
        if (side_tables[i] == table)
            return AG_OK; /* once is enough */
    if (n_side_tables == AG_SIDE_TABLES)
        return AG_EINVALID;
    side_tables[n_side_tables++] = table;
    side_flags |= table->flag;
    return AG_OK;
}

static void forget_in_side_tables(ag_id id, uint16_t flags)
{
    for (size_t i = 0; i < n_side_tables; i++)
        if ((flags & side_tables[i]->flag) && side_tables[i]->forget)
            side_tables[i]->forget(id);
}

static size_t side_table_bytes(void)
{
    size_t total = 0;
    for (size_t i = 0; i < n_side_tables; i++)
        if (side_tables[i]->bytes)
            total += side_tables[i]->bytes();
    return total;
}

static _Thread_local int last_error;
static _Thread_local ag_id error_node;
static _Thread_local double error_value;

void ag_thread_locals_ready(void) { last_error = AG_OK; }

void ag_fail(int status, ag_id node)
{
    last_error = status;
    error_node = node;
}

void ag_fail_value(double value) { error_value = value; }

int ag_last_error(void) { return last_error; }
ag_id ag_error_node(void) { return error_node; }
double ag_error_value(void) { return error_value; }

/* ---- blocks ----
 * A block comes straight from the system (mmap, VirtualAlloc), so giving it back
 * really returns its memory: malloc would keep freed blocks in its own pools. */

#define AG_BLOCK_BYTES (AG_BLOCK_NODES * sizeof(ag_node))

static ag_node *block_map(void)
{
#if defined(_WIN32)
    return VirtualAlloc(NULL, AG_BLOCK_BYTES, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
#else
    void *p = mmap(NULL, AG_BLOCK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#endif
}

static void block_unmap(ag_node *block)
{
#if defined(_WIN32)
    VirtualFree(block, 0, MEM_RELEASE);
#else
    munmap(block, AG_BLOCK_BYTES);
#endif
}

/* Puts the ids of block b on the free list, so that they come out in ascending order. */
static void thread_free_ids(ag_arena *ar, size_t b)
{
    ag_node *block = ar->blocks[b];
    size_t first = b == 0 ? 1 : 0; /* id 0 is never a node */
    for (size_t i = AG_BLOCK_NODES; i-- > first;) {
        block[i].op = AG_FREE;
        block[i].flags = 0;
        block[i].in[0] = ar->free_head;
        ar->free_head = (ag_id)((b << AG_BLOCK_SHIFT) | i);
    }
}

/* One more block of free nodes: a released index if there is one, else a new one. */
int ag_add_block(void)
{
    ag_arena *ar = &ag_the_arena;
    size_t b;
    if (ar->n_released) {
        b = ar->released[ar->n_released - 1];
    } else {
        if ((ar->n_blocks + 1) * AG_BLOCK_NODES > AG_MAX_NODES)
            return AG_ENOMEM;
        if (ar->n_blocks == ar->blocks_cap) {
            size_t cap = ar->blocks_cap ? 2 * ar->blocks_cap : 16;
            ag_node **grown = realloc(ar->blocks, cap * sizeof *grown);
            uint32_t *released = realloc(ar->released, cap * sizeof *released);
            uint16_t *block_live = realloc(ar->block_live, cap * sizeof *block_live);
            if (grown)
                ar->blocks = grown;
            if (released)
                ar->released = released;
            if (block_live)
                ar->block_live = block_live;
            if (!grown || !released || !block_live)
                return AG_ENOMEM;
            ar->blocks_cap = cap;
        }
        b = ar->n_blocks;
    }
    ag_node *block = block_map();
    if (!block)
        return AG_ENOMEM;
    if (ar->n_released)
        ar->n_released--;
    else
        ar->n_blocks++;
    ar->blocks[b] = block;
    ar->present_blocks++;
    ar->block_live[b] = 0;
    ar->empty_blocks++;
    thread_free_ids(ar, b);
    watch_forks(); /* nothing to repair in a fork child before the first node */
    return AG_OK;
}

ag_node *ag_node_checked(ag_id id)
{
    const ag_arena *ar = &ag_the_arena;
    size_t b = id >> AG_BLOCK_SHIFT;
    if (id == 0 || b >= ar->n_blocks || !ar->blocks[b])
        return NULL;
    ag_node *node = ag_node_at(id);
    return node->op == AG_FREE ? NULL : node;
}

/* ---- n-ary input lists ----
 * A layer's neurons all have input lists of one length, made and freed by the thousand
 * every training step, so freed id arrays of up to AG_POOLED_LENGTH ids wait in a pool
 * per length (a list threaded through the arrays themselves) instead of going back to
 * malloc; the pool holds at most AG_POOL_IDS ids in all. */

#define AG_POOLED_LENGTH 256
#define AG_POOL_IDS ((size_t)1 << 20)

static void *pool[AG_POOLED_LENGTH + 1];
static size_t pooled_ids;

static ag_id *ids_alloc(size_t n)
{
    if (n >= 2 && n <= AG_POOLED_LENGTH && pool[n]) {
        void *p = pool[n];
        memcpy(&pool[n], p, sizeof(void *)); /* the next array of this length */
        pooled_ids -= n;
        return p;
    }
    return malloc(n >= 2 ? n * sizeof(ag_id) : 2 * sizeof(ag_id)); /* room for the link */
}

static void ids_free(ag_id *ids, size_t n)
{
    if (n >= 2 && n <= AG_POOLED_LENGTH && pooled_ids + n <= AG_POOL_IDS) {
        memcpy(ids, &pool[n], sizeof(void *));
        pool[n] = ids;
        pooled_ids += n;
        return;
    }
    free(ids);
}

size_t ag_pool_bytes(void) { return pooled_ids * sizeof(ag_id); }

/* A free slot in the lists array, or 0 when it cannot grow. */
static uint32_t take_list_slot(ag_arena *ar)
{
    uint32_t slot = ar->free_list_head;
    if (slot) {
        ar->free_list_head = ar->lists[slot].n;
        return slot;
    }
    if (ar->n_lists == 0)
        ar->n_lists = 1;
    if (ar->n_lists >= ar->lists_cap) { /* >=: the first list makes n_lists 1 while lists_cap is 0 */
        size_t cap = ar->lists_cap ? 2 * ar->lists_cap : 64;
        ag_input_list *grown = realloc(ar->lists, cap * sizeof *grown);
        if (!grown)
            return 0;
        ar->lists = grown;
        ar->lists_cap = cap;
    }
    return (uint32_t)ar->n_lists++;
}

/* Stores node id's input list of n ids: a copy of ids, or (ids NULL) left for the caller
 * to fill; local or rows are set by the caller. Retains nothing. AG_ENOMEM with nothing
 * stored. */
static int store_list(ag_id id, const ag_id *ids, size_t n, ag_input_list **stored)
{
    ag_arena *ar = &ag_the_arena;
    if (n > UINT32_MAX)
        return AG_EINVALID;
    ag_id *ids_copy = ids_alloc(n);
    uint32_t slot = ids_copy ? take_list_slot(ar) : 0;
    if (!slot) {
        if (ids_copy)
            ids_free(ids_copy, n);
        return AG_ENOMEM;
    }
    if (n && ids)
        memcpy(ids_copy, ids, n * sizeof *ids_copy);
    ar->lists[slot] = (ag_input_list){.ids = ids_copy, .rows = {NULL, NULL}, .n = (uint32_t)n, .owner = id};
    ar->lists_live++;
    ar->list_bytes += n * sizeof *ids_copy;
    ag_node *node = ag_node_at(id);
    node->in[0] = slot;
    node->in[1] = (ag_id)n;
    *stored = &ar->lists[slot];
    return AG_OK;
}

int ag_attach_list(ag_id id, const ag_id *ids, size_t n, const double *local)
{
    double *local_copy = local ? malloc(n ? n * sizeof *local_copy : 1) : NULL;
    if (local && !local_copy)
        return AG_ENOMEM;
    ag_input_list *list;
    int status = store_list(id, ids, n, &list);
    if (status != AG_OK) {
        free(local_copy);
        return status;
    }
    if (local) {
        if (n)
            memcpy(local_copy, local, n * sizeof *local_copy);
        list->local = local_copy;
        ag_the_arena.list_bytes += n * sizeof *local_copy;
    }
    for (size_t i = 0; i < n; i++)
        ag_retain(ids[i]);
    return AG_OK;
}

/* rows by address: a struct of two pointers passed by value went through the stack as
 * two stores and one wide load, which the processor cannot forward (a stall per call). */
int ag_attach_rows_list(ag_id id, const ag_dot_rows *rows)
{
    ag_row *weights = rows->weights, *xs = rows->xs;
    size_t pairs = xs->n, bias = weights->n > pairs;
    ag_input_list *list;
    int status = store_list(id, NULL, 2 * pairs + bias, &list);
    if (status != AG_OK)
        return status;
    ag_id *ids = list->ids; /* the interleaving: w0, x0, w1, x1, ..., bias */
    for (size_t k = 0; k < pairs; k++) {
        ids[2 * k] = weights->ids[k];
        ids[2 * k + 1] = xs->ids[k];
    }
    if (bias)
        ids[2 * pairs] = weights->ids[pairs];
    list->rows.weights = weights;
    list->rows.xs = xs;
    weights->refs++;
    xs->refs++;
    return AG_OK;
}

/* ---- rows ---- */

ag_row *ag_row_new(const ag_id *ids, size_t n, ag_id last)
{
    size_t total = n + (last != 0);
    if (total > UINT32_MAX)
        return NULL;
    ag_row *row = malloc(ag_row_bytes(total));
    if (!row)
        return NULL;
    row->sorted_in = 0;
    row->refs = 1;
    row->n = (uint32_t)total;
    row->nodes = (ag_node **)((char *)row + ag_row_bytes(total) - total * sizeof(ag_node *));
    memcpy(row->ids, ids, n * sizeof(ag_id));
    if (last)
        row->ids[n] = last;
    for (size_t i = 0; i < total; i++) {
        ag_retain(row->ids[i]);
        row->nodes[i] = ag_node_at(row->ids[i]);
    }
    ag_the_arena.list_bytes += ag_row_bytes(total);
    return row;
}

void ag_row_release(ag_row *row)
{
    if (--row->refs)
        return;
    ag_the_arena.list_bytes -= ag_row_bytes(row->n);
    /* inside the free worklist these only join it (ag_free_dead) */
    for (uint32_t i = 0; i < row->n; i++)
        ag_release(row->ids[i]);
    free(row);
}

/* Frees node's input list; the row it holds, if any, is the caller's to release. */
static void detach_list(ag_node *node)
{
    ag_arena *ar = &ag_the_arena;
    ag_input_list *list = &ar->lists[node->in[0]];
    ar->list_bytes -= list->n * sizeof *list->ids;
    ids_free(list->ids, list->n);
    if (node->op == AG_LOCAL) {
        ar->list_bytes -= list->n * sizeof *list->local;
        free(list->local);
    }
    *list = (ag_input_list){.ids = NULL, .rows = {NULL, NULL}, .n = ar->free_list_head};
    ar->free_list_head = node->in[0];
    ar->lists_live--;
}

/* The lists array never shrank: 4M hand-made nodes left 128 MiB of empty slots behind
 * them. So once fewer than an eighth of its slots are used (and it is bigger than
 * AG_LISTS_KEEP), the used ones move down into the lowest slots (their nodes' in[0]
 * follow them: arena.h says to read a list through its node) and the array shrinks to
 * four times what is used. It grows again only when full: a training loop's lists
 * move between an eighth and all of the array without reallocating. Called at the end
 * of a free loop, when no code holds a slot. Cannot fail: if realloc will not shrink,
 * the bigger array stays. */
#define AG_LISTS_KEEP ((size_t)1 << 15) /* 1 MiB of slots */

static void fit_lists(ag_arena *ar)
{
    if (ar->lists_cap <= AG_LISTS_KEEP || 8 * (ar->lists_live + 1) > ar->lists_cap)
        return;
    size_t lo = 1, hi = ar->n_lists - 1; /* used below lo, unused above hi */
    while (lo < hi) {
        if (ar->lists[lo].ids) {
            lo++;
        } else if (!ar->lists[hi].ids) {
            hi--;
        } else {
            ar->lists[lo] = ar->lists[hi];
            ag_node_at(ar->lists[lo].owner)->in[0] = (ag_id)lo;
            ar->lists[hi].ids = NULL;
            lo++;
            hi--;
        }
    }
    ar->n_lists = ar->lists_live + 1; /* slots 1 .. lists_live are the used ones */
    ar->free_list_head = 0;
    size_t cap = AG_LISTS_KEEP;
    while (cap < 4 * (ar->lists_live + 1))
        cap *= 2;
    ag_input_list *fitted = realloc(ar->lists, cap * sizeof *fitted);
    if (fitted) {
        ar->lists = fitted;
        ar->lists_cap = cap;
    }
}

/* ---- release ---- */

static void tidy_free_nodes(ag_arena *ar, int give_back);

/* Empty blocks beyond what the reserve keeps (block 0, never given back, counted out). */
AG_INLINE size_t surplus_empty_blocks(const ag_arena *ar)
{
    size_t kept = AG_RESERVE_NODES / AG_BLOCK_NODES + 1;
    return ar->empty_blocks > kept ? ar->empty_blocks - kept : 0;
}

AG_INLINE size_t free_slots(const ag_arena *ar)
{
    size_t slots = ar->present_blocks * AG_BLOCK_NODES - (ar->n_blocks && ar->blocks[0] ? 1 : 0);
    return slots - ar->live;
}

/* After `freed` nodes went: blocks to give back, or a big free to put in order
 * (tidy_free_nodes, below, says when and why). Inline: it runs for every free. */
AG_INLINE void tidy_if_due(ag_arena *ar, size_t freed)
{
    size_t surplus = surplus_empty_blocks(ar);
    int give_back = free_slots(ar) > ar->give_back_at || (surplus && 8 * surplus >= ar->present_blocks);
    if (give_back || (freed >= AG_BLOCK_NODES && 4 * freed >= ar->present_blocks * AG_BLOCK_NODES))
        tidy_free_nodes(ar, give_back);
}

/* The thread whose free loop called Python last (unpinning). A fork can only happen
 * while some thread's loop is in that Python (the loop holds the GIL otherwise), so in a
 * fork child this says whose loop it was: the forking thread's goes on when its Python
 * returns; another thread's is gone (ag_after_fork_in_child). Written only before that
 * Python: reading a thread-local costs a call, too much for every node freed. */
static const void *loop_thread;

static const void *this_thread(void)
{
    static _Thread_local char marker; /* its address tells threads apart */
    return &marker;
}

/* The ids a dying node holds references to, as up to two runs: its inputs, or for a
 * dot node holding rows, the ids of each of its rows that died with it (refs 0: its
 * reference to each was dropped first). The runs point into malloc'd arrays that stay
 * put until the node is finished, whatever Python code runs meanwhile. */
AG_INLINE size_t held_runs(const ag_node *node, const ag_id *runs[2], size_t lengths[2])
{
    const ag_dot_rows *rows = ag_rows_of(node);
    if (!rows) {
        runs[0] = ag_inputs_of(node, &lengths[0]);
        return 1;
    }
    size_t n_runs = 0;
    ag_row *parts[2] = {rows->weights, rows->xs};
    for (int i = 0; i < 2; i++)
        if (parts[i]->refs == 0) {
            runs[n_runs] = parts[i]->ids;
            lengths[n_runs++] = parts[i]->n;
        }
    return n_runs;
}

/* Takes node `id` (refs 0, off the worklist) apart, in three steps: start (no Python),
 * release what it holds (Python may run between any two ids), finish (no Python). The
 * arena records which node and how far (freeing, freeing_next), so a fork child whose
 * loop ran in another thread can finish the node from where that thread was. */
AG_INLINE void start_taking_apart(ag_arena *ar, ag_id id, ag_node *node)
{
    ar->freeing = id;
    ar->freeing_next = 0;
    const ag_dot_rows *rows = ag_rows_of(node);
    if (rows) {
        rows->weights->refs--;
        rows->xs->refs--;
    }
}

/* Drops the references a dying node holds: a node that dies joins the worklist; a
 * pinned one that only its Value still holds stops keeping the Value (Python code).
 * Only there can a fork cut the loop, so only there is the progress recorded
 * (freeing_next: the ids released so far, that one included); the loop itself keeps
 * its count in a register. */
AG_INLINE void release_held(ag_arena *ar, ag_node *node)
{
    const ag_id *runs[2];
    size_t lengths[2], n_runs = held_runs(node, runs, lengths);
    size_t skip = ar->freeing_next, released = 0; /* skip: released before a fork cut the loop */
    for (size_t r = 0; r < n_runs; r++) {
        size_t first = skip < lengths[r] ? skip : lengths[r];
        skip -= first;
        released += first;
        for (size_t i = first; i < lengths[r]; i++) {
            ag_id id = runs[r][i];
            ag_node *input = ag_node_at(id);
            released++;
            if (--input->refs == 0) {
                input->next_dying = ar->dying;
                ar->dying = id;
            } else if (input->flags & AG_FLAG_PINNED) {
                ar->freeing_next = (uint32_t)released; /* a fork in the Python below resumes after it */
                loop_thread = this_thread();
                ag_hooks.unpin(input); /* may run Python code, even ag_release: see run_worklist */
            }
        }
    }
}

static void free_if_dead(ag_row *row)
{
    if (row->refs)
        return;
    ag_the_arena.list_bytes -= ag_row_bytes(row->n);
    free(row);
}

/* The end of taking a node apart, once what it held is released: it leaves its side
 * tables and joins the free list. All a node with its inputs in itself needs. */
AG_INLINE void finish_simple(ag_arena *ar, ag_id id, ag_node *node)
{
    if (node->flags & side_flags)
        forget_in_side_tables(id, node->flags);
    node->op = AG_FREE;
    node->flags = 0;
    node->in[0] = ar->free_head;
    ar->free_head = id;
    ar->live--;
    if (--ar->block_live[id >> AG_BLOCK_SHIFT] == 0)
        ar->empty_blocks++;
    ar->freeing = 0;
}

/* An n-ary node also frees its dead rows and its input list first. */
AG_INLINE void finish_taking_apart(ag_arena *ar, ag_id id, ag_node *node)
{
    const ag_dot_rows *held = ag_rows_of(node);
    if (held) {
        ag_dot_rows rows = *held;
        free_if_dead(rows.weights);
        free_if_dead(rows.xs);
    }
    if (ag_op_is_nary(node->op))
        detach_list(node);
    finish_simple(ar, id, node);
}

/* Frees the nodes on the worklist and whatever dies with them. A chain of 10^7 nodes
 * dies here in one loop: the dying nodes wait in a list threaded through their (no
 * longer needed) data field, so freeing needs no memory and cannot fail. Unpinning a
 * Value runs Python code, which may release more nodes: while the loop runs, those
 * join the worklist (`releasing`), so nothing recurses. The node being freed is off
 * the worklist and not yet on the free list, so that code never sees it. */
static void run_worklist(ag_arena *ar)
{
    size_t freed = 0;
    ar->releasing = 1;
    if (ar->freeing) { /* only in a fork child: what another thread's loop left half done */
        ag_node *node = ag_node_at(ar->freeing);
        release_held(ar, node);
        finish_taking_apart(ar, ar->freeing, node);
        freed++;
    }
    while (ar->dying) {
        ag_id current = ar->dying;
        ag_node *node = ag_node_at(current);
        ar->dying = node->next_dying;
        if (ag_op_is_nary(node->op)) {
            start_taking_apart(ar, current, node);
            release_held(ar, node);
            finish_taking_apart(ar, current, node);
        } else { /* most nodes: up to two inputs in the node itself, no list, no rows */
            ar->freeing = current;
            ar->freeing_next = 0;
            release_held(ar, node);
            finish_simple(ar, current, node);
        }
        freed++;
    }
    ar->releasing = 0;
    tidy_if_due(ar, freed);
    fit_lists(ar);
}

/* The commonest deaths: a temporary of at most two inputs, each of which outlives it
 * unpinned (`c = a + b` rebound) or is a source with no other holder, which dies with it
 * (the constant of `a * 2.0`). No Python code can run and nothing else dies, so none of
 * the worklist's bookkeeping (re-entrancy, fork) is needed. */
AG_INLINE int dies_quietly(const ag_node *node, ag_node *inputs[2], int *n)
{
    *n = ag_arity(node->op);
    if (*n < 0)
        return 0;
    for (int k = 0; k < *n; k++) {
        inputs[k] = ag_node_at(node->in[k]);
        uint32_t uses = (k == 1 && inputs[1] == inputs[0]) ? 2 : 1; /* a + a */
        if ((inputs[k]->flags & AG_FLAG_PINNED) || (inputs[k]->refs <= uses && ag_arity(inputs[k]->op) != 0))
            return 0;
    }
    return 1;
}

void ag_free_dead(ag_id id)
{
    ag_arena *ar = &ag_the_arena;
    ag_node *node = ag_node_at(id), *inputs[2];
    int n;
    if (!ar->releasing && dies_quietly(node, inputs, &n)) {
        ag_id held[2] = {node->in[0], node->in[1]};
        size_t freed = 1;
        finish_simple(ar, id, node);
        for (int k = 0; k < n; k++)
            if (--inputs[k]->refs == 0) {
                finish_simple(ar, held[k], inputs[k]);
                freed++;
            }
        tidy_if_due(ar, freed);
        return;
    }
    node->next_dying = ar->dying;
    ar->dying = id;
    if (!ar->releasing)
        run_worklist(ar);
}

/* ---- fork ----
 * The free loop calls Python (unpinning), and Python can switch threads: another
 * thread may fork while the loop is inside that Python. The child has only the forking
 * thread, so without help it would inherit `releasing` set by a loop nobody runs, and
 * never free a node again. What the loop leaves there, and what the child does:
 *  - the worklist (`dying`): nodes with refs 0, not yet taken apart, whose inputs are
 *    still held; running the loop frees them as it would have;
 *  - the node it was taking apart (`freeing`): off the worklist, its held ids released
 *    up to `freeing_next`, the one before that mid-unpin; the loop finishes it from
 *    there, so none is released twice and none is missed;
 *  - that unpin's own Python (often a Value's dealloc) was on the lost thread's stack:
 *    what it held stays held in the child, and the Value's node with it (a leak of
 *    what only that Value kept, never a double free).
 * So the child runs the loop again in the forking thread, once CPython is ready in the
 * child (os.register_at_fork in engine.py: the loop may call Python, which a
 * pthread_atfork child handler must not). A pthread_atfork handler only notes that a
 * fork happened, so a call without a fork (or a second one) does nothing. If the
 * forking thread is the loop's own, nothing is done: it goes on when its Python
 * returns. Sweeps that were running in other threads are reset by sweep.c. */

static int forked; /* set in the child by the handler; only the forking thread is there */

#if !defined(_WIN32)
static void note_fork(void) { forked = 1; }
#endif

static void watch_forks(void)
{
#if !defined(_WIN32)
    static int watching;
    if (!watching && pthread_atfork(NULL, NULL, note_fork) == 0)
        watching = 1;
#endif
}

void ag_after_fork_in_child(void)
{
    if (!forked)
        return;
    forked = 0;
    for (size_t i = 0; i < n_side_tables; i++) /* first: a root's cached order a dead sweep */
        if (side_tables[i]->after_fork)           /* used can then go */
            side_tables[i]->after_fork();
    ag_arena *ar = &ag_the_arena;
    if (ar->releasing && loop_thread != this_thread())
        run_worklist(ar);
}

/* ---- tidying the free nodes: giving memory back, and keeping them in order ----
 * Freeing pushes nodes on the free list in the order a graph dies, scattered over
 * memory, and the next graph would be made of them in that order: every sort and sweep
 * over it would then jump around memory. So when a graph a quarter of the arena's size
 * (or more) has died, the free list is rebuilt in ascending id order: the next graph is
 * made in memory order, as a fresh one is (and its ids ascend with its creation).
 * And when more than give_back_at node slots are free, empty blocks beyond the reserve
 * go back to the system on the same pass. A pass costs time in proportion to the
 * blocks held, so it runs only after that many nodes died; give_back_at is set to at
 * least twice the free slots left after giving back, so those passes cost O(1) per node
 * freed even when scattered survivors keep every block partly used.
 * A graph that dies a Value at a time (a list of Values dropped) frees a node per loop,
 * and after a pass give_back_at could stay above what is left to free: its empty blocks
 * stayed. So blocks are counted too (block_live, empty_blocks, kept exactly by making
 * and freeing nodes), and a pass also runs when the empty blocks beyond the reserve are
 * an eighth of the blocks held or more: it gives all of those back, so its cost is at
 * most eight blocks looked at per block returned. What can stay beyond the reserve is
 * then under an eighth of the blocks held. */

static void tidy_free_nodes(ag_arena *ar, int give_back)
{
    size_t kept_free = 0;
    ar->empty_blocks = 0; /* recounted below, with each block's live nodes */
    ag_id *tail = &ar->free_head; /* the list is rebuilt by appending: it pops ascending */
    for (size_t b = 0; b < ar->n_blocks; b++) {
        ag_node *block = ar->blocks[b];
        if (!block)
            continue;
        size_t first = b == 0 ? 1 : 0, n_free = 0;
        for (size_t i = first; i < AG_BLOCK_NODES; i++)
            n_free += block[i].op == AG_FREE;
        if (give_back && b != 0 && n_free == AG_BLOCK_NODES && kept_free + n_free > AG_RESERVE_NODES) {
            block_unmap(block);
            ar->blocks[b] = NULL;
            ar->present_blocks--;
            ar->released[ar->n_released++] = (uint32_t)b;
            continue;
        }
        kept_free += n_free;
        ar->block_live[b] = (uint16_t)(AG_BLOCK_NODES - first - n_free);
        ar->empty_blocks += ar->block_live[b] == 0;
        for (size_t i = first; i < AG_BLOCK_NODES; i++) {
            if (block[i].op == AG_FREE) {
                *tail = (ag_id)((b << AG_BLOCK_SHIFT) | i);
                tail = &block[i].in[0];
            }
        }
    }
    *tail = 0;
    while (ar->n_blocks && !ar->blocks[ar->n_blocks - 1]) { /* trailing holes: forget them */
        ar->n_blocks--;
        for (size_t i = 0; i < ar->n_released; i++)
            if (ar->released[i] == ar->n_blocks) {
                ar->released[i] = ar->released[--ar->n_released];
                break;
            }
    }
    if (give_back) {
        ar->give_back_at = 2 * kept_free > AG_RESERVE_NODES ? 2 * kept_free : AG_RESERVE_NODES;
        for (size_t i = 0; i < n_side_tables; i++)
            if (side_tables[i]->fit)
                side_tables[i]->fit(ar->live);
    }
}

/* ---- introspection ---- */

size_t ag_live_nodes(void) { return ag_the_arena.live; }
size_t ag_capacity(void) { return ag_the_arena.present_blocks * AG_BLOCK_NODES; }
size_t ag_node_size(void) { return sizeof(ag_node); }
void ag_set_node_limit(size_t max_nodes) { ag_the_arena.node_limit = max_nodes; }

size_t ag_arena_bytes(void)
{
    const ag_arena *ar = &ag_the_arena;
    return ar->present_blocks * AG_BLOCK_BYTES
         + ar->blocks_cap * (sizeof(ag_node *) + sizeof(uint32_t) + sizeof(uint16_t))
         + ar->lists_cap * sizeof(ag_input_list) + ar->list_bytes + ag_pool_bytes()
         + side_table_bytes();
}
