/* Python functions that make nodes over many Values at once: the fused ops sum and dot,
 * an nn Layer or a whole MLP in one call, and grad(). The Python side of
 * pyautograd.functional, nn, optim and autograd. Each takes its inputs through
 * gather() (node_list.c), the ownership rule of invariant 7. */
#include <math.h>
#include <string.h>
#include "python.h"

/* ---- fused ops: sum and dot, one node each ---- */

/* start as a Value (0), a number that needs a node (*is_number), or none. A start that
 * is a zero adds nothing to a sum (which starts from its first value, as sum() from a
 * -0.0 does; sum()'s 0 + -0.0 is +0.0, a difference differences.md lists), and a +0.0
 * adds nothing to a dot (which starts from +0.0); a -0.0 start of a dot is kept, or
 * dot([0.0], [-0.0], -0.0) would be +0.0, not micrograd's -0.0. */
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
    *is_number = *number != 0.0 || (signbit(*number) && strcmp(what, "dot") == 0);
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
    if (start_id(start, "sum", &start_number, &start_is_number) < 0 || ag_gather(values, "sum()", 0, &g) < 0)
        return NULL;
    if (g.n == 0) { /* Python's sum([], start) is start */
        ag_gathered_free(&g);
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
    size_t first = 1;
    int status = ag_make_ids(&g, ids + 1, leaves); /* on failure it released its leaves */
    size_t n_leaves = status == AG_OK ? g.n_numbers : 0;
    if (status == AG_OK) {
        if (ag_is_value(start))
            ids[0] = VALUE_ID(start);
        else if (!start_is_number)
            first = 0;
        else if (!(ids[0] = leaves[n_leaves++] = ag_leaf(start_number)))
            status = ag_last_error(), n_leaves--;
    }
    ag_id node = status == AG_OK ? ag_sum(ids + 1 - first, n - 1 + first) : 0;
    ag_release_all(leaves, n_leaves); /* the sum holds them now */
    result = ag_value_own(out, node);
    out = NULL;
    if (!result)
        ag_raise_failure("sum", PySequence_List(g.items));
done:
    Py_XDECREF(out);
    PyMem_Free(ids);
    PyMem_Free(leaves);
    ag_gathered_free(&g);
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
    if (start_id(start, "dot", &start_number, &start_is_number) < 0 || ag_gather(ws, "dot() ws", 0, &gw) < 0)
        return NULL;
    if (ag_gather(xs, "dot() xs", 0, &gx) < 0) {
        ag_gathered_free(&gw);
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
    int status = ag_make_ids(&gw, ids, leaves);
    if (status == AG_OK && (status = ag_make_ids(&gx, ids + n, leaves + gw.n_numbers)) != AG_OK)
        ag_release_all(leaves, gw.n_numbers);
    size_t n_leaves = status == AG_OK ? n_numbers : 0;
    if (status == AG_OK && ag_is_value(start))
        bias = VALUE_ID(start);
    else if (status == AG_OK && start_is_number && !(bias = leaves[n_leaves++] = ag_leaf(start_number)))
        status = ag_last_error(), n_leaves--;
    ag_id node = status == AG_OK ? ag_dot(ids, ids + n, n, bias) : 0;
    ag_release_all(leaves, n_leaves); /* the dot holds them now */
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
    ag_gathered_free(&gw);
    ag_gathered_free(&gx);
    return result;
}

/* ---- nn: a whole Layer in one call ---- */

/* A plan (weights, nonlin): a LayerWeights and one nonlinearity flag per neuron. */
static int read_plan(PyObject *weights, PyObject *nonlin, const char *what, ag_row *const **rows,
                     size_t *nout, size_t *nin)
{
    if (ag_layer_weights_rows(weights, what, rows, nout, nin) < 0)
        return -1;
    if (!PyBytes_Check(nonlin) || (size_t)PyBytes_GET_SIZE(nonlin) != *nout) {
        PyErr_Format(PyExc_ValueError, "%s: one nonlinearity flag (bytes) per neuron", what);
        return -1;
    }
    return 0;
}

/* Whether neurons computed in C over xs (a NodeList) give what micrograd's neurons
 * (wi * xi summed from the bias, then relu) give: Value's +, * and relu are its own,
 * no input is a Value of a class with a * of its own, and no Value changed class since
 * the plan was read (classes: ag_class_changes then; its weights are of Value itself).
 * Asked once the inputs are nodes, with no Python code to come before the layer is
 * made (a number's __float__ could change an input's or a weight's class). */
static int computes_as_micrograd(PyObject *xs, unsigned long classes)
{
    if (classes != ag_class_changes || !ag_value_ops_ours())
        return 0;
    const NodeListObject *list = (const NodeListObject *)xs;
    for (Py_ssize_t i = 0; i < Py_SIZE(list); i++) {
        PyObject *v = ag_node_at(list->ids[i])->py;
        if (v && !ag_multiplies_as_value(v))
            return 0;
    }
    return 1;
}

/* layer(weights, nonlin, xs) -> NodeList: a LayerWeights' neurons over the first nin of
 * xs (a NodeList, or Values and numbers); NotImplemented when they would not compute
 * what micrograd's do (computes_as_micrograd: the caller then calls the neurons). */
static PyObject *apply_layer(PyObject *module, PyObject *args)
{
    PyObject *weights, *nonlin, *xs_arg;
    ag_row *const *rows;
    size_t nout, nin;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOO:layer", &weights, &nonlin, &xs_arg)
        || read_plan(weights, nonlin, "layer()", &rows, &nout, &nin) < 0)
        return NULL;
    unsigned long classes = ag_class_changes;
    PyObject *xs = ag_node_list_from(xs_arg, "Layer", 0);
    if (!xs)
        return NULL;
    if (!computes_as_micrograd(xs, classes)) {
        Py_DECREF(xs);
        Py_RETURN_NOTIMPLEMENTED;
    }
    NodeListObject *out = NULL;
    if ((size_t)Py_SIZE(xs) < nin) {
        PyErr_Format(PyExc_ValueError, "Layer takes %zu inputs, got %zd", nin, Py_SIZE(xs));
    } else if ((out = ag_node_list_alloc((Py_ssize_t)nout))) {
        /* no Python code from here until out owns the nodes */
        int status = ag_layer(rows, (const uint8_t *)PyBytes_AS_STRING(nonlin), nout, nin,
                              ((NodeListObject *)xs)->ids, out->ids);
        if (status != AG_OK) {
            Py_CLEAR(out);
            ag_raise_failure("Layer", PyTuple_New(0));
        }
    }
    Py_DECREF(xs);
    return (PyObject *)out;
}

