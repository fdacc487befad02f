/* Python functions over many Values at once: NodeList (ids with owned references),
 * the fused ops sum and dot, a whole nn Layer in one call, and read-only graph walks
 * for pyautograd.viz. The Python side of pyautograd.functional, nn, optim and viz.
 *
 * Ownership (invariant 7), the one rule every function here follows: the Values and
 * numbers a caller passes are first copied into a tuple of our own (a generator's
 * temporaries stay alive in it, and a list that changes while a number's __float__
 * runs changes nothing here), numbers are converted while no node exists yet, and
 * only then, with no Python code left to run, are leaves and results made and handed
 * to their owner (a Value allocated beforehand, or a NodeList). */
#include <string.h>
#include "python.h"

/* ---- gathering inputs ---- */

/* What a caller passed, held by us: items (a tuple) and, for each, either a Value
 * (kept alive by items) or a number to become a leaf. */
typedef struct gathered {
    PyObject *items;
    Py_ssize_t n;
    double *numbers;    /* numbers[i] when is_number[i] */
    uint8_t *is_number;
    size_t n_numbers;
} gathered;

static void gathered_free(gathered *g)
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
static int gather(PyObject *iterable, const char *what, int values_only, gathered *g)
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
    gathered_free(g);
    return -1;
}

/* ids[i] for every item: a Value's node (borrowed: items holds it) or a new leaf for a
 * number, whose reference also goes in leaves[] for the caller to drop (or keep).
 * Runs no Python code. On failure releases the leaves it made and returns the status. */
static int make_ids(const gathered *g, ag_id *ids, ag_id *leaves)
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

static void release_all(const ag_id *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ag_release(ids[i]);
}

/* ---- NodeList: node ids with a reference each ---- */

/* An immutable list of nodes that owns a reference to each (invariant 7): what an
 * optimizer, a layer's weights or the activations between layers hold, so C can be
 * handed the ids in one call. Its buffer (read-only uint32 ids) is how cffi passes them
 * to C (ffi.from_buffer). It holds no Python objects, so it is no GC container. */
typedef struct {
    PyObject_VAR_HEAD
    ag_id ids[1];
} NodeListObject;

static PyTypeObject *node_list_type;

