/* Making Values from Python: Value(data, _children=(), _op='', label='', local_grads=None),
 * micrograd's signature with microgpt's local gradients, for the Value type (value.c).
 * A Value of the exact type is made whole by __new__ (and by a vectorcall fast path
 * for Value(x)); a subclass instance gets a placeholder leaf in __new__ that
 * Value.__init__, called through super().__init__(...), replaces. */
#include "python.h"

/* ---- construction: Value(data, _children=(), _op='', label='', local_grads=None) ---- */

static int is_iterable(PyObject *o)
{
    return Py_TYPE(o)->tp_iter != NULL || PySequence_Check(o);
}

/* The node a constructor call describes, holding one reference (0 with an exception). */
static ag_id node_from_arguments(PyObject *data, PyObject *children, PyObject *op_or_grads,
                                 PyObject *label, PyObject *local_grads)
{
    double x;
    int found = ag_as_double(data, &x);
    if (found == 0)
        PyErr_Format(PyExc_TypeError, "Value() data must be a real number, not '%.200s'",
                     ag_type_name(data));
    if (found <= 0)
        return 0;
    /* micrograd's third argument is _op; microgpt's, local_grads (numbers). A lone
     * number there is neither: micrograd would show it as the op and pass no gradient,
     * the trap of a one-child local_grads node written without its tuple. */
    if (op_or_grads && op_or_grads != Py_None && !PyUnicode_Check(op_or_grads)) {
        int number = ag_is_number(op_or_grads);
        if (number < 0)
            return 0;
        if (number) {
            PyErr_Format(PyExc_TypeError,
                         "Value() _op must be a string, not the number %R: local gradients go "
                         "in a sequence, one per child, as Value(data, children, (%R,)) or "
                         "local_grads=[%R]", op_or_grads, op_or_grads, op_or_grads);
            return 0;
        }
    }
    /* Not iterable at all: say which argument, rather than Python's "'int' object is
     * not iterable" (Value(1, 2), local_grads=3.0). */
    if (children && children != Py_None && !is_iterable(children)) {
        PyErr_Format(PyExc_TypeError, "Value() _children must be an iterable of Values, not '%.200s'",
                     ag_type_name(children));
        return 0;
    }
    if (local_grads && local_grads != Py_None && !is_iterable(local_grads)) {
        PyErr_Format(PyExc_TypeError,
                     "Value() local_grads must be a sequence of real numbers, one per child, not '%.200s'",
                     ag_type_name(local_grads));
        return 0;
    }
    if (op_or_grads && !local_grads && op_or_grads != Py_None && !PyUnicode_Check(op_or_grads)
        && !PyBytes_Check(op_or_grads) && !PyByteArray_Check(op_or_grads) /* b'mul': an op */
        && !PyMemoryView_Check(op_or_grads)
        && PySequence_Check(op_or_grads)) {
        local_grads = op_or_grads;
        op_or_grads = NULL;
    }
    /* Each of these may run Python code (iteration, __str__), which may raise: each
     * runs only if the one before succeeded, never with an exception set. */
    PyObject *kids = NULL, *grads = NULL, *op_text = NULL, *label_text = NULL;
    ag_id *ids = NULL, id = 0;
    double *locals = NULL;
    if (!(kids = children && children != Py_None ? PySequence_Tuple(children) : PyTuple_New(0))
        || (local_grads && local_grads != Py_None && !(grads = PySequence_Tuple(local_grads)))
        || (op_or_grads && op_or_grads != Py_None && !(op_text = PyObject_Str(op_or_grads)))
        || (label && label != Py_None && !(label_text = PyObject_Str(label))))
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(kids);
    if (grads && PyTuple_GET_SIZE(grads) != n) {
        PyErr_Format(PyExc_ValueError, "Value() needs one local gradient per child, got %zd for %zd",
                     PyTuple_GET_SIZE(grads), n);
        goto done;
    }
    ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *ids);
    locals = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *locals);
    if (!ids || !locals) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *child = PyTuple_GET_ITEM(kids, i);
        if (!ag_is_value(child)) {
            PyErr_Format(PyExc_TypeError, "Value() _children must be Values, not '%.200s'",
                         ag_type_name(child));
            goto done;
        }
        if (grads) { /* may run Python code (__float__) */
            found = ag_as_double(PyTuple_GET_ITEM(grads, i), &locals[i]);
            if (found == 0)
                PyErr_Format(PyExc_TypeError, "Value() local_grads must be real numbers, not '%.200s'",
                             ag_type_name(PyTuple_GET_ITEM(grads, i)));
            if (found <= 0)
                goto done;
        }
    }
    const char *text = op_text ? ag_text_utf8(op_text, "Value() _op") : "";
    const char *label_utf8 = label_text ? ag_text_utf8(label_text, "Value() label") : "";
    if (!text || !label_utf8)
        goto done;
    /* From here on no Python code runs until the caller owns the node: the children's
     * ids are read only now (kids keeps their Values, and so their nodes, alive). */
    for (Py_ssize_t i = 0; i < n; i++)
        ids[i] = VALUE_ID(PyTuple_GET_ITEM(kids, i));
    if (grads && n)
        id = ag_local(x, ids, locals, (size_t)n);
    else if (n || text[0])
        id = ag_custom(x, ids, (size_t)n);
    else
        id = ag_leaf(x);
    if (!id) {
        ag_raise_failure("Value()", PyTuple_New(0));
    } else if ((text[0] && ag_set_custom_op(id, text) != AG_OK)
               || (label_utf8[0] && ag_set_label(id, label_utf8) != AG_OK)) {
        ag_release(id);
        id = 0;
        PyErr_NoMemory();
    }