/* The Values for nodes a call made (each holding one reference, which the Value takes
 * over), as a list. Each Value is allocated only now: allocating may run a GC pass, and
 * so any Python code, which must never meet a half-made Value (ids[] owns the nodes
 * meanwhile, invariant 7). A node that has a Value already (d(a*b)/da is b itself, an
 * input asked for twice), or gets one during an allocation, keeps it (invariant 8).
 * On failure the nodes not yet handed over are released. */
static PyObject *values_for(ag_id *ids, size_t n)
{
    PyObject **made = PyMem_Malloc((n ? n : 1) * sizeof *made), *list = NULL;
    size_t k = 0;
    for (; made && k < n; k++) {
        ag_node *node = ag_node_at(ids[k]);
        int had_one = ag_living_value(node) != NULL;
        PyObject *v = had_one ? NULL : ag_value_alloc();
        if (!had_one && !v)
            break;
        if (ag_living_value(node)) { /* there already, or made by Python code the allocation ran */
            Py_XDECREF(v); /* a Value with no node: freed, no Python code runs */
            made[k] = node->py;
            Py_INCREF(made[k]);
            ag_release(ids[k]); /* may run Python code: the Value holds the node */
        } else {
            made[k] = ag_value_own(v, ids[k]);
        }
    }
    if (made && k == n && (list = PyList_New((Py_ssize_t)n)))
        for (size_t i = 0; i < n; i++)
            PyList_SET_ITEM(list, (Py_ssize_t)i, made[i]);
    if (!list) {
        for (size_t i = 0; made && i < k; i++)
            Py_DECREF(made[i]);
        ag_release_all(ids + k, n - k);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
    }
    PyMem_Free(made);
    return list;
}

/* layers(plans, xs) -> list of Values: a whole MLP, each plan (weights, nonlin) applied
 * to what the one before gave (the first to xs: a NodeList, or Values and numbers). The
 * activations in between are ids this call owns; only the last layer's become Values,
 * allocated before any of its nodes exists. NotImplemented as layer()'s. */