static NodeListObject *node_list_alloc(Py_ssize_t n)
{
    NodeListObject *list = PyObject_NewVar(NodeListObject, node_list_type, n);
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
static PyObject *node_list_from(PyObject *iterable, const char *what, int values_only)
{
    if (Py_IS_TYPE(iterable, node_list_type)) {
        Py_INCREF(iterable);
        return iterable;
    }
    gathered g;
    char role[64];
    snprintf(role, sizeof role, "%s()", what);
    if (gather(iterable, role, values_only, &g) < 0)
        return NULL;
    NodeListObject *list = node_list_alloc(g.n);
    ag_id *leaves = PyMem_Malloc((g.n_numbers ? g.n_numbers : 1) * sizeof *leaves);
    int status = AG_ENOMEM;
    if (list && leaves)
        status = make_ids(&g, list->ids, leaves);
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
    gathered_free(&g);
    if (status != AG_OK) {
        Py_XDECREF(list);
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
    return node_list_from(iterable, "NodeList", 0);
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
    Py_ssize_t n = Py_SIZE(self);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *v = ag_value_of(((NodeListObject *)self)->ids[i]);
        if (!v)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
    return out;
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
    node_list_type = (PyTypeObject *)PyType_FromSpec(&spec);
    return node_list_type;
}

/* ---- fused ops: sum and dot, one node each ---- */

/* start as a node id (0: nothing to add), a Value's (borrowed) or a new leaf's (*leaf). */
static int start_id(PyObject *start, const char *what, double *number, int *is_number)
{
    *is_number = 0;
    if (ag_is_value(start))
        return 0;
    int found = ag_as_double(start, number);
    if (found == 0)
        PyErr_Format(PyExc_TypeError, "%s() start must be a Value or a real number, not '%.200s'",
                     what, ag_type_name(start));
    if (found <= 0)
        return -1;
    *is_number = *number != 0.0; /* adding 0 changes nothing: no node for it */
    return 0;
}

/* sum(values, start=0): start + values[0] + values[1] + ... as one node. */
static PyObject *fused_sum(PyObject *module, PyObject *args)
{
    PyObject *values, *start;
    (void)module;
    if (!PyArg_ParseTuple(args, "OO:sum", &values, &start))
        return NULL;
    double start_number;
    int start_is_number;
    gathered g;
    if (start_id(start, "sum", &start_number, &start_is_number) < 0 || gather(values, "sum()", 0, &g) < 0)
        return NULL;
    if (g.n == 0) { /* Python's sum([], start) is start */
        gathered_free(&g);
        if (ag_is_value(start)) {
            Py_INCREF(start);
            return start;
        }
        return PyObject_CallOneArg((PyObject *)ag_value_type, start);
    }
    size_t n = (size_t)g.n + 1;
    ag_id *ids = PyMem_Malloc(n * sizeof *ids), *leaves = PyMem_Malloc((g.n_numbers + 1) * sizeof *leaves);
    PyObject *out = ag_value_alloc(), *result = NULL;
    if (!ids || !leaves || !out) {
        PyErr_NoMemory();
        goto done;
    }
    /* no Python code from here until out owns the node */
    size_t n_leaves = g.n_numbers, first = 1;
    int status = make_ids(&g, ids + 1, leaves);
    if (status == AG_OK) {
        if (ag_is_value(start))
            ids[0] = VALUE_ID(start);
        else if (!start_is_number)
            first = 0;
        else if (!(ids[0] = leaves[n_leaves++] = ag_leaf(start_number)))
            status = ag_last_error(), n_leaves--;
    }
    ag_id node = status == AG_OK ? ag_sum(ids + 1 - first, n - 1 + first) : 0;
    if (status == AG_OK || n_leaves > g.n_numbers)
        release_all(leaves, n_leaves); /* the sum holds them now */
    result = ag_value_own(out, node);
    out = NULL;
    if (!result)
        ag_raise_failure("sum", PySequence_List(g.items));
done:
    Py_XDECREF(out);
    PyMem_Free(ids);
    PyMem_Free(leaves);
    gathered_free(&g);
    return result;
}

/* dot(ws, xs, start=0): start + ws[0]*xs[0] + ws[1]*xs[1] + ... as one node. */
static PyObject *fused_dot(PyObject *module, PyObject *args)
{
    PyObject *ws, *xs, *start;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOO:dot", &ws, &xs, &start))
        return NULL;
    double start_number;
    int start_is_number;
    gathered gw, gx;
    if (start_id(start, "dot", &start_number, &start_is_number) < 0 || gather(ws, "dot() ws", 0, &gw) < 0)
        return NULL;
    if (gather(xs, "dot() xs", 0, &gx) < 0) {
        gathered_free(&gw);
        return NULL;
    }
    PyObject *out = NULL, *result = NULL;
    ag_id *ids = NULL, *leaves = NULL;
    if (gw.n != gx.n) {
        PyErr_Format(PyExc_ValueError, "dot() needs as many ws as xs, got %zd and %zd", gw.n, gx.n);
        goto done;
    }
    size_t n = (size_t)gw.n, n_numbers = gw.n_numbers + gx.n_numbers;
    ids = PyMem_Malloc((2 * n + 1) * sizeof *ids);
    leaves = PyMem_Malloc((n_numbers + 1) * sizeof *leaves);
    out = ag_value_alloc();
    if (!ids || !leaves || !out) {
        PyErr_NoMemory();
        goto done;
    }
    /* no Python code from here until out owns the node */
    ag_id bias = 0;
    int status = make_ids(&gw, ids, leaves);
    if (status == AG_OK && (status = make_ids(&gx, ids + n, leaves + gw.n_numbers)) != AG_OK)
        release_all(leaves, gw.n_numbers);
    size_t n_leaves = status == AG_OK ? n_numbers : 0;
    if (status == AG_OK && ag_is_value(start))
        bias = VALUE_ID(start);
    else if (status == AG_OK && start_is_number && !(bias = leaves[n_leaves++] = ag_leaf(start_number)))
        status = ag_last_error(), n_leaves--;
    ag_id node = status == AG_OK ? ag_dot(ids, ids + n, n, bias) : 0;
    release_all(leaves, n_leaves); /* the dot holds them now */
    result = ag_value_own(out, node);
    out = NULL;
    if (!result) {
        /* the node's inputs in order: w0, x0, w1, x1, ..., then the bias */
        PyObject *inputs = PyList_New(0);
        for (Py_ssize_t i = 0; inputs && i < gw.n; i++)
            if (PyList_Append(inputs, PyTuple_GET_ITEM(gw.items, i)) < 0
                || PyList_Append(inputs, PyTuple_GET_ITEM(gx.items, i)) < 0)
                Py_CLEAR(inputs);
        if (inputs && (ag_is_value(start) || start_is_number) && PyList_Append(inputs, start) < 0)
            Py_CLEAR(inputs);
        ag_raise_failure("dot", inputs);
    }
done:
    Py_XDECREF(out);
    PyMem_Free(ids);
    PyMem_Free(leaves);
    gathered_free(&gw);
    gathered_free(&gx);
    return result;
}

/* ---- nn: a whole Layer in one call ---- */

/* layer(ws, bs, nonlin, xs) -> NodeList: nout = len(bs) neurons over nin = len(ws) / nout
 * inputs, the first nin of xs (a NodeList, or Values and numbers). */
static PyObject *apply_layer(PyObject *module, PyObject *args)
{
    PyObject *ws, *bs, *xs_arg;
    const char *nonlin;
    Py_ssize_t n_nonlin;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!y#O:layer", node_list_type, &ws, node_list_type, &bs, &nonlin,
                          &n_nonlin, &xs_arg))
        return NULL;
    Py_ssize_t nout = Py_SIZE(bs), nin = nout ? Py_SIZE(ws) / nout : 0;
    if (nout == 0 || nin * nout != Py_SIZE(ws) || n_nonlin != nout) {
        PyErr_SetString(PyExc_ValueError, "layer(): inconsistent weights, biases and nonlinearities");
        return NULL;
    }
    PyObject *xs = node_list_from(xs_arg, "Layer", 0);
    if (!xs)
        return NULL;
    NodeListObject *out = NULL;
    if (Py_SIZE(xs) < nin) {
        PyErr_Format(PyExc_ValueError, "Layer takes %zd inputs, got %zd", nin, Py_SIZE(xs));
    } else if ((out = node_list_alloc(nout))) {
        /* no Python code from here until out owns the nodes */
        int status = ag_layer(((NodeListObject *)ws)->ids, ((NodeListObject *)bs)->ids,
                              (const uint8_t *)nonlin, (size_t)nout, (size_t)nin,
                              ((NodeListObject *)xs)->ids, out->ids);
        if (status != AG_OK) {
            Py_CLEAR(out);
            ag_raise_failure("Layer", PyTuple_New(0));
        }
    }
    Py_DECREF(xs);
    return (PyObject *)out;
}