done:
    PyMem_Free(ids);
    PyMem_Free(locals);
    Py_XDECREF(kids);
    Py_XDECREF(grads);
    Py_XDECREF(op_text);
    Py_XDECREF(label_text);
    return id;
}

static int parse_arguments(PyObject *args, PyObject *kwargs, PyObject **data, PyObject **children,
                           PyObject **op_or_grads, PyObject **label, PyObject **local_grads)
{
    static char *names[] = {"data", "_children", "_op", "label", "local_grads", NULL};
    *children = *op_or_grads = *label = *local_grads = NULL;
    return PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOOO:Value", names, data, children,
                                       op_or_grads, label, local_grads);
}

/* Value.__new__. A Value comes out whole, with its node. A subclass instance gets a
 * placeholder leaf here (its own __init__ may take other arguments) that Value.__init__
 * replaces; a subclass instance is Python state in itself (ag_mark_state). */
PyObject *ag_value_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *data, *children, *op_or_grads, *label, *local_grads;
    if (type == ag_value_type) {
        if (!parse_arguments(args, kwargs, &data, &children, &op_or_grads, &label, &local_grads))
            return NULL;
        PyObject *v = ag_value_alloc();
        if (!v)
            return NULL;
        ag_id id = node_from_arguments(data, children, op_or_grads, label, local_grads);
        return id ? ag_value_own(v, id) : (Py_DECREF(v), NULL);
    }
    double x = 0.0;
    if (PyTuple_GET_SIZE(args) > 0 && ag_as_double(PyTuple_GET_ITEM(args, 0), &x) <= 0) {
        PyErr_Clear();
        x = 0.0;
    }
    PyObject *v = type->tp_alloc(type, 0); /* zeroed and GC-tracked, as subclasses need */
    if (!v)
        return NULL;
    ag_id id = ag_leaf(x);
    if (!id) {
        Py_DECREF(v);
        return ag_raise_failure("Value()", PyTuple_New(0));
    }
    VALUE_ID(v) = id;
    ((ValueObject *)v)->placeholder = 1;
    ag_node_at(id)->py = v;
    ag_mark_state(v);
    return v;
}

/* Moves self onto a freshly made node (holding its one reference): the state its
 * Value carries goes with it. */
