/* Many Values at once, held as their owner must hold them (invariant 7).
 *
 * gather() is the one way the C-API functions take a caller's iterable of Values and
 * numbers: they are first copied into a tuple of our own (a generator's temporaries
 * stay alive in it, and a list that changes while a number's __float__ runs changes
 * nothing here), numbers are converted while no node exists yet, and only then, with
 * no Python code left to run, are leaves and results made (make_ids) and handed to
 * their owner (a Value allocated beforehand, or a NodeList).
 *
 * NodeList: node ids with a reference each, what an optimizer, a layer's weights or the
 * activations between layers hold, so C can be handed the ids in one call. */
#include <string.h>
#include "python.h"

/* ---- gathering inputs ---- */

void ag_gathered_free(gathered *g)
{
    Py_CLEAR(g->items);
    PyMem_Free(g->numbers);
    PyMem_Free(g->is_number);
    g->numbers = NULL;
    g->is_number = NULL;
}

/* Copies an iterable of Values and real numbers. -1 with TypeError naming `what` if an
 * item is neither (or `values_only` and it is a number). Runs Python code (iteration,
 * __float__); makes no node. */
int ag_gather(PyObject *iterable, const char *what, int values_only, gathered *g)
{
    *g = (gathered){0};
    if (!PyTuple_Check(iterable) && !PyList_Check(iterable) && !PyObject_HasAttrString(iterable, "__iter__")) {
        PyErr_Format(PyExc_TypeError, "%s takes an iterable of Values%s, not '%.200s'", what,
                     values_only ? "" : " or real numbers", ag_type_name(iterable));
        return -1;
    }
    g->items = PySequence_Tuple(iterable);
    if (!g->items)
        return -1;
    g->n = PyTuple_GET_SIZE(g->items);
    g->numbers = PyMem_Malloc((size_t)(g->n ? g->n : 1) * sizeof *g->numbers);
    g->is_number = PyMem_Calloc((size_t)(g->n ? g->n : 1), 1);
    if (!g->numbers || !g->is_number) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < g->n; i++) {
        PyObject *item = PyTuple_GET_ITEM(g->items, i);
        if (ag_is_value(item))
            continue;
        int found = values_only ? 0 : ag_as_double(item, &g->numbers[i]);
        if (found == 0)
            PyErr_Format(PyExc_TypeError, "%s takes Values%s, not '%.200s'", what,
                         values_only ? "" : " or real numbers", ag_type_name(item));
        if (found <= 0)
            goto fail;
        g->is_number[i] = 1;
        g->n_numbers++;
    }
    return 0;
fail:
    ag_gathered_free(g);
    return -1;
}

/* ids[i] for every item: a Value's node (borrowed: items holds it) or a new leaf for a
 * number, whose reference also goes in leaves[] for the caller to drop (or keep).
 * Runs no Python code. On failure releases the leaves it made and returns the status. */
int ag_make_ids(const gathered *g, ag_id *ids, ag_id *leaves)
{
    size_t n_leaves = 0;
    for (Py_ssize_t i = 0; i < g->n; i++) {
        if (!g->is_number[i]) {
            ids[i] = VALUE_ID(PyTuple_GET_ITEM(g->items, i));
            continue;
        }
        ids[i] = ag_leaf(g->numbers[i]);
        if (!ids[i]) {
            for (size_t k = 0; k < n_leaves; k++)
                ag_release(leaves[k]);
            return ag_last_error();
        }
        leaves[n_leaves++] = ids[i];
    }
    return AG_OK;
}

void ag_release_all(const ag_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ag_release(ids[i]);
}

/* ---- NodeList: node ids with a reference each ---- */

/* An immutable list of nodes that owns a reference to each (invariant 7): what an
 * optimizer, a layer's weights or the activations between layers hold, so C can be
 * handed the ids in one call. Its buffer (read-only uint32 ids) is how cffi passes them
 * to C (ffi.from_buffer). It holds no Python objects, so it is no GC container. */
PyTypeObject *ag_node_list_type;

NodeListObject *ag_node_list_alloc(Py_ssize_t n)
{
    NodeListObject *list = PyObject_NewVar(NodeListObject, ag_node_list_type, n);
    if (list)
        memset(list->ids, 0, (size_t)n * sizeof(ag_id));
    return list;
}