/* layers(plans, xs) -> list of Values: a whole MLP, each plan (ws, bs, nonlin) applied to
 * what the one before gave (the first to xs: a NodeList, or Values and numbers). The
 * activations in between are ids this call owns; only the last layer's become Values,
 * allocated before any of its nodes exists. */
static PyObject *apply_layers(PyObject *module, PyObject *args)
{
    PyObject *plans, *xs_arg;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O:layers", &PyTuple_Type, &plans, &xs_arg))
        return NULL;
    Py_ssize_t n_layers = PyTuple_GET_SIZE(plans), width = 0;
    for (Py_ssize_t l = 0; l < n_layers; l++) {
        PyObject *plan = PyTuple_GET_ITEM(plans, l);
        if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 3
            || !Py_IS_TYPE(PyTuple_GET_ITEM(plan, 0), node_list_type)
            || !Py_IS_TYPE(PyTuple_GET_ITEM(plan, 1), node_list_type)
            || !PyBytes_Check(PyTuple_GET_ITEM(plan, 2))) {
            PyErr_SetString(PyExc_TypeError, "layers(): each plan is (ws, bs, nonlin)");
            return NULL;
        }
        Py_ssize_t nout = Py_SIZE(PyTuple_GET_ITEM(plan, 1)), ws = Py_SIZE(PyTuple_GET_ITEM(plan, 0));
        Py_ssize_t nin = nout ? ws / nout : 0;
        if (nout == 0 || nin * nout != ws || PyBytes_GET_SIZE(PyTuple_GET_ITEM(plan, 2)) != nout
            || (l > 0 && nin > width)) {
            PyErr_SetString(PyExc_ValueError, "layers(): inconsistent weights, biases and widths");
            return NULL;
        }
        width = nout;
    }
    if (n_layers == 0) {
        PyErr_SetString(PyExc_ValueError, "layers(): no layers");
        return NULL;
    }
    PyObject *xs = node_list_from(xs_arg, "MLP", 0);
    if (!xs)
        return NULL;
    PyObject *first = PyTuple_GET_ITEM(plans, 0);
    Py_ssize_t first_nin = Py_SIZE(PyTuple_GET_ITEM(first, 0)) / Py_SIZE(PyTuple_GET_ITEM(first, 1));
    PyObject *out = NULL;
    ag_id *current = NULL, *next = NULL;
    if (Py_SIZE(xs) < first_nin) {
        PyErr_Format(PyExc_ValueError, "MLP takes %zd inputs, got %zd", first_nin, Py_SIZE(xs));
        goto done;
    }
    out = PyList_New(width);
    for (Py_ssize_t i = 0; out && i < width; i++) {
        PyObject *v = ag_value_alloc();
        if (!v)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
    if (!out)
        goto done;
    /* no Python code from here until the Values own the last layer's nodes */
    const ag_id *inputs = ((NodeListObject *)xs)->ids;
    Py_ssize_t current_n = 0;
    int status = AG_OK;
    for (Py_ssize_t l = 0; l < n_layers && status == AG_OK; l++) {
        PyObject *plan = PyTuple_GET_ITEM(plans, l);
        size_t nout = (size_t)Py_SIZE(PyTuple_GET_ITEM(plan, 1));
        size_t nin = (size_t)Py_SIZE(PyTuple_GET_ITEM(plan, 0)) / nout;
        next = PyMem_Malloc(nout * sizeof *next);
        status = next ? ag_layer(((NodeListObject *)PyTuple_GET_ITEM(plan, 0))->ids,
                                 ((NodeListObject *)PyTuple_GET_ITEM(plan, 1))->ids,
                                 (const uint8_t *)PyBytes_AS_STRING(PyTuple_GET_ITEM(plan, 2)),
                                 nout, nin, inputs, next)
                      : AG_ENOMEM;
        if (status != AG_OK) {
            PyMem_Free(next);
            next = NULL;
        }
        if (current) { /* the layer's nodes hold the activations they use now */
            release_all(current, (size_t)current_n);
            PyMem_Free(current);
        }
        current = next;
        current_n = (Py_ssize_t)nout;
        inputs = next;
        next = NULL;
    }
    if (status == AG_OK) {
        for (Py_ssize_t i = 0; i < width; i++) {
            VALUE_ID(PyList_GET_ITEM(out, i)) = current[i];
            ag_node_at(current[i])->py = PyList_GET_ITEM(out, i);
        }
    } else {
        Py_CLEAR(out);
        if (!PyErr_Occurred()) {
            ag_fail(status, 0);
            ag_raise_failure("MLP", PyTuple_New(0));
        }
    }
done:
    PyMem_Free(current);
    Py_DECREF(xs);
    return out;
}

