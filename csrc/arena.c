/* Node storage and lifetime: allocation, the free list, n-ary input lists,
 * reference counting and the iterative release of dead subgraphs.
 * Not here: what ops compute (ops.h, nodes.c) or graph sweeps (sweep.c). */
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "ops.h"

ag_arena ag_the_arena; /* one per process; ids 0 and list index 0 are never used */

static _Thread_local int last_error;
static _Thread_local ag_id error_node;
static _Thread_local double error_value;

void ag_fail(int status, ag_id node)
{
    last_error = status;
    error_node = node;
}

void ag_fail_value(double value) { error_value = value; }

int ag_last_error(void) { return last_error; }
ag_id ag_error_node(void) { return error_node; }
double ag_error_value(void) { return error_value; }

static int add_block(ag_arena *ar)
{
    if (ar->n_blocks == ar->blocks_cap) {
        size_t cap = ar->blocks_cap ? 2 * ar->blocks_cap : 16;
        ag_node **grown = realloc(ar->blocks, cap * sizeof *grown);
        if (!grown)
            return AG_ENOMEM;
        ar->blocks = grown;
        ar->blocks_cap = cap;
    }
    ag_node *block = malloc(AG_BLOCK_NODES * sizeof(ag_node));
    if (!block)
        return AG_ENOMEM;
    ar->blocks[ar->n_blocks++] = block;
    return AG_OK;
}

ag_node *ag_alloc_node(int op, double data, ag_id *id)
{
    ag_arena *ar = &ag_the_arena;
    *id = 0;
    if (ar->node_limit && ar->live >= ar->node_limit)
        goto out_of_memory;
    if (ar->free_head) {
        *id = ar->free_head;
        ar->free_head = ag_node_at(*id)->in[0];
    } else {
        if (ar->next_fresh == 0)
            ar->next_fresh = 1;
        if (ar->next_fresh >= AG_MAX_NODES)
            goto out_of_memory;
        if ((ar->next_fresh >> AG_BLOCK_SHIFT) >= ar->n_blocks && add_block(ar) != AG_OK)
            goto out_of_memory;
        *id = ar->next_fresh++;
    }
    ar->live++;
    ag_node *node = ag_node_at(*id);
    node->data = data;
    node->grad = 0.0;
    node->in[0] = node->in[1] = 0;
    node->refs = 1;
    node->op = (uint8_t)op;
    node->flags = 0;
    return node;

out_of_memory:
    ag_fail(AG_ENOMEM, 0);
    return NULL;
}

int ag_attach_list(ag_node *node, const ag_id *ids, size_t n)
{
    ag_arena *ar = &ag_the_arena;
    if (n > UINT32_MAX)
        return AG_EINVALID;
    ag_id *copy = malloc(n ? n * sizeof *copy : 1);
    if (!copy)
        return AG_ENOMEM;
    uint32_t slot = ar->free_list_head;
    if (slot) {
        ar->free_list_head = ar->lists[slot].n;
    } else {
        if (ar->n_lists == 0)
            ar->n_lists = 1;
        if (ar->n_lists >= ar->lists_cap) { /* >=: the first list makes n_lists 1 while lists_cap is 0 */
            size_t cap = ar->lists_cap ? 2 * ar->lists_cap : 64;
            ag_input_list *grown = realloc(ar->lists, cap * sizeof *grown);
            if (!grown) {
                free(copy);
                return AG_ENOMEM;
            }
            ar->lists = grown;
            ar->lists_cap = cap;
        }
        slot = (uint32_t)ar->n_lists++;
    }
    if (n)
        memcpy(copy, ids, n * sizeof *copy);
    ar->lists[slot].ids = copy;
    ar->lists[slot].n = (uint32_t)n;
    ar->list_bytes += n * sizeof *copy;
    node->in[0] = slot;
    node->in[1] = (ag_id)n;
    for (size_t i = 0; i < n; i++)
        ag_retain(ids[i]);
    return AG_OK;
}

static void detach_list(ag_node *node)
{
    ag_arena *ar = &ag_the_arena;
    ag_input_list *list = &ar->lists[node->in[0]];
    ar->list_bytes -= list->n * sizeof *list->ids;
    free(list->ids);
    list->ids = NULL;
    list->n = ar->free_list_head;
    ar->free_list_head = node->in[0];
}

void ag_incref(ag_id id) { ag_retain(id); }

/* Frees `id` if this was its last reference, then whatever dies with it. A chain of
 * 10^7 nodes dies here in one loop: the dying nodes wait in a list threaded through
 * their (no longer needed) data field, so freeing needs no memory and cannot fail. */
void ag_release(ag_id id)
{
    ag_node *node = ag_node_at(id);
    if (--node->refs > 0)
        return;
    ag_arena *ar = &ag_the_arena;
    node->next_dying = 0;
    ag_id dying = id;
    while (dying) {
        ag_id current = dying;
        node = ag_node_at(current);
        dying = node->next_dying;

        size_t n;
        ag_id fixed_inputs[2];
        const ag_id *inputs = ag_inputs_of(node, &n, fixed_inputs);
        for (size_t i = 0; i < n; i++) {
            ag_node *input = ag_node_at(inputs[i]);
            if (--input->refs == 0) {
                input->next_dying = dying;
                dying = inputs[i];
            }
        }
        if (ag_op_is_nary(node->op))
            detach_list(node);
        if (node->flags & AG_FLAG_STRINGS)
            ag_labels_forget(current);
        if (node->flags & AG_FLAG_ORDER)
            ag_order_cache_forget(current);
        node->op = AG_FREE;
        node->in[0] = ar->free_head;
        ar->free_head = current;
        ar->live--;
    }
}

void ag_decref(ag_id id) { ag_release(id); }

void ag_decref_many(const ag_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ag_release(ids[i]);
}

size_t ag_live_nodes(void) { return ag_the_arena.live; }
size_t ag_capacity(void) { return ag_the_arena.n_blocks * AG_BLOCK_NODES; }
size_t ag_node_size(void) { return sizeof(ag_node); }
void ag_set_node_limit(size_t max_nodes) { ag_the_arena.node_limit = max_nodes; }

size_t ag_arena_bytes(void)
{
    const ag_arena *ar = &ag_the_arena;
    return ar->n_blocks * AG_BLOCK_NODES * sizeof(ag_node) + ar->blocks_cap * sizeof(ag_node *)
         + ar->lists_cap * sizeof(ag_input_list) + ar->list_bytes
         + ag_labels_bytes() + ag_order_cache_bytes();
}