static void replace_node(PyObject *self, ag_id id)
{
    ag_node *old = ag_node_at(VALUE_ID(self)), *node = ag_node_at(id);
    uint16_t state = old->flags & (AG_FLAG_PYSTATE | AG_FLAG_PYRULE);
    ag_id old_id = VALUE_ID(self);
    node->py = self;
    node->flags |= state;
    ag_note_rule_edit();
    VALUE_ID(self) = id;
    old->py = NULL;
    old->flags &= (uint16_t)~(AG_FLAG_PYSTATE | AG_FLAG_PYRULE);
    if (old->flags & AG_FLAG_PINNED) { /* one reference per other holder (invariant 8) */
        old->flags &= (uint16_t)~AG_FLAG_PINNED;
        for (uint32_t holders = old->refs - 1; holders; holders--)
            Py_DECREF(self); /* the caller still holds self */
    }
    ag_release(old_id);
}

/* Value.__init__: for subclasses, whose __init__ calls super().__init__(data,
 * _children, _op, label). A Value of the exact type was made whole by __new__. Only the
 * first call on a subclass instance does anything: it replaces __new__'s placeholder
 * leaf, before the instance has been handed to anything. Any later call does nothing,
 * as the docs say: a Value never changes node while C code may hold its id (a sweep
 * holding it as root, an op that read it before a __float__, a tape). The claim is
 * taken first, so a call made from the Python code the first one runs does nothing. */
/* Whether the placeholder's node is held by something besides self (an op, a list of
 * ids, a tape): then self keeps it, and __init__ raises RuntimeError (refuse_used). */
static int used_already(PyObject *self) { return ag_node_at(VALUE_ID(self))->refs > 1; }

static int refuse_used(PyObject *self)
{
    PyErr_Format(PyExc_RuntimeError,
                 "%s.__init__: Value.__init__ ran after this %s was used (in an op, or by an "
                 "optimizer); a Value never changes node once something holds it, so call "
                 "super().__init__(...) before using self",
                 Py_TYPE(self)->tp_name, Py_TYPE(self)->tp_name);
    return -1;
}

int ag_value_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *data, *children, *op_or_grads, *label, *local_grads;
    ValueObject *v = (ValueObject *)self;
    if (!v->placeholder)
        return 0;
    if (!parse_arguments(args, kwargs, &data, &children, &op_or_grads, &label, &local_grads))
        return -1;
    if (used_already(self))
        return refuse_used(self);
    v->placeholder = 0;
    ag_id id = node_from_arguments(data, children, op_or_grads, label, local_grads);
    /* that ran Python (a __float__, the children's iteration, a __str__), which may have
     * used self meanwhile: asked again before the node changes */
    if (id && used_already(self)) {
        ag_release(id); /* may run Python: self stays the placeholder whatever it does */
        id = 0;
        if (!PyErr_Occurred())
            refuse_used(self);
    }
    if (!id) {
        v->placeholder = 1; /* still __new__'s leaf: a corrected call may replace it */
        return -1;
    }
    replace_node(self, id);
    return 0;
}

/* Value(x): the call every input and parameter makes, without building argument
 * tuples; anything else goes the general way (__new__, then __init__), a program's
 * own Value.__new__ or Value.__init__ too (Python then rewrites the class's slots). */
PyObject *ag_value_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    PyTypeObject *type = (PyTypeObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (type == ag_value_type && nargs == 1 && !kwnames && type->tp_init == ag_value_init
        && type->tp_new == ag_value_new
        && (PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0]))) {
        double x = PyFloat_CheckExact(args[0]) ? PyFloat_AS_DOUBLE(args[0]) : PyLong_AsDouble(args[0]);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        PyObject *v = ag_value_alloc();
        if (!v)
            return NULL;
        ag_id id = ag_leaf(x);
        return id ? ag_value_own(v, id) : (Py_DECREF(v), ag_raise_failure("Value()", PyTuple_New(0)));
    }
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *self = NULL;
    if (!tuple)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(tuple, i, args[i]);
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw && !(kwargs = PyDict_New()))
        goto done;
    for (Py_ssize_t i = 0; i < nkw; i++)
        if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
            goto done;
    self = type->tp_new(type, tuple, kwargs);
    if (self && PyObject_TypeCheck(self, type) && type->tp_init(self, tuple, kwargs) < 0)
        Py_CLEAR(self);
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return self;
}