/* grad(output, inputs, create_graph) -> list of Values: d output / d input for each. */
static PyObject *grad(PyObject *module, PyObject *args)
{
    PyObject *output, *inputs_arg, *result = NULL;
    int create_graph;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOp:grad", &output, &inputs_arg, &create_graph))
        return NULL;
    if (!ag_is_value(output)) {
        PyErr_Format(PyExc_TypeError, "grad() output must be a Value, not '%.200s'", ag_type_name(output));
        return NULL;
    }
    gathered g;
    if (gather(inputs_arg, "grad() inputs", 1, &g) < 0)
        return NULL;
    size_t n = (size_t)g.n;
    ag_id *ids = PyMem_Malloc((n ? n : 1) * sizeof *ids), *out = PyMem_Malloc((n ? n : 1) * sizeof *out);
    PyObject *values = PyList_New(g.n); /* the results' Values, made before their nodes */
    for (Py_ssize_t i = 0; values && i < g.n; i++) {
        PyObject *v = ag_value_alloc();
        if (!v) {
            Py_CLEAR(values);
            break;
        }
        PyList_SET_ITEM(values, i, v);
    }
    if (!ids || !out || !values) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = VALUE_ID(PyTuple_GET_ITEM(g.items, (Py_ssize_t)i));
    Py_INCREF(output); /* a Python _backward run by the sweep may drop every other reference */
    int status = ag_grad(VALUE_ID(output), ids, n, create_graph, out);
    if (status == AG_OK) {
        /* No Python code runs until each node has its Value. A result may be a node that
         * has one already (d(a*b)/da is b itself, and an input may be asked for twice):
         * then that Value is the result (invariant 8). */
        for (size_t i = 0; i < n; i++) {
            PyObject *made = PyList_GET_ITEM(values, (Py_ssize_t)i);
            ag_node *node = ag_node_at(out[i]);
            if (node->py) {
                Py_INCREF((PyObject *)node->py);
                PyList_SET_ITEM(values, (Py_ssize_t)i, (PyObject *)node->py);
                Py_DECREF(made);     /* a Value with no node yet: freed, no Python code runs */
                ag_release(out[i]);  /* the existing Value holds the node */
            } else {
                VALUE_ID(made) = out[i];
                node->py = made;
            }
        }
        result = values;
        values = NULL;
    } else if (status != AG_EPYTHON) {
        ag_raise_failure("grad", Py_BuildValue("(O)", output));
    }
    Py_DECREF(output);
done:
    Py_XDECREF(values);
    PyMem_Free(ids);
    PyMem_Free(out);
    gathered_free(&g);
    return result;
}