static PyObject *apply_layers(PyObject *module, PyObject *args)
{
    PyObject *plans, *xs_arg;
    ag_row *const *rows;
    size_t nout, nin, width = 0, first_nin = 0;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O:layers", &PyTuple_Type, &plans, &xs_arg))
        return NULL;
    Py_ssize_t n_layers = PyTuple_GET_SIZE(plans);
    for (Py_ssize_t l = 0; l < n_layers; l++) {
        PyObject *plan = PyTuple_GET_ITEM(plans, l);
        if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 2) {
            PyErr_SetString(PyExc_TypeError, "layers(): each plan is (weights, nonlin)");
            return NULL;
        }
        if (read_plan(PyTuple_GET_ITEM(plan, 0), PyTuple_GET_ITEM(plan, 1), "layers()", &rows, &nout, &nin) < 0)
            return NULL;
        if (l > 0 && nin > width) {
            PyErr_SetString(PyExc_ValueError, "layers(): a layer takes more inputs than the one before gives");
            return NULL;
        }
        if (l == 0)
            first_nin = nin;
        width = nout;
    }
    if (n_layers == 0) {
        PyErr_SetString(PyExc_ValueError, "layers(): no layers");
        return NULL;
    }
    unsigned long classes = ag_class_changes;
    PyObject *xs = ag_node_list_from(xs_arg, "MLP", 0);
    if (!xs)
        return NULL;
    if (!computes_as_micrograd(xs, classes)) {
        Py_DECREF(xs);
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *out = NULL;
    ag_id *current = NULL, *next = NULL;
    if ((size_t)Py_SIZE(xs) < first_nin) {
        PyErr_Format(PyExc_ValueError, "MLP takes %zu inputs, got %zd", first_nin, Py_SIZE(xs));
        goto done;
    }
    /* no Python code from here until the last layer's nodes are in current[] */
    const ag_id *inputs = ((NodeListObject *)xs)->ids;
    size_t current_n = 0;
    int status = AG_OK;
    for (Py_ssize_t l = 0; l < n_layers && status == AG_OK; l++) {
        PyObject *plan = PyTuple_GET_ITEM(plans, l);
        ag_layer_weights_rows(PyTuple_GET_ITEM(plan, 0), "layers()", &rows, &nout, &nin); /* checked above */
        next = PyMem_Malloc(nout * sizeof *next);
        status = next ? ag_layer(rows, (const uint8_t *)PyBytes_AS_STRING(PyTuple_GET_ITEM(plan, 1)),
                                 nout, nin, inputs, next)
                      : AG_ENOMEM;
        if (status != AG_OK) {
            PyMem_Free(next);
            next = NULL;
        }
        if (current) { /* the layer's nodes hold the activations they use now */
            ag_release_all(current, current_n);
            PyMem_Free(current);
        }
        current = next;
        current_n = nout;
        inputs = next;
        next = NULL;
    }
    if (status == AG_OK) {
        out = values_for(current, width); /* current[] owns the nodes until then */
    } else {
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
    if (ag_gather(inputs_arg, "grad() inputs", 1, &g) < 0)
        return NULL;
    size_t n = (size_t)g.n;
    ag_id *ids = PyMem_Malloc((n ? n : 1) * sizeof *ids), *out = PyMem_Malloc((n ? n : 1) * sizeof *out);
    if (!ids || !out) {
        PyErr_NoMemory();
        goto done;
    }
    /* Held for the call (invariant: an id held outside a Value owns a reference): a
     * Python _backward run by the sweep may drop the inputs' Values, or move a subclass
     * placeholder to a node of its own (Value.__init__ refuses to once it is held). */
    for (size_t i = 0; i < n; i++) {
        ids[i] = VALUE_ID(PyTuple_GET_ITEM(g.items, (Py_ssize_t)i));
        ag_retain(ids[i]);
    }
    Py_INCREF(output); /* a Python _backward run by the sweep may drop every other reference */
    int status = ag_grad(VALUE_ID(output), ids, n, create_graph, out);
    if (status == AG_OK)
        result = values_for(out, n); /* out[] owns the results until then */
    else if (status != AG_EPYTHON)
        ag_raise_failure("grad", Py_BuildValue("(O)", output));
    ag_release_all(ids, n); /* may run Python: after the results are Values */
    Py_DECREF(output);
done:
    PyMem_Free(ids);
    PyMem_Free(out);
    ag_gathered_free(&g);
    return result;
}

/* The numbers of a sequence, one per input (a TypeError naming `what` otherwise). */
static double *numbers_of(PyObject *sequence, Py_ssize_t n, const char *what)
{
    PyObject *items = PySequence_Tuple(sequence);
    if (!items)
        return NULL;
    double *numbers = NULL;
    if (PyTuple_GET_SIZE(items) != n)
        PyErr_Format(PyExc_ValueError, "%s: one number per input, got %zd for %zd inputs", what,
                     PyTuple_GET_SIZE(items), n);
    else if ((numbers = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *numbers)))
        for (Py_ssize_t i = 0; i < n; i++) {
            int found = ag_as_double(PyTuple_GET_ITEM(items, i), &numbers[i]);
            if (found == 0)
                PyErr_Format(PyExc_TypeError, "%s must be real numbers, not '%.200s'", what,
                             ag_type_name(PyTuple_GET_ITEM(items, i)));
            if (found <= 0) {
                PyMem_Free(numbers);
                numbers = NULL;
                break;
            }
        }
    else
        PyErr_NoMemory();
    Py_DECREF(items);
    return numbers;
}

