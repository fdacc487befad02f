/* The arithmetic of pyautograd.Value, as a CPython type: the one file here that speaks
 * the Python C-API.
 *
 * Why: through cffi an op costs a Python method call, a cffi call, a Python object and
 * a __del__ that makes a second cffi call, ~330 ns for `a + b` made and freed. A type
 * whose number slots call the arena directly does it in ~60 ns, and a Value holds its
 * node id as a C field (no int object beside it). The Python class Value
 * (pyautograd/engine.py) subclasses this type and adds everything that is not on the
 * per-op path: construction, data/grad/label, _prev, _op, backward, repr, pickling.
 *
 * The slots and methods are generated from the op table (ops.h), like the rest.
 * Runs with the GIL held, which is the arena's lock (arena.h, invariant 4).
 * Not here: anything about the graph itself; errors are formatted by a Python hook. */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* the full API: _bind clears the GC flag of the Value class */
#include <string.h>
#include "arena.h"
#include "ops.h"

typedef struct {
    PyObject_HEAD
    ag_id id; /* holds one reference to the node */
} NodeObject;

#define NODE_ID(o) (((NodeObject *)(o))->id)

static PyTypeObject *node_type;    /* this type, pyautograd._ag._Node */
static PyTypeObject *value_type;   /* the Python subclass results are made as (bound later) */
static PyObject *failure_hook;     /* engine._raise_failure(what, inputs): raises */
static PyObject *real_abc;         /* numbers.Real, for numpy scalars, Fraction, ... */

/* A new Value owning the reference `id` already holds; on failure releases it. */
static PyObject *wrap(ag_id id)
{
    PyObject *v = PyType_GenericAlloc(value_type, 0);
    if (!v) {
        ag_release(id);
        return NULL;
    }
    NODE_ID(v) = id;
    return v;
}

static PyObject *fail(const char *what, PyObject *inputs)
{
    PyObject *result = inputs ? PyObject_CallFunction(failure_hook, "sO", what, inputs) : NULL;
    Py_XDECREF(inputs);
    Py_XDECREF(result);
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "pyautograd: %s failed", what);
    return NULL;
}

/* 1: *x holds o as a double; 0: o is not a real number; -1: error set (e.g. OverflowError). */
static int as_number(PyObject *o, double *x)
{
    if (PyFloat_Check(o)) {
        *x = PyFloat_AsDouble(o);
        return 1;
    }
    if (!PyLong_Check(o)) {
        int real = PyObject_IsInstance(o, real_abc);
        if (real <= 0)
            return real;
        *x = PyFloat_AsDouble(o);
    } else {
        *x = PyLong_AsDouble(o);
    }
    return (*x == -1.0 && PyErr_Occurred()) ? -1 : 1;
}

static PyObject *apply_binary(int op, const char *symbol, PyObject *a, PyObject *b)
{
    int a_is_node = PyObject_TypeCheck(a, node_type), b_is_node = PyObject_TypeCheck(b, node_type);
    ag_id id;
    if (a_is_node && b_is_node) {
        id = ag_apply2(op, NODE_ID(a), NODE_ID(b));
    } else {
        double constant;
        int found = as_number(a_is_node ? b : a, &constant);
        if (found < 0)
            return NULL;
        if (found == 0)
            Py_RETURN_NOTIMPLEMENTED;
        id = ag_apply2_const(op, NODE_ID(a_is_node ? a : b), constant, !a_is_node);
    }
    return id ? wrap(id) : fail(symbol, Py_BuildValue("(OO)", a, b));
}

static PyObject *apply_unary(int op, const char *name, PyObject *a)
{
    ag_id id = ag_apply1(op, NODE_ID(a));
    return id ? wrap(id) : fail(name, Py_BuildValue("(O)", a));
}

/* One C function per op row, for the type's slots and methods. */
#define AG_BINARY_FN(E, name, sym, arity, fwd, da, db) \
    static PyObject *binary_##E(PyObject *a, PyObject *b) { return apply_binary(AG_##E, sym, a, b); }