/* zero_grad(values): every Value's grad set to 0. */
static PyObject *zero_grad(PyObject *module, PyObject *values)
{
    (void)module;
    PyObject *items = PySequence_Fast(values, "zero_grad() takes an iterable of Values");
    if (!items)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject **item = PySequence_Fast_ITEMS(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!ag_is_value(item[i])) {
            PyErr_Format(PyExc_TypeError, "zero_grad() takes Values, not '%.200s'", ag_type_name(item[i]));
            Py_DECREF(items);
            return NULL;
        }
        ag_node_at(VALUE_ID(item[i]))->grad = 0.0;
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

/* ---- read-only walks, for pyautograd.viz ---- */

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
 * the root keeps them alive, and makes Values only after it (making one may run Python). */
static PyObject *nearest(PyObject *module, PyObject *args)
{
    PyObject *value;
    Py_ssize_t max_nodes;
    ag_id root;
    (void)module;
    if (!PyArg_ParseTuple(args, "On:nearest", &value, &max_nodes) || root_of(value, "to_dot", &root) < 0)
        return NULL;
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
    values = PyList_New((Py_ssize_t)n);
    edge_list = PyList_New((Py_ssize_t)n_edges);
    cut_list = PyList_New((Py_ssize_t)n_cut);
    if (!values || !edge_list || !cut_list)
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
    for (size_t i = 0; i < n; i++) { /* the root keeps every node here alive */
        PyObject *v = ag_value_of(nodes[i]);
        if (!v)
            goto done;
        PyList_SET_ITEM(values, (Py_ssize_t)i, v);
    }
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
    return result;
}

PyMethodDef ag_graph_functions[] = {
    {"sum", fused_sum, METH_VARARGS, "sum(values, start): one node"},
    {"dot", fused_dot, METH_VARARGS, "dot(ws, xs, start): one node"},
    {"layer", apply_layer, METH_VARARGS, "layer(ws, bs, nonlin, xs) -> NodeList"},
    {"layers", apply_layers, METH_VARARGS, "layers(plans, xs) -> list of the last layer's Values"},
    {"grad", grad, METH_VARARGS, "grad(output, inputs, create_graph) -> list of Values"},
    {"zero_grad", zero_grad, METH_O, "zero_grad(values): every grad set to 0"},
    {"graph_size", graph_size, METH_O, "graph_size(value): nodes reachable from value"},
    {"graph_stats", graph_stats, METH_O, "graph_stats(value) -> (counts by op code, depth)"},
    {"nearest", nearest, METH_VARARGS, "nearest(value, max_nodes) -> (values, edges, cut, left_out)"},
    {NULL, NULL, 0, NULL},
};
