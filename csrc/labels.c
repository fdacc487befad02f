/* Strings attached to nodes: labels (micrograd's `label`, drawn by pyautograd.viz)
 * and the `_op` text of hand-made nodes (Value(data, _children, _op)). Each is a small
 * hash map from node id to a copied string, so a label belongs to the node, not to one
 * Value, and dies with the node. Open addressing with linear probing; id 0 marks an
 * empty slot. A map grows when half full and shrinks when under an eighth full (to a
 * quarter full, never below AG_LABELS_KEEP slots), so 4M labelled nodes dying give
 * their slots back, and a training loop labelling nodes does not rehash every step. */
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "core.h"

typedef struct entry {
    ag_id id;
    char *text;
} entry;

typedef struct string_map {
    entry *slots;
    size_t capacity, count, text_bytes; /* capacity is 0 or a power of two */
} string_map;

static string_map labels, custom_ops;

static size_t home(const string_map *m, ag_id id) { return (id * 2654435761u) & (m->capacity - 1); }

static entry *find(string_map *m, ag_id id)
{
    if (!m->count)
        return NULL;
    for (size_t i = home(m, id);; i = (i + 1) & (m->capacity - 1)) {
        if (m->slots[i].id == id)
            return &m->slots[i];
        if (!m->slots[i].id)
            return NULL;
    }
}

#define AG_LABELS_KEEP ((size_t)1 << 16) /* 1 MiB of slots: 32K labels without growing */

/* Rehashes m into new_capacity slots (a power of two, above count). */
static int resize(string_map *m, size_t new_capacity)
{
    entry *old = m->slots;
    size_t old_capacity = m->capacity;
    entry *fresh = calloc(new_capacity, sizeof *fresh);
    if (!fresh)
        return AG_ENOMEM;
    m->slots = fresh;
    m->capacity = new_capacity;
    for (size_t i = 0; i < old_capacity; i++) {
        if (!old[i].id)
            continue;
        size_t j = home(m, old[i].id);
        while (m->slots[j].id)
            j = (j + 1) & (m->capacity - 1);
        m->slots[j] = old[i];
    }
    free(old);
    return AG_OK;
}

static int grow(string_map *m) { return resize(m, m->capacity ? 2 * m->capacity : 64); }

/* Called as entries go, often inside the free loop: cannot fail (a map that cannot be
 * rehashed smaller stays as it is). */
static void shrink_if_sparse(string_map *m)
{
    if (m->capacity <= AG_LABELS_KEEP || 8 * m->count >= m->capacity)
        return;
    size_t capacity = AG_LABELS_KEEP;
    while (capacity < 4 * m->count)
        capacity *= 2;
    resize(m, capacity);
}

/* Removes slot i and shifts later entries of its probe run back, so lookups never
 * stop early at a hole. */
static void remove_at(string_map *m, size_t i)
{
    size_t mask = m->capacity - 1;
    m->text_bytes -= strlen(m->slots[i].text) + 1;
    free(m->slots[i].text);
    m->slots[i] = (entry){0};
    m->count--;
    for (size_t j = (i + 1) & mask; m->slots[j].id; j = (j + 1) & mask) {
        size_t want = home(m, m->slots[j].id);
        /* slot j may move into hole i if i lies cyclically between want and j */
        if (((j - want) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j] = (entry){0};
            i = j;
        }
    }
    shrink_if_sparse(m);
}

static void forget(string_map *m, ag_id id)
{
    entry *slot = find(m, id);
    if (slot)
        remove_at(m, (size_t)(slot - m->slots));
}

/* Nothing changes when it fails: the copy is made and room found before the old text
 * goes. */
static int set(string_map *m, ag_id id, const char *text)
{
    if (!text[0]) {
        forget(m, id);
        return AG_OK;
    }
    size_t len = strlen(text) + 1;
    char *copy = malloc(len);
    if (!copy)
        return AG_ENOMEM;
    memcpy(copy, text, len);
    entry *old = find(m, id);
    if (old) { /* replaced in place */
        m->text_bytes += len - (strlen(old->text) + 1);
        free(old->text);
        old->text = copy;
        return AG_OK;
    }
    if (2 * (m->count + 1) > m->capacity && grow(m) != AG_OK) {
        free(copy);
        return AG_ENOMEM;
    }
    size_t i = home(m, id);
    while (m->slots[i].id)
        i = (i + 1) & (m->capacity - 1);
    m->slots[i] = (entry){id, copy};
    m->count++;
    ag_node_at(id)->flags |= AG_FLAG_STRINGS; /* so freeing the node looks here */
    m->text_bytes += len;
    return AG_OK;
}

static const char *get(string_map *m, ag_id id)
{
    entry *slot = find(m, id);
    return slot ? slot->text : "";
}

static size_t bytes(const string_map *m) { return m->capacity * sizeof(entry) + m->text_bytes; }

void ag_labels_forget(ag_id id)
{
    forget(&labels, id);
    forget(&custom_ops, id);
}

int ag_set_label(ag_id id, const char *label) { return set(&labels, id, label); }
const char *ag_label(ag_id id) { return get(&labels, id); }
int ag_set_custom_op(ag_id id, const char *op) { return set(&custom_ops, id, op); }
const char *ag_custom_op(ag_id id) { return get(&custom_ops, id); }

size_t ag_labels_bytes(void) { return bytes(&labels) + bytes(&custom_ops); }

const ag_side_table ag_labels_table = {AG_FLAG_STRINGS, ag_labels_forget, ag_labels_bytes, NULL, NULL};