#define AG_UNARY_FN(E, name, sym, arity, fwd, da, db) \
    static PyObject *unary_##E(PyObject *a) { return apply_unary(AG_##E, name, a); } \
    static PyObject *method_##E(PyObject *a, PyObject *unused) { (void)unused; return unary_##E(a); }
AG_ELEMENTWISE_OPS(AG_BINARY_FN)
AG_ELEMENTWISE_OPS(AG_UNARY_FN)

#define AG_BINARY_ENTRY(E, name, sym, arity, fwd, da, db) [AG_##E] = binary_##E,
#define AG_UNARY_ENTRY(E, name, sym, arity, fwd, da, db) [AG_##E] = unary_##E,
#define AG_METHOD_ENTRY(E, name, sym, arity, fwd, da, db) [AG_##E] = method_##E,
static binaryfunc const binary_fns[AG_OP_COUNT] = {AG_ELEMENTWISE_OPS(AG_BINARY_ENTRY)};
static unaryfunc const unary_fns[AG_OP_COUNT] = {AG_ELEMENTWISE_OPS(AG_UNARY_ENTRY)};
static PyCFunction const method_fns[AG_OP_COUNT] = {AG_ELEMENTWISE_OPS(AG_METHOD_ENTRY)};

/* x ** y has a third argument (pow(x, y, mod)); it has no meaning for reals. */
static binaryfunc power_fn;
static PyObject *power(PyObject *a, PyObject *b, PyObject *mod)
{
    if (mod != Py_None) {
        PyErr_SetString(PyExc_TypeError, "pow() 3rd argument not allowed for Value");
        return NULL;
    }
    return power_fn(a, b);
}

/* Python's operator protocol: which number slot a binary row's Python name fills. */
static int number_slot(const char *name)
{
    static const struct { const char *name; int slot; } slots[] = {
        {"add", Py_nb_add}, {"sub", Py_nb_subtract}, {"mul", Py_nb_multiply},
        {"truediv", Py_nb_true_divide}, {"pow", Py_nb_power}, {"__neg__", Py_nb_negative},
    };
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
        if (!strcmp(slots[i].name, name))
            return slots[i].slot;
    return 0;
}

/* _Node.__new__(cls, id): a Value for the node `id`, taking over the reference the
 * caller holds (the C functions that make nodes return one). */
static PyObject *node_new(PyTypeObject *cls, PyObject *args, PyObject *kwargs)
{
    unsigned long id;
    if (kwargs || !PyArg_ParseTuple(args, "k", &id)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_Node(id) takes one node id");
        return NULL;
    }
    if (id == 0 || id >= AG_MAX_NODES) {
        PyErr_SetString(PyExc_ValueError, "_Node(id): not a node id");
        return NULL;
    }
    PyObject *v = PyType_GenericAlloc(cls, 0);
    if (v)
        NODE_ID(v) = (ag_id)id;
    return v;
}

static void node_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    freefunc free_instance = (freefunc)PyType_GetSlot(type, Py_tp_free);
    if (NODE_ID(self))
        ag_release(NODE_ID(self));
    free_instance(self);
    Py_DECREF(type); /* instances of heap types hold their type */
}

static PyObject *get_id(PyObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLong(NODE_ID(self));
}

/* _Node._bind(Value, raise_failure): the class results are made as, and the hook that
 * turns a failed op into an exception.
 *
 * A class statement makes every heap type's instances GC-tracked, but a Value holds no
 * Python references (`__slots__ = ()`: its only state is _Node's C id), so it can never
 * be part of a cycle. Left tracked, the cyclic GC would walk every live Value again and
 * again (it cost a training loop a third of its time) and each Value would carry a
 * 16-byte GC header. So, before any instance exists, Value becomes a plain object like
 * _Node's own instances. */
