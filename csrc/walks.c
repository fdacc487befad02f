/* Read-only walks of a graph, for pyautograd.viz and pyautograd.arena: how many nodes a
 * root reaches, the op histogram and depth (stats.c), and the part of the graph nearest
 * the root that a drawing shows, as Values. They run in C because a Python walk over a
 * million nodes takes seconds. */
#include "python.h"

static int root_of(PyObject *value, const char *what, ag_id *root)
{
    if (!ag_is_value(value)) {
        PyErr_Format(PyExc_TypeError, "%s() needs a Value, not '%.200s'", what, ag_type_name(value));
        return -1;
    }
    *root = VALUE_ID(value);
    return 0;
}

static PyObject *graph_size(PyObject *module, PyObject *value)
{
    ag_id root;
    (void)module;
    if (root_of(value, "graph_size", &root) < 0)
        return NULL;
    size_t n = ag_graph_size(root);
    return n ? PyLong_FromSize_t(n) : PyErr_NoMemory();
}

/* graph_stats(value) -> (counts by op code, depth) */
static PyObject *graph_stats(PyObject *module, PyObject *value)
{
    ag_id root;
    size_t counts[AG_OP_COUNT], depth;
    (void)module;
    if (root_of(value, "summary", &root) < 0)
        return NULL;
    if (ag_graph_stats(root, counts, &depth) != AG_OK)
        return PyErr_NoMemory();
    PyObject *tuple = PyTuple_New(AG_OP_COUNT);
    for (int op = 0; tuple && op < AG_OP_COUNT; op++) {
        PyObject *count = PyLong_FromSize_t(counts[op]);
        if (!count)
            Py_CLEAR(tuple);
        else
            PyTuple_SET_ITEM(tuple, op, count);
    }
    return tuple ? Py_BuildValue("(Nn)", tuple, (Py_ssize_t)depth) : NULL;
}

/* What the walk knows of a node it drew: where it is in the drawing, and its edge into
 * the user scanned last (a + a is one edge, drawn ×2). Open addressing by id; id 0
 * marks an empty slot. */
typedef struct drawn_node {
    ag_id id;
    size_t position, last_user, edge;
} drawn_node;

typedef struct drawn_map {
    drawn_node *slots;
    size_t capacity, count; /* capacity: a power of two */
} drawn_map;

static drawn_node *drawn_find(const drawn_map *m, ag_id id)
{
    size_t j = (id * 2654435761u) & (m->capacity - 1);
    for (; m->slots[j].id; j = (j + 1) & (m->capacity - 1))
        if (m->slots[j].id == id)
            return &m->slots[j];
    return &m->slots[j]; /* the empty slot where it would go */
}

/* The entry for id, added (position n) if new; NULL when memory runs out. */
static drawn_node *drawn_add(drawn_map *m, ag_id id, size_t n)
{
    if (2 * (m->count + 1) > m->capacity) {
        drawn_map grown = {PyMem_Calloc(m->capacity ? 2 * m->capacity : 64, sizeof(drawn_node)),
                           m->capacity ? 2 * m->capacity : 64, m->count};
        if (!grown.slots)
            return NULL;
        for (size_t i = 0; i < m->capacity; i++)
            if (m->slots[i].id)
                *drawn_find(&grown, m->slots[i].id) = m->slots[i];
        PyMem_Free(m->slots);
        *m = grown;
    }
    drawn_node *slot = drawn_find(m, id);
    if (!slot->id) {
        *slot = (drawn_node){id, n, SIZE_MAX, 0};
        m->count++;
    }
    return slot;
}

typedef struct edge { size_t input, user, times; } edge;

/* nearest(root, max_nodes) -> (values, edges, cut, left_out): the max_nodes nodes
 * nearest the root (max_nodes 0: all), breadth-first, as Values; edges as (input
 * position, user position, times); the positions of drawn nodes with inputs left out;
 * how many nodes were not drawn. A node's input slots are scanned up to max_nodes of
 * them, so a sum of a million leaves costs max_nodes steps. The walk reads ids while
 * the root, held for the call, keeps them alive, and makes Values only after it (making
 * one may run Python). */