static void node_list_dealloc(PyObject *self)
{
    NodeListObject *list = (NodeListObject *)self;
    PyTypeObject *type = Py_TYPE(self);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++)
        if (list->ids[i])
            ag_release(list->ids[i]); /* may run Python code (unpinned Values) */
    type->tp_free(self);
    Py_DECREF(type);
}

/* A NodeList of what `iterable` holds (numbers become leaves), or NULL. */
PyObject *ag_node_list_from(PyObject *iterable, const char *what, int values_only)
{
    if (Py_IS_TYPE(iterable, ag_node_list_type)) {
        Py_INCREF(iterable);
        return iterable;
    }
    gathered g;
    char role[64];
    snprintf(role, sizeof role, "%s()", what);
    if (ag_gather(iterable, role, values_only, &g) < 0)
        return NULL;
    NodeListObject *list = ag_node_list_alloc(g.n);
    ag_id *leaves = PyMem_Malloc((g.n_numbers ? g.n_numbers : 1) * sizeof *leaves);
    int status = AG_ENOMEM, allocated = list && leaves;
    if (allocated)
        status = ag_make_ids(&g, list->ids, leaves);
    if (status == AG_OK) { /* the leaves' references pass to the list; the Values' are new */
        for (Py_ssize_t i = 0; i < g.n; i++)
            if (!g.is_number[i])
                ag_retain(list->ids[i]);
    } else if (list) {
        memset(list->ids, 0, (size_t)g.n * sizeof(ag_id));
    }
    PyMem_Free(leaves);
    PyObject *items = g.items;
    Py_INCREF(items);
    ag_gathered_free(&g);
    if (status != AG_OK) {
        Py_XDECREF(list);
        if (!PyErr_Occurred() && !allocated) /* ours, not the core's: no failure recorded */
            PyErr_NoMemory();
        if (!PyErr_Occurred())
            ag_raise_failure(what, items);
        else
            Py_DECREF(items);
        return NULL;
    }
    Py_DECREF(items);
    return (PyObject *)list;
}

static PyObject *node_list_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *iterable;
    (void)type;
    static char *names[] = {"values", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:NodeList", names, &iterable))
        return NULL;
    return ag_node_list_from(iterable, "NodeList", 0);
}

static Py_ssize_t node_list_length(PyObject *self) { return Py_SIZE(self); }

static PyObject *node_list_item(PyObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "NodeList index out of range");
        return NULL;
    }
    return ag_value_of(((NodeListObject *)self)->ids[i]);
}

/* The Values, as a list (each node's one Value, invariant 8). */
static PyObject *node_list_values(PyObject *self, PyObject *unused)
{
    (void)unused;
    return ag_values_of(((NodeListObject *)self)->ids, (size_t)Py_SIZE(self), 0);
}

static int node_list_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, self, ((NodeListObject *)self)->ids,
                             Py_SIZE(self) * (Py_ssize_t)sizeof(ag_id), 1, flags);
}

static PyObject *node_list_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<NodeList of %zd nodes>", Py_SIZE(self));
}

PyTypeObject *ag_make_node_list_type(void)
{
    static PyMethodDef methods[] = {
        {"values", node_list_values, METH_NOARGS, "the nodes' Values, as a list"},
        {NULL, NULL, 0, NULL},
    };
    static PyType_Slot slots[] = {
        {Py_tp_new, (void *)node_list_new},
        {Py_tp_dealloc, (void *)node_list_dealloc},
        {Py_tp_methods, methods},
        {Py_tp_repr, (void *)node_list_repr},
        {Py_sq_length, (void *)node_list_length},
        {Py_sq_item, (void *)node_list_item},
        {Py_bf_getbuffer, (void *)node_list_getbuffer},
        {Py_tp_doc, "NodeList(values): nodes held by reference, for C calls over many Values."},
        {0, NULL},
    };
    static PyType_Spec spec = {"pyautograd._ag.NodeList", offsetof(NodeListObject, ids), sizeof(ag_id),
                               Py_TPFLAGS_DEFAULT, slots};
    ag_node_list_type = (PyTypeObject *)PyType_FromSpec(&spec);
    return ag_node_list_type;
}