/* Leaves for numbers, as a list of Values. */
static PyObject *leaves_for(const double *numbers, size_t n)
{
    ag_id *ids = PyMem_Malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return PyErr_NoMemory();
    size_t made = 0;
    while (made < n && (ids[made] = ag_leaf(numbers[made])))
        made++;
    PyObject *list = NULL;
    if (made == n)
        list = values_for(ids, n); /* ids[] owns the leaves until then */
    else {
        ag_release_all(ids, made);
        ag_raise_failure("jvp", PyTuple_New(0));
    }
    PyMem_Free(ids);
    return list;
}

/* jvp(outputs, inputs, tangents, create_graph) -> list of Values, one per output. */
static PyObject *jvp(PyObject *module, PyObject *args)
{
    PyObject *outputs_arg, *inputs_arg, *tangents_arg, *result = NULL;
    int create_graph;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOOp:jvp", &outputs_arg, &inputs_arg, &tangents_arg, &create_graph))
        return NULL;
    gathered go, gi;
    if (ag_gather(outputs_arg, "jvp() outputs", 1, &go) < 0)
        return NULL;
    if (ag_gather(inputs_arg, "jvp() inputs", 1, &gi) < 0) {
        ag_gathered_free(&go);
        return NULL;
    }
    size_t n_out = (size_t)go.n, n_in = (size_t)gi.n;
    double *tangents = numbers_of(tangents_arg, gi.n, "jvp() tangents"), *numbers = NULL;
    ag_id *outs = PyMem_Malloc((n_out ? n_out : 1) * sizeof *outs), *ins = PyMem_Malloc((n_in ? n_in : 1) * sizeof *ins);
    ag_id *made = PyMem_Malloc((n_out ? n_out : 1) * sizeof *made), root = 0;
    numbers = PyMem_Malloc((n_out ? n_out : 1) * sizeof *numbers);
    if (!tangents || !outs || !ins || !made || !numbers) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    if (n_out == 0) {
        result = PyList_New(0);
        goto done;
    }
    /* no Python code from here until the results have their Values */
    for (size_t k = 0; k < n_out; k++)
        outs[k] = VALUE_ID(PyTuple_GET_ITEM(go.items, (Py_ssize_t)k));
    for (size_t k = 0; k < n_in; k++)
        ins[k] = VALUE_ID(PyTuple_GET_ITEM(gi.items, (Py_ssize_t)k));
    int recording = ag_grad_enabled();
    if (!recording) /* the outputs' sum, and create_graph's nodes, are built under no_grad too */
        ag_set_grad_enabled(1);
    if (n_out == 1) {
        root = outs[0];
        ag_retain(root);
    } else { /* one root over every output: one sort, one sweep; its value is no result,
              * so detect_anomaly does not look at it (an output may be inf) */
        int checking = ag_anomaly_mode();
        ag_set_anomaly_mode(0);
        root = ag_sum(outs, n_out);
        ag_set_anomaly_mode(checking);
    }
    int status = root ? AG_OK : ag_last_error();
    if (status == AG_OK)
        status = create_graph ? ag_jvp_terms(root, outs, n_out, ins, tangents, n_in, made)
                              : ag_jvp(root, outs, n_out, ins, tangents, n_in, numbers);
    if (!recording)
        ag_set_grad_enabled(0);
    if (status == AG_OK)
        result = create_graph ? values_for(made, n_out) : leaves_for(numbers, n_out);
    if (root)
        ag_release(root); /* may run Python code: after the results are owned */
    if (status != AG_OK && !PyErr_Occurred())
        ag_raise_failure("jvp", PySequence_List(go.items));
done:
    PyMem_Free(tangents);
    PyMem_Free(numbers);
    PyMem_Free(outs);
    PyMem_Free(ins);
    PyMem_Free(made);
    ag_gathered_free(&go);
    ag_gathered_free(&gi);
    return result;
}