static PyObject *nearest(PyObject *module, PyObject *args)
{
    PyObject *value;
    Py_ssize_t max_nodes;
    ag_id root;
    (void)module;
    if (!PyArg_ParseTuple(args, "On:nearest", &value, &max_nodes) || root_of(value, "to_dot", &root) < 0)
        return NULL;
    /* held for the call: Python may run in an allocation below (a GC callback), and a
     * first Value.__init__ there would move value off an unheld placeholder node */
    ag_retain(root);
    size_t cap = max_nodes > 0 ? (size_t)max_nodes : SIZE_MAX;
    size_t n = 0, nodes_cap = 64, n_edges = 0, edges_cap = 64, n_cut = 0, cut_cap = 0;
    ag_id *nodes = PyMem_Malloc(nodes_cap * sizeof *nodes);
    edge *edges = PyMem_Malloc(edges_cap * sizeof *edges);
    size_t *cut = NULL;
    drawn_map drawn = {0};
    PyObject *result = NULL, *values = NULL, *edge_list = NULL, *cut_list = NULL;
    if (!nodes || !edges || !drawn_add(&drawn, root, 0))
        goto no_memory;
    nodes[n++] = root;
    for (size_t head = 0; head < n; head++) {
        size_t slots;
        const ag_id *in = ag_inputs_of(ag_node_at(nodes[head]), &slots);
        size_t scanned = slots <= cap ? slots : cap;
        int incomplete = scanned < slots;
        for (size_t i = 0; i < scanned; i++) {
            drawn_node *child = drawn.capacity ? drawn_find(&drawn, in[i]) : NULL;
            if (!child || !child->id) {
                if (n >= cap) {
                    incomplete = 1;
                    continue;
                }
                if (n == nodes_cap) {
                    ag_id *grown = PyMem_Realloc(nodes, 2 * nodes_cap * sizeof *nodes);
                    if (!grown)
                        goto no_memory;
                    nodes = grown;
                    nodes_cap *= 2;
                }
                if (!(child = drawn_add(&drawn, in[i], n)))
                    goto no_memory;
                nodes[n++] = in[i];
            }
            if (child->last_user == head) {
                edges[child->edge].times++;
                continue;
            }
            if (n_edges == edges_cap) {
                edge *grown = PyMem_Realloc(edges, 2 * edges_cap * sizeof *edges);
                if (!grown)
                    goto no_memory;
                edges = grown;
                edges_cap *= 2;
            }
            edges[n_edges] = (edge){child->position, head, 1};
            child->last_user = head;
            child->edge = n_edges++;
        }
        if (incomplete) {
            if (n_cut == cut_cap) {
                size_t *grown = PyMem_Realloc(cut, (cut_cap ? 2 * cut_cap : 16) * sizeof *cut);
                if (!grown)
                    goto no_memory;
                cut = grown;
                cut_cap = cut_cap ? 2 * cut_cap : 16;
            }
            cut[n_cut++] = head;
        }
    }
    size_t left_out = 0;
    if (n_cut) {
        size_t total = ag_graph_size(root);
        if (!total)
            goto no_memory;
        left_out = total - n;
    }
    edge_list = PyList_New((Py_ssize_t)n_edges);
    cut_list = PyList_New((Py_ssize_t)n_cut);
    if (!edge_list || !cut_list)
        goto done;
    for (size_t i = 0; i < n_edges; i++) {
        PyObject *e = Py_BuildValue("(nnn)", (Py_ssize_t)edges[i].input, (Py_ssize_t)edges[i].user,
                                    (Py_ssize_t)edges[i].times);
        if (!e)
            goto done;
        PyList_SET_ITEM(edge_list, (Py_ssize_t)i, e);
    }
    for (size_t i = 0; i < n_cut; i++) {
        PyObject *index = PyLong_FromSize_t(cut[i]);
        if (!index)
            goto done;
        PyList_SET_ITEM(cut_list, (Py_ssize_t)i, index);
    }
    values = ag_values_of(nodes, n, 0); /* the root keeps every node here alive */
    if (!values)
        goto done;
    result = Py_BuildValue("(OOOn)", values, edge_list, cut_list, (Py_ssize_t)left_out);
    goto done;
no_memory:
    PyErr_NoMemory();
done:
    Py_XDECREF(values);
    Py_XDECREF(edge_list);
    Py_XDECREF(cut_list);
    PyMem_Free(nodes);
    PyMem_Free(edges);
    PyMem_Free(cut);
    PyMem_Free(drawn.slots);
    ag_release(root); /* may run Python: last */
    return result;
}

/* node_ops(values) -> tuple of ints: each Value's op code (pyautograd.engine.OP_NAMES
 * indexes them), plus 256 where the node is a derivative built for the values of the
 * time (AG_FLAG_CHOSEN). What `_op` cannot say: a constant from a leaf, a hand-made
 * node from an op whose symbol its text copies. For pyautograd.export. */
static PyObject *node_ops(PyObject *module, PyObject *values)
{
    (void)module;
    PyObject *seq = PySequence_Fast(values, "node_ops() needs a sequence of Values");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = PyTuple_New(n);
    for (Py_ssize_t i = 0; result && i < n; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(seq, i), *code;
        ag_id id;
        if (root_of(value, "node_ops", &id) < 0 || !(code = PyLong_FromLong(
                ag_node_at(id)->op + ((ag_node_at(id)->flags & AG_FLAG_CHOSEN) ? 256 : 0)))) {
            Py_CLEAR(result);
            break;
        }
        PyTuple_SET_ITEM(result, i, code);
    }
    Py_DECREF(seq);
    return result;
}

PyMethodDef ag_walk_functions[] = {
    {"node_ops", node_ops, METH_O, "node_ops(values) -> op codes (+256: chosen derivative)"},
    {"graph_size", graph_size, METH_O, "graph_size(value): nodes reachable from value"},
    {"graph_stats", graph_stats, METH_O, "graph_stats(value) -> (counts by op code, depth)"},
    {"nearest", nearest, METH_VARARGS, "nearest(value, max_nodes) -> (values, edges, cut, left_out)"},
    {NULL, NULL, 0, NULL},
};