static PyObject *node_bind(PyObject *cls, PyObject *args)
{
    PyObject *value, *hook;
    (void)cls;
    if (!PyArg_ParseTuple(args, "OO", &value, &hook))
        return NULL;
    if (!PyType_Check(value) || !PyType_IsSubtype((PyTypeObject *)value, node_type)) {
        PyErr_SetString(PyExc_TypeError, "_bind: the class must subclass _Node");
        return NULL;
    }
    PyTypeObject *cls_type = (PyTypeObject *)value;
    if (cls_type->tp_basicsize != node_type->tp_basicsize || cls_type->tp_dictoffset
        || cls_type->tp_weaklistoffset) {
        PyErr_SetString(PyExc_TypeError, "_bind: the class must add no state (__slots__ = ())");
        return NULL;
    }
    cls_type->tp_flags &= ~Py_TPFLAGS_HAVE_GC;
    cls_type->tp_free = PyObject_Free;
    PyObject *old_value = (PyObject *)value_type, *old_hook = failure_hook;
    Py_INCREF(value);
    Py_INCREF(hook);
    value_type = (PyTypeObject *)value;
    failure_hook = hook;
    Py_XDECREF(old_value);
    Py_XDECREF(old_hook);
    Py_RETURN_NONE;
}

static PyGetSetDef getset[] = {
    {"_id", get_id, NULL, "the id of this Value's node in the C arena", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Makes the type and sets it as pyautograd._ag._Node. Called once, by engine.py. */
int ag_make_value_type(void)
{
    static PyMethodDef methods[AG_OP_COUNT + 2];
    static PyType_Slot type_slots[AG_OP_COUNT + 8];
    size_t n_methods = 0, n_slots = 0;

    if (node_type)
        return 0;
    PyObject *numbers = PyImport_ImportModule("numbers");
    if (!numbers)
        return -1;
    real_abc = PyObject_GetAttrString(numbers, "Real");
    Py_DECREF(numbers);
    if (!real_abc)
        return -1;

    for (int op = 0; op < AG_OP_COUNT; op++) {
        int arity = (int)ag_fixed_arity(op);
        const char *name = ag_op_name(op);
        int slot = number_slot(name);
        if (arity == 2 && slot == Py_nb_power) {
            power_fn = binary_fns[op];
            type_slots[n_slots++] = (PyType_Slot){slot, (void *)power};
        } else if (arity == 2 && slot) {
            type_slots[n_slots++] = (PyType_Slot){slot, (void *)binary_fns[op]};
        } else if (arity == 1 && slot) {
            type_slots[n_slots++] = (PyType_Slot){slot, (void *)unary_fns[op]};
        } else if (arity == 1) {
            methods[n_methods++] = (PyMethodDef){name, method_fns[op], METH_NOARGS,
                                                 "an op of the table in csrc/ops.h"};
        } else if (arity == 2) {
            PyErr_Format(PyExc_SystemError, "op %s has no Python operator", name);
            return -1;
        }
    }
    methods[n_methods++] = (PyMethodDef){"_bind", node_bind, METH_VARARGS | METH_CLASS, NULL};
    methods[n_methods] = (PyMethodDef){NULL, NULL, 0, NULL};
    type_slots[n_slots++] = (PyType_Slot){Py_tp_methods, methods};
    type_slots[n_slots++] = (PyType_Slot){Py_tp_getset, getset};
    type_slots[n_slots++] = (PyType_Slot){Py_tp_new, (void *)node_new};
    type_slots[n_slots++] = (PyType_Slot){Py_tp_dealloc, (void *)node_dealloc};
    type_slots[n_slots++] = (PyType_Slot){Py_tp_doc, "A node of the C graph; see pyautograd.Value."};
    type_slots[n_slots] = (PyType_Slot){0, NULL};

    static PyType_Spec spec = {"pyautograd._ag._Node", sizeof(NodeObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, NULL};
    spec.slots = type_slots;
    node_type = (PyTypeObject *)PyType_FromSpec(&spec);
    if (!node_type)
        return -1;
    value_type = node_type;
    Py_INCREF(value_type);

    PyObject *module = PyImport_ImportModule("pyautograd._ag");
    if (!module)
        return -1;
    int status = PyObject_SetAttrString(module, "_Node", (PyObject *)node_type);
    Py_DECREF(module);
    return status;
}