/* hvp(output, inputs, vector) -> list of Values: the Hessian of output times vector. */
static PyObject *hvp(PyObject *module, PyObject *args)
{
    PyObject *output, *inputs_arg, *vector_arg, *result = NULL;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOO:hvp", &output, &inputs_arg, &vector_arg))
        return NULL;
    if (!ag_is_value(output)) {
        PyErr_Format(PyExc_TypeError, "hvp() output must be a Value, not '%.200s'", ag_type_name(output));
        return NULL;
    }
    gathered g;
    if (ag_gather(inputs_arg, "hvp() inputs", 1, &g) < 0)
        return NULL;
    size_t n = (size_t)g.n;
    double *vector = numbers_of(vector_arg, g.n, "hvp() vector");
    double *numbers = PyMem_Malloc((n ? n : 1) * sizeof *numbers);
    ag_id *ids = PyMem_Malloc((n ? n : 1) * sizeof *ids);
    if (!vector || !numbers || !ids) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    for (size_t k = 0; k < n; k++)
        ids[k] = VALUE_ID(PyTuple_GET_ITEM(g.items, (Py_ssize_t)k));
    if (ag_hvp(VALUE_ID(output), ids, vector, n, numbers) == AG_OK)
        result = leaves_for(numbers, n);
    else
        ag_raise_failure("hvp", Py_BuildValue("(O)", output));
done:
    PyMem_Free(vector);
    PyMem_Free(numbers);
    PyMem_Free(ids);
    ag_gathered_free(&g);
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

/* _track_pin_holders(generation): before a GC pass (engine.py's gc callback), see pins.c;
 * _gc_pass_ended(): after it. */
static PyObject *track_pin_holders(PyObject *module, PyObject *generation)
{
    (void)module;
    long oldest = PyLong_AsLong(generation);
    if (oldest == -1 && PyErr_Occurred())
        return NULL;
    ag_track_pin_holders(oldest >= 2);
    Py_RETURN_NONE;
}

static PyObject *gc_pass_ended(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    ag_gc_pass_ended();
    Py_RETURN_NONE;
}

/* fusable(xs) -> bool: whether one dot node over xs (a list) computes what micrograd's
 * Neuron does (as computes_as_micrograd); for nn.Neuron, whose weights are Values of
 * Value. Asked before dot() converts the numbers among xs. */
static PyObject *fusable(PyObject *module, PyObject *xs)
{
    (void)module;
    if (!PyList_Check(xs)) {
        PyErr_SetString(PyExc_TypeError, "fusable() takes a list");
        return NULL;
    }
    int ours = ag_value_ops_ours();
    for (Py_ssize_t i = 0; ours && i < PyList_GET_SIZE(xs); i++)
        ours = ag_multiplies_as_value(PyList_GET_ITEM(xs, i));
    return PyBool_FromLong(ours);
}

/* _class_changes() -> int: how many times a Value changed class, so far. */
static PyObject *class_changes(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromUnsignedLong(ag_class_changes);
}

/* _set_class_change_hook(f): f() is called after a Value changes class (nn.py). */
static PyObject *set_class_change_hook(PyObject *module, PyObject *hook)
{
    (void)module;
    if (!PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "_set_class_change_hook() takes a callable");
        return NULL;
    }
    ag_set_class_change_hook(hook);
    Py_RETURN_NONE;
}

PyMethodDef ag_graph_functions[] = {
    {"_gc_pass_ended", gc_pass_ended, METH_NOARGS, "after a GC pass: the live nodes it left"},
    {"_track_pin_holders", track_pin_holders, METH_O, "before a GC pass of generation g: Values holding new pins tracked"},
    {"sum", fused_sum, METH_VARARGS, "sum(values, start): one node"},
    {"dot", fused_dot, METH_VARARGS, "dot(ws, xs, start): one node"},
    {"layer", apply_layer, METH_VARARGS, "layer(weights, nonlin, xs) -> NodeList"},
    {"layers", apply_layers, METH_VARARGS, "layers(plans, xs) -> list of the last layer's Values"},
    {"fusable", fusable, METH_O, "whether a Neuron's dot node over xs computes what micrograd's does"},
    {"_set_class_change_hook", set_class_change_hook, METH_O, "f() is called after a Value changes class"},
    {"_class_changes", class_changes, METH_NOARGS, "how many times a Value changed class, so far"},
    {"grad", grad, METH_VARARGS, "grad(output, inputs, create_graph) -> list of Values"},
    {"jvp", jvp, METH_VARARGS, "jvp(outputs, inputs, tangents, create_graph) -> list of Values"},
    {"hvp", hvp, METH_VARARGS, "hvp(output, inputs, vector) -> list of Values"},
    {"zero_grad", zero_grad, METH_O, "zero_grad(values): every grad set to 0"},
    {NULL, NULL, 0, NULL},
};
