/* pyautograd.engine.Value, as a CPython type.
 *
 * Why in C: through cffi an op costs a Python method call, a cffi call, a Python object
 * and a __del__ making a second cffi call (~330 ns for `a + b` made and freed); here a
 * number slot calls the arena directly. Everything a micrograd program touches in its
 * inner loops is here: construction, data/grad, the operators, backward.
 *
 * What makes it a Python object like micrograd's (invariants 8 and 9 in arena.h):
 *  - identity: a node has at most one Value (ag_node.py), so `_prev` hands back the
 *    very objects the program made and `is`, id() and attributes behave;
 *  - attributes and weak references; a Value that gets Python state (attributes, a
 *    Python _backward, a subclass) is pinned by its node while anything else holds the
 *    node, so the state survives while the node does, and it joins the cyclic GC (its
 *    state can make cycles, e.g. a closure that refers to its own Value);
 *  - a Python _backward set on a node runs in the sweep, in order with the C nodes.
 * Every op's slot and method is generated from the op table (ops.h). Not here: making
 * Values from Python (value_new.c), pins and the Python rules the sweep runs (pins.c). */
#include <string.h>
#include "python.h"
#include <structmember.h> /* T_PYSSIZET, READONLY (3.10, 3.11) */

PyTypeObject *ag_value_type;
PyObject *ag_backward_name;       /* "_backward", interned */
static PyObject *data_name, *grad_name;

/* ---- Values for nodes (invariant 8) ---- */

/* Values of the exact type with no attributes go back to a small free list when they
 * die and come from it first, as floats do: an op makes and drops one each. A Value on
 * the list keeps its reference to the type. */
#define AG_FREE_VALUES 256
static ValueObject *free_values[AG_FREE_VALUES];
static int n_free_values;

/* Inline here, where every op's result comes from: a call less per op. */
static inline PyObject *value_alloc(void)
{
    ValueObject *v;
    if (n_free_values) {
        v = free_values[--n_free_values];
        _Py_NewReference((PyObject *)v);
    } else {
        v = PyObject_GC_New(ValueObject, ag_value_type); /* untracked */
        if (!v)
            return NULL;
        v->dict = NULL;
        v->weakrefs = NULL;
    }
    v->id = 0;
    v->tracked = 0;
    v->placeholder = 0;
    return (PyObject *)v;
}

PyObject *ag_value_alloc(void) { return value_alloc(); }

/* Allocating the Value before the node is made means nothing can run between the
 * node's birth and its owner (invariant 7): not even a GC pass. */
/* Inline here, where every op's result comes from; ag_value_own for the other files. */
AG_INLINE PyObject *value_own(PyObject *v, ag_id id)
{
    if (!id) {
        Py_DECREF(v);
        return NULL;
    }
    ag_node *node = ag_node_at(id);
    VALUE_ID(v) = id;
    node->py = v;
    ag_note_state_below((ValueObject *)v, node);
    return v;
}

PyObject *ag_value_own(PyObject *v, ag_id id) { return value_own(v, id); }

/* The caller keeps the node alive throughout. Allocating the Value may run a GC pass,
 * and so any Python code, which may itself ask for this node's Value: whichever Value
 * the node has after the allocation is the one (invariant 8). */
static void unlink_node(ValueObject *v);

/* A Value of a subclass (or one given a subclass's class by a route that skips our
 * setattro: object.__dict__['__class__'].__set__) dies through Python's subtype_dealloc,
 * whose trashcan may put the dealloc off in a deep cascade, at refcount 0 and before
 * value_dealloc can unlink it. Handing it out meanwhile would bring it back to die
 * twice: it counts as gone (its link is cut here; its own dealloc, when it comes,
 * still releases its node). */
PyObject *ag_living_value(ag_node *node)
{
    PyObject *v = node->py;
    if (v && Py_REFCNT(v) == 0) {
        unlink_node((ValueObject *)v);
        return NULL;
    }
    return v;
}

PyObject *ag_value_of(ag_id id)
{
    ag_node *node = ag_node_at(id);
    if (!ag_living_value(node)) {
        PyObject *v = ag_value_alloc();
        if (!v)
            return NULL;
        if (!node->py) {
            ag_retain(id);
            return ag_value_own(v, id);
        }
        Py_DECREF(v); /* a Value with no node: back to the free list, no Python code */
    }
    Py_INCREF((PyObject *)node->py);
    return node->py;
}

PyObject *ag_values_of(const ag_id *ids, size_t n, int as_tuple)
{
    PyObject **made = PyMem_Malloc((n ? n : 1) * sizeof *made), *out = NULL;
    size_t k = 0;
    for (; made && k < n; k++) /* each may run a GC pass: none is in a container yet */
        if (!(made[k] = ag_value_of(ids[k])))
            break;
    if (made && k == n && (out = as_tuple ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n)))
        for (size_t i = 0; i < n; i++) {
            if (as_tuple)
                PyTuple_SET_ITEM(out, (Py_ssize_t)i, made[i]);
            else
                PyList_SET_ITEM(out, (Py_ssize_t)i, made[i]);
        }
    if (!out)
        for (size_t i = 0; made && i < k; i++)
            Py_DECREF(made[i]);
    if (!made)
        PyErr_NoMemory();
    PyMem_Free(made);
    return out;
}

/* ---- lifetime ---- */

/* A dying Value first cuts its node's link back to it (invariant 8), before any Python
 * code runs in its dealloc (weakref callbacks, its attributes' finalizers, unpins):
 * whatever asks for the node from then on gets a fresh Value, never the dying one. The
 * dying Value keeps its reference to the node until release_node, so the node lives. */
static void unlink_node(ValueObject *v)
{
    if (!v->id)
        return;
    ag_node *node = ag_node_at(v->id);
    if (node->py == (void *)v) {
        node->py = NULL;
        node->flags &= (uint16_t)~(AG_FLAG_PYSTATE | AG_FLAG_PYRULE);
    }
}

static void release_node(ValueObject *v)
{
    ag_id id = v->id;
    v->id = 0;
    if (id)
        ag_release(id); /* may run Python code */
}

static void value_dealloc(PyObject *self)
{
    ValueObject *v = (ValueObject *)self;
    PyTypeObject *type = Py_TYPE(self);
    unlink_node(v);
    if (type == ag_value_type && !v->tracked && !v->dict && !v->weakrefs) {
        /* the common case, an op's result made and dropped: never tracked, no state */
        release_node(v); /* may run Python code, which may fill the free list: count after */
        if (n_free_values < AG_FREE_VALUES) {
            free_values[n_free_values++] = v;
            return;
        }
        type->tp_free(self);
        Py_DECREF(type);
        return;
    }
    PyObject_GC_UnTrack(self);
    if (v->weakrefs)
        PyObject_ClearWeakRefs(self);
    if (v->dict) {
        /* Attributes can hold long chains of objects: let CPython's trashcan keep their
         * release from recursing deep (it may put this dealloc off, then call it again). */
        Py_TRASHCAN_BEGIN(self, value_dealloc)
        Py_CLEAR(v->dict);
        release_node(v);
        type->tp_free(self);
        Py_DECREF(type);
        Py_TRASHCAN_END
        return;
    }
    release_node(v);
    type->tp_free(self);
    Py_DECREF(type); /* instances of heap types hold their type */
}

static int value_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((ValueObject *)self)->dict);
    Py_VISIT(Py_TYPE(self));
    return ag_visit_pins_held_alone(VALUE_ID(self), visit, arg);
}

static int value_clear(PyObject *self)
{
    ValueObject *v = (ValueObject *)self;
    if (v->id)
        ag_node_at(v->id)->flags &= (uint16_t)~AG_FLAG_PYRULE;
    Py_CLEAR(v->dict);
    return 0;
}

/* v.data and v.grad are what micrograd programs touch most (an optimizer loop reads and
 * writes both for every parameter), so a Value of the exact type answers them before
 * the generic lookup: the names in code are interned, so one pointer compare does it.
 * Everything else, and every subclass (which may override data), goes the generic way.
 *
 * The price, on CPython 3.11: with a tp_getattro of its own, LOAD_METHOD binds a method
 * object for every `v.relu()` (and PRECALL cannot specialise), where the generic one
 * would call the method descriptor unbound (LOAD_METHOD itself does not specialise
 * either way while a Value's dict is NULL). Neither does LOAD_ATTR for the getset
 * data/grad. An A/B against PyObject_GenericGetAttr (AMD EPYC, 2 cores, shared;
 * CPython 3.11.7; min CPU time of 31 alternating processes, bench/ab_builds.py), B/A:
 * v.data 1.45 (15.4 vs 22.3 ns), v.relu() 0.48 (67 vs 33 ns), `p.data -= lr * p.grad`
 * 1.22; examples/microgpt.py step 1.027 (Adam loop 1.069; callgrind Ir 1.016),
 * micrograd's own nn.MLP moons step 0.968 (Ir 0.977), bench_dropin's layer code 0.99.
 * Kept for microgpt-shaped programs (many parameters, few method calls per parameter). */
static PyObject *value_getattro(PyObject *self, PyObject *name)
{
    if (Py_IS_TYPE(self, ag_value_type)) {
        if (name == data_name)
            return PyFloat_FromDouble(ag_node_at(VALUE_ID(self))->data);
        if (name == grad_name)
            return PyFloat_FromDouble(ag_node_at(VALUE_ID(self))->grad);
    }
    return PyObject_GenericGetAttr(self, name);
}

/* Stores: STORE_ATTR does not specialise for a getset descriptor on 3.11 even with the
 * generic setattro, and without this one `p.data -= lr * p.grad` took ~6 ns more (the A/B
 * above). */
static PyObject *class_change_hook; /* called when a Value changes class (nn.py) */
unsigned long ag_class_changes;      /* how many times one has, so far */

static int value_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    if (Py_IS_TYPE(self, ag_value_type) && value && PyFloat_CheckExact(value)) {
        if (name == data_name) {
            ag_node_at(VALUE_ID(self))->data = PyFloat_AS_DOUBLE(value);
            ag_note_data_edit();
            return 0;
        }
        if (name == grad_name) {
            ag_node_at(VALUE_ID(self))->grad = PyFloat_AS_DOUBLE(value);
            return 0;
        }
    }
    PyTypeObject *type = Py_TYPE(self);
    if (PyObject_GenericSetAttr(self, name, value) < 0)
        return -1;
    /* v.__class__ = Sub (the only way in: object.__setattr__ refuses a Value) makes it a
     * subclass instance, Python state in itself as one made so is (value_new.c): its
     * node keeps it while used, so it never dies, deferred by a subclass's dealloc,
     * while the graph can still hand it out. */
    if (((ValueObject *)self)->dict || !Py_IS_TYPE(self, ag_value_type))
        ag_mark_state(self);
    if (value && !ag_holds_no_object(value))
        ag_note_held_objects(self);
    if (type != Py_TYPE(self))
        ag_class_changes++;
    if (type != Py_TYPE(self) && class_change_hook) { /* nn's caches depend on classes */
        PyObject *done = PyObject_CallNoArgs(class_change_hook);
        Py_XDECREF(done);
        return done ? 0 : -1;
    }
    return 0;
}

void ag_set_class_change_hook(PyObject *hook)
{
    Py_XINCREF(hook);
    Py_XSETREF(class_change_hook, hook);
}

/* The program may fill a dict it holds by hand, a _backward included (vars(v)[...]):
 * from then on the sweep looks for one there (AG_FLAG_PYRULE, arena.h). */
static void dict_handed_out(PyObject *self)
{
    ag_mark_state(self);
    ag_note_held_objects(self);
    ag_node_at(VALUE_ID(self))->flags |= AG_FLAG_PYRULE;
    ag_note_rule_edit();
}

static PyObject *get_dict(PyObject *self, void *unused)
{
    PyObject *dict = PyObject_GenericGetDict(self, unused);
    if (dict)
        dict_handed_out(self);
    return dict;
}

static int set_dict(PyObject *self, PyObject *dict, void *unused)
{
    if (PyObject_GenericSetDict(self, dict, unused) < 0)
        return -1;
    dict_handed_out(self);
    return 0;
}

/* ---- data, grad, label ---- */

/* The number given to .data or .grad, in *x; -1 with an exception if it is none. Its
 * __float__ may run Python, even a first Value.__init__ that moves the Value to another
 * node: the caller finds the node after this returns. */
static int to_number(PyObject *value, const char *name, double *x)
{
    if (!value) {
        PyErr_Format(PyExc_AttributeError, "Value.%s cannot be deleted", name);
        return -1;
    }
    int found = ag_as_double(value, x);
    if (found == 0)
        PyErr_Format(PyExc_TypeError, "Value.%s must be a real number, not '%.200s'", name,
                     ag_type_name(value));
    return found <= 0 ? -1 : 0;
}

static PyObject *get_data(PyObject *self, void *unused)
{
    (void)unused;
    return PyFloat_FromDouble(ag_node_at(VALUE_ID(self))->data);
}

static int set_data(PyObject *self, PyObject *value, void *unused)
{
    (void)unused;
    if (value && PyFloat_CheckExact(value)) { /* the optimizer loop's case */
        ag_node_at(VALUE_ID(self))->data = PyFloat_AS_DOUBLE(value);
        ag_note_data_edit();
        return 0;
    }
    /* Noted after the write: the number's __float__ is Python, which may replay this
     * graph and so record the edits so far (a tape that did must read the data again). */
    double x;
    int status = to_number(value, "data", &x);
    if (status == 0)
        ag_node_at(VALUE_ID(self))->data = x;
    ag_note_data_edit();
    return status;
}

static PyObject *get_grad(PyObject *self, void *unused)
{
    (void)unused;
    return PyFloat_FromDouble(ag_node_at(VALUE_ID(self))->grad);
}

static int set_grad(PyObject *self, PyObject *value, void *unused)
{
    (void)unused;
    if (value && PyFloat_CheckExact(value)) {
        ag_node_at(VALUE_ID(self))->grad = PyFloat_AS_DOUBLE(value);
        return 0;
    }
    double x;
    if (to_number(value, "grad", &x) < 0)
        return -1;
    ag_node_at(VALUE_ID(self))->grad = x;
    return 0;
}

static PyObject *get_label(PyObject *self, void *unused)
{
    (void)unused;
    return PyUnicode_DecodeUTF8(ag_label(VALUE_ID(self)), (Py_ssize_t)strlen(ag_label(VALUE_ID(self))),
                                "replace");
}

static int set_label(PyObject *self, PyObject *value, void *unused)
{
    (void)unused;
    PyObject *text = value && value != Py_None ? PyObject_Str(value) : PyUnicode_FromString(""); /* as Value(..., label=None) */
    if (!text)
        return -1;
    const char *utf8 = ag_text_utf8(text, "Value.label");
    int status = utf8 ? ag_set_label(VALUE_ID(self), utf8) : -1;
    Py_DECREF(text);
    if (status > 0)
        PyErr_NoMemory();
    return status ? -1 : 0;
}

static PyObject *get_id(PyObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLong(VALUE_ID(self));
}

/* ---- the graph, as micrograd shows it: _prev, _op, _backward ---- */

/* The inputs in operand order, repeats kept (a + a gives (a, a)). Each is kept by its
 * node from then on, as micrograd's graph keeps its operand objects: a walk that keys
 * the nodes it saw by id() and drops the Values meets each node as one object, never a
 * new one under a reused id. */
static PyObject *get_inputs(PyObject *self, void *unused)
{
    (void)unused;
    size_t n;
    const ag_id *inputs = ag_inputs_of(ag_node_at(VALUE_ID(self)), &n);
    ag_id *ids = PyMem_Malloc((n ? n : 1) * sizeof *ids); /* copied: Python code may run */
    if (!ids)
        return PyErr_NoMemory();
    memcpy(ids, inputs, n * sizeof *ids);
    PyObject *tuple = ag_values_of(ids, n, 1); /* self's node keeps them alive */
    PyMem_Free(ids);
    for (Py_ssize_t i = 0; tuple && i < PyTuple_GET_SIZE(tuple); i++)
        ag_keep_by_node(PyTuple_GET_ITEM(tuple, i)); /* no Python code */
    return tuple;
}

static PyObject *get_prev(PyObject *self, void *unused)
{
    PyObject *inputs = get_inputs(self, unused);
    if (!inputs)
        return NULL;
    PyObject *prev = PySet_New(inputs);
    Py_DECREF(inputs);
    return prev;
}

static PyObject *get_op(PyObject *self, void *unused)
{
    (void)unused;
    ag_id id = VALUE_ID(self);
    const ag_node *node = ag_node_at(id);
    if (ag_op_is_hand_made(node->op))
        return PyUnicode_DecodeUTF8(ag_custom_op(id), (Py_ssize_t)strlen(ag_custom_op(id)), "replace");
    if (node->op == AG_POW && ag_node_at(node->in[1])->op == AG_CONST) { /* micrograd's '**2' */
        double e = ag_node_at(node->in[1])->data;
        PyObject *exponent = (e == floor(e) && fabs(e) < 1e15) ? PyLong_FromDouble(e) : PyFloat_FromDouble(e);
        PyObject *text = exponent ? PyUnicode_FromFormat("**%S", exponent) : NULL;
        Py_XDECREF(exponent);
        return text;
    }
    return PyUnicode_FromString(ag_op_symbol(node->op));
}

/* None, or the exception for a whole-graph call on self that failed (a Python _backward
 * that raised has set its own). */
static PyObject *none_or_raise(int status, const char *what, PyObject *self)
{
    if (status)
        return status == AG_EPYTHON ? NULL : ag_raise_failure(what, Py_BuildValue("(O)", self));
    Py_RETURN_NONE;
}

/* v._backward() for a node with no Python _backward: the op's own chain-rule step. */
static PyObject *backward_step(PyObject *self, PyObject *unused)
{
    (void)unused;
    return none_or_raise(ag_backward_step(VALUE_ID(self)), "_backward", self);
}

static PyMethodDef backward_step_def = {"_backward", backward_step, METH_NOARGS,
                                        "This node's chain-rule step: each input's grad += "
                                        "local derivative * this grad."};

static PyObject *get_backward(PyObject *self, void *unused)
{
    (void)unused;
    PyObject *rule = ag_rule_in(((ValueObject *)self)->dict);
    if (rule) {
        Py_INCREF(rule);
        return rule;
    }
    return PyCFunction_New(&backward_step_def, self);
}

/* out._backward = fn: backward() calls fn in out's place, as micrograd does; None, del
 * or the node's own step (read before) gives the node its op's own rule back. */
/* dict[_backward] = rule, or del dict[_backward] (rule NULL; absent is fine), holding
 * the dict: a key of the program's may run __eq__, which may replace the Value's dict. */
static int store_rule(PyObject *dict, PyObject *rule)
{
    Py_INCREF(dict);
    int status = rule ? PyDict_SetItem(dict, ag_backward_name, rule) : PyDict_DelItem(dict, ag_backward_name);
    Py_DECREF(dict);
    if (status < 0 && !rule && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        status = 0;
    }
    return status;
}

static int set_backward(PyObject *self, PyObject *rule, void *unused)
{
    (void)unused;
    ValueObject *v = (ValueObject *)self;
    int own_step = rule && PyCFunction_Check(rule) && PyCFunction_GetFunction(rule) == backward_step
                   && PyCFunction_GetSelf(rule) == self;
    /* Python may run in the dict work below (a key's __eq__, a GC pass), even a first
     * Value.__init__ that moves self: its node is found after it. */
    if (!rule || rule == Py_None || own_step) { /* own_step: a step saved before a hook, put back */
        if (v->dict && store_rule(v->dict, NULL) < 0)
            return -1;
        if (!v->dict) /* a dict handed out may still get one by hand: keep looking there */
            ag_node_at(VALUE_ID(self))->flags &= (uint16_t)~AG_FLAG_PYRULE;
        return 0;
    }
    if (!PyCallable_Check(rule)) {
        PyErr_Format(PyExc_TypeError, "Value._backward must be callable, not '%.200s'",
                     ag_type_name(rule));
        return -1;
    }
    if (!v->dict) {
        PyObject *dict = PyDict_New(); /* a GC pass here may give self a dict of its own */
        if (!dict)
            return -1;
        if (!v->dict)
            v->dict = dict;
        else
            Py_DECREF(dict);
    }
    if (store_rule(v->dict, rule) < 0)
        return -1;
    ag_mark_state(self);
    ag_note_held_objects(self); /* a closure: micrograd's refers to its own Value */
    ag_node_at(VALUE_ID(self))->flags |= AG_FLAG_PYRULE;
    ag_note_rule_edit();
    return 0;
}

static PyGetSetDef getset[] = {
    {"data", get_data, set_data, "the value (a float)", NULL},
    {"grad", get_grad, set_grad, "d root / d this value, filled by backward() (a float)", NULL},
    {"label", get_label, set_label, "a name for drawings (pyautograd.viz)", NULL},
    {"_prev", get_prev, NULL, "the Values this one was computed from, as a set (micrograd's)", NULL},
    {"_inputs", get_inputs, NULL, "the Values this one was computed from, in operand order", NULL},
    {"_op", get_op, NULL, "the op that made this Value, as micrograd shows it ('+', '**2', ...)", NULL},
    {"_backward", get_backward, set_backward, "this node's chain-rule step (settable, as in micrograd)", NULL},
    {"_id", get_id, NULL, "the id of this Value's node in the C arena", NULL},
    {"__dict__", get_dict, set_dict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- arithmetic: one slot or method per row of the op table ---- */

static PyObject *inputs_of_failure(PyObject *a, PyObject *b)
{
    return b ? Py_BuildValue("(OO)", a, b) : Py_BuildValue("(O)", a);
}

/* ---- the ops micrograd makes of others, on a class that overrides those ----
 * micrograd's __radd__ and __rmul__ are `self + other` and `self * other`; its -x is
 * x * -1, x - y is x + (-y), x / y is x * y**-1 (and 1 - x, 1 / x the same, mirrored).
 * So a class that overrides __add__, __mul__, __pow__ or __neg__ (a subclass, or Value
 * patched) gets 1 + x, 2 * x, sum(), -x, x - y and x / y through its own, and its own
 * class back. The slot stays ours unless a class on the way defines one of them in Python;
 * only then is the method looked up. */
static PyObject *binary_ADD(PyObject *a, PyObject *b);
static PyObject *binary_MUL(PyObject *a, PyObject *b);
static PyObject *ternary_POW(PyObject *a, PyObject *b, PyObject *mod);
static PyObject *unary_NEG(PyObject *a);
static PyObject *add_name, *mul_name, *pow_name, *neg_name, *relu_name; /* interned */
static PyObject *own_add, *own_mul, *own_pow, *own_neg, *own_relu;       /* as Value was made */

/* Whether value's class has an __add__ (op AG_ADD), __mul__ (AG_MUL), __pow__ (AG_POW)
 * or __neg__ (AG_NEG) of its own (looked up as the class holds it, through Python's
 * cache of class attributes: no Python code runs). */
static int overridden(int op, PyObject *value)
{
    PyNumberMethods *nb = Py_TYPE(value)->tp_as_number;
    int ours = op == AG_ADD ? nb->nb_add == binary_ADD
             : op == AG_MUL ? nb->nb_multiply == binary_MUL
             : op == AG_POW ? nb->nb_power == ternary_POW
                            : nb->nb_negative == unary_NEG;
    if (ours)
        return 0;
    PyObject *name = op == AG_ADD ? add_name : op == AG_MUL ? mul_name : op == AG_POW ? pow_name : neg_name;
    PyObject *own = op == AG_ADD ? own_add : op == AG_MUL ? own_mul : op == AG_POW ? own_pow : own_neg;
    return _PyType_Lookup(Py_TYPE(value), name) != own;
}

/* Whether o is a Value whose class computes micrograd's composite ops through its own. */
static int composes_its_own(PyObject *o)
{
    return ag_is_value(o)
           && (overridden(AG_ADD, o) || overridden(AG_MUL, o) || overridden(AG_POW, o) || overridden(AG_NEG, o));
}

/* -x as micrograd makes it: x * -1. */
static PyObject *negated(PyObject *x)
{
    PyObject *minus_one = PyLong_FromLong(-1), *out = NULL;
    if (minus_one)
        out = PyNumber_Multiply(x, minus_one);
    Py_XDECREF(minus_one);
    return out;
}

/* a - b as a + (-b), a / b as a * b**-1, through Python's operators: whatever a's and
 * b's classes (or a number's) do for them runs, as in micrograd. A float or an int b is
 * inverted in IEEE arithmetic (Python's 0.0 ** -1 raises; our x / 0.0 is inf), to the
 * same bits as Python's b ** -1 wherever that does not raise. */
static PyObject *composed(int op, PyObject *a, PyObject *b)
{
    PyObject *minus_one = NULL, *inverse = NULL;
    double x;
    if (op == AG_SUB)
        inverse = PyNumber_Negative(b);
    else if ((PyFloat_CheckExact(b) || PyLong_CheckExact(b)) && ag_as_double(b, &x) > 0)
        inverse = PyFloat_FromDouble(pow(x, -1.0));
    else if (!PyErr_Occurred() && (minus_one = PyLong_FromLong(-1)))
        inverse = PyNumber_Power(b, minus_one, Py_None);
    Py_XDECREF(minus_one);
    if (!inverse)
        return NULL;
    PyObject *out = op == AG_SUB ? PyNumber_Add(a, inverse) : PyNumber_Multiply(a, inverse);
    Py_DECREF(inverse);
    return out;
}

/* Whether Value's +, * and relu are still its own: pyautograd.nn's layers compute
 * with them in C, which a program that patched one of them would not get (micrograd's
 * Neuron calls them). Python rewrites a class's number slots when a dunder is set on it,
 * so + and * are two pointer compares (patching __radd__ or __rmul__ counts too); relu is
 * looked up through Python's cache of class attributes (_PyType_Lookup: no Python code,
 * a few loads while Value's dict is unchanged). */
int ag_value_ops_ours(void)
{
    PyNumberMethods *nb = ag_value_type->tp_as_number;
    return nb->nb_add == binary_ADD && nb->nb_multiply == binary_MUL
           && _PyType_Lookup(ag_value_type, relu_name) == own_relu;
}

/* Whether w * o, for a Value w, is Value's own product: o is not a Value of a class
 * with a * of its own (micrograd's wi * xi calls a subclass's __rmul__ first). */
int ag_multiplies_as_value(PyObject *o)
{
    return !ag_is_value(o) || Py_TYPE(o)->tp_as_number->nb_multiply == binary_MUL;
}

AG_INLINE PyObject *apply_binary(int op, const char *symbol, PyObject *a, PyObject *b)
{
    int a_is_value = ag_is_value(a), b_is_value = ag_is_value(b);
    double constant = 0.0;
    if (!a_is_value && (op == AG_ADD || op == AG_MUL) && overridden(op, b)) /* number + x: x.__radd__ */
        return op == AG_ADD ? PyNumber_Add(b, a) : PyNumber_Multiply(b, a);
    if (!a_is_value || !b_is_value) {
        int found = ag_as_double(a_is_value ? b : a, &constant);
        if (found < 0)
            return NULL;
        if (found == 0)
            Py_RETURN_NOTIMPLEMENTED;
    }
    if ((op == AG_SUB || op == AG_DIV) && (composes_its_own(a) || composes_its_own(b)))
        return composed(op, a, b);
    PyObject *out = value_alloc();
    if (!out)
        return NULL;
    ag_id id = a_is_value && b_is_value ? ag_apply(op, VALUE_ID(a), VALUE_ID(b))
             : ag_apply_const(op, VALUE_ID(a_is_value ? a : b), constant, !a_is_value);
    return id ? value_own(out, id) : (Py_DECREF(out), ag_raise_failure(symbol, inputs_of_failure(a, b)));
}

AG_INLINE PyObject *apply_unary(int op, const char *name, PyObject *a)
{
    if (op == AG_NEG && composes_its_own(a))
        return negated(a);
    PyObject *out = value_alloc();
    if (!out)
        return NULL;
    ag_id id = ag_apply(op, VALUE_ID(a), 0);
    return id ? value_own(out, id) : (Py_DECREF(out), ag_raise_failure(name, inputs_of_failure(a, NULL)));
}

/* v.leaky_relu(slope=0.01): the slope becomes the op's constant second input. */
#define AG_DEFAULT_SLOPE 0.01 /* torch.nn.functional.leaky_relu's */

static PyObject *apply_with_slope(int op, const char *name, PyObject *a, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"slope", NULL};
    char format[64];
    double slope = AG_DEFAULT_SLOPE;
    PyObject *given = NULL;
    PyOS_snprintf(format, sizeof format, "|O:%s", name);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, names, &given))
        return NULL;
    int found = given ? ag_as_double(given, &slope) : 1;
    if (found <= 0) {
        if (found == 0)
            PyErr_Format(PyExc_TypeError, "%s() slope must be a real number, not '%.200s'", name, ag_type_name(given));
        return NULL;
    }
    PyObject *out = value_alloc();
    if (!out)
        return NULL;
    ag_id id = ag_apply_const(op, VALUE_ID(a), slope, 0);
    return id ? value_own(out, id) : (Py_DECREF(out), ag_raise_failure(name, inputs_of_failure(a, NULL)));
}

/* pyautograd.maximum(a, b): Values or real numbers, at least one a Value. */
static PyObject *apply_function(int op, const char *name, PyObject *args)
{
    PyObject *a, *b;
    if (!PyArg_UnpackTuple(args, name, 2, 2, &a, &b))
        return NULL;
    if (!ag_is_value(a) && !ag_is_value(b)) {
        PyErr_Format(PyExc_TypeError, "%s() takes two Values, or a Value and a real number, not '%.200s' "
                     "and '%.200s'", name, ag_type_name(a), ag_type_name(b));
        return NULL;
    }
    PyObject *out = apply_binary(op, name, a, b);
    if (out == Py_NotImplemented) {
        Py_DECREF(out);
        PyErr_Format(PyExc_TypeError, "%s() takes Values or real numbers, not '%.200s'", name,
                     ag_type_name(ag_is_value(a) ? b : a));
        return NULL;
    }
    return out;
}

/* Each row gets a binary, a ternary (for the power slot's pow(a, b, mod)), a unary, a
 * method, a method with a slope and a module function; the table's `python` column says
 * which one Python reaches. */
#define AG_OP_FUNCTIONS(E, name, sym, arity, py, fwd, da, db)                                  \
    static PyObject *binary_##E(PyObject *a, PyObject *b) { return apply_binary(AG_##E, sym, a, b); } \
    static PyObject *ternary_##E(PyObject *a, PyObject *b, PyObject *mod)                      \
    {                                                                                          \
        if (mod != Py_None) {                                                                  \
            PyErr_SetString(PyExc_TypeError, "pow() 3rd argument not allowed for Value");      \
            return NULL;                                                                       \
        }                                                                                      \
        return binary_##E(a, b);                                                               \
    }                                                                                          \
    static PyObject *unary_##E(PyObject *a) { return apply_unary(AG_##E, name, a); }           \
    static PyObject *method_##E(PyObject *a, PyObject *unused) { (void)unused; return unary_##E(a); } \
    static PyObject *slope_##E(PyObject *a, PyObject *args, PyObject *kwargs)                  \
    {                                                                                          \
        return apply_with_slope(AG_##E, name, a, args, kwargs);                                \
    }                                                                                          \
    static PyObject *function_##E(PyObject *module, PyObject *args)                            \
    {                                                                                          \
        (void)module;                                                                          \
        return apply_function(AG_##E, name, args);                                             \
    }
AG_ELEMENTWISE_OPS(AG_OP_FUNCTIONS)

/* The table's `python` column, as type slot numbers (0: not a slot). */
#define AG_SLOT_nb_add Py_nb_add
#define AG_SLOT_nb_subtract Py_nb_subtract
#define AG_SLOT_nb_multiply Py_nb_multiply
#define AG_SLOT_nb_true_divide Py_nb_true_divide
#define AG_SLOT_nb_power Py_nb_power
#define AG_SLOT_nb_negative Py_nb_negative
#define AG_SLOT_method 0
#define AG_SLOT_method_slope 0
#define AG_SLOT_function 0
#define AG_SLOT_internal 0
#define AG_IS_METHOD_nb_add 0
#define AG_IS_METHOD_nb_subtract 0
#define AG_IS_METHOD_nb_multiply 0
#define AG_IS_METHOD_nb_true_divide 0
#define AG_IS_METHOD_nb_power 0
#define AG_IS_METHOD_nb_negative 0
#define AG_IS_METHOD_method 1
#define AG_IS_METHOD_method_slope 2
#define AG_IS_METHOD_function 3
#define AG_IS_METHOD_internal 0

typedef struct op_entry {
    const char *name;
    int arity, slot, is_method;
    binaryfunc binary;
    ternaryfunc ternary;
    unaryfunc unary;
    PyCFunction method;
    PyCFunctionWithKeywords slope;
    PyCFunction function;
} op_entry;

#define AG_OP_ENTRY(E, name, sym, arity, py, fwd, da, db) \
    {name, arity, AG_SLOT_##py, AG_IS_METHOD_##py, binary_##E, ternary_##E, unary_##E, method_##E, \
     slope_##E, function_##E},
static const op_entry op_entries[] = {AG_ELEMENTWISE_OPS(AG_OP_ENTRY)};
#define AG_N_ELEMENTWISE (sizeof op_entries / sizeof op_entries[0])

PyMethodDef ag_op_functions[AG_N_ELEMENTWISE + 1]; /* the `function` rows, for the module */

/* ---- whole-graph work ---- */

static PyObject *value_backward(PyObject *self, PyObject *unused)
{
    (void)unused;
    return none_or_raise(ag_backward(VALUE_ID(self)), "backward", self);
}

static PyObject *value_forward(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (ag_forward(VALUE_ID(self)))
        return ag_raise_failure("forward", Py_BuildValue("(O)", self));
    return PyFloat_FromDouble(ag_node_at(VALUE_ID(self))->data);
}

/* The attributes a pickle or copy carries: a copy of the dict without _backward (a
 * restored Value is a leaf: it has no graph to run a rule over), or None. */
static PyObject *value_getstate(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *dict = ((ValueObject *)self)->dict;
    if (!dict || PyDict_GET_SIZE(dict) == 0)
        Py_RETURN_NONE;
    Py_INCREF(dict); /* copying may compare keys: a key's __eq__ may replace the Value's dict */
    PyObject *state = PyDict_Copy(dict);
    Py_DECREF(dict);
    if (state && PyDict_DelItem(state, ag_backward_name) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            Py_CLEAR(state);
        else
            PyErr_Clear();
    }
    if (state && PyDict_GET_SIZE(state) == 0) {
        Py_DECREF(state);
        Py_RETURN_NONE;
    }
    return state;
}

static PyObject *value_repr(PyObject *self)
{
    const ag_node *node = ag_node_at(VALUE_ID(self));
    PyObject *data = PyFloat_FromDouble(node->data), *grad = PyFloat_FromDouble(node->grad);
    PyObject *text = data && grad ? PyUnicode_FromFormat("Value(data=%R, grad=%R)", data, grad) : NULL;
    Py_XDECREF(data);
    Py_XDECREF(grad);
    return text;
}

/* ---- the type ---- */

static PyMemberDef members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(ValueObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ValueObject, weakrefs), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject *ag_make_value_type(void)
{
    static PyMethodDef methods[AG_N_ELEMENTWISE + 4];
    static PyType_Slot slots[AG_N_ELEMENTWISE + 16];
    size_t n_methods = 0, n_slots = 0, n_functions = 0;

    if (ag_bridge_init() < 0)
        return NULL;
    ag_backward_name = PyUnicode_InternFromString("_backward");
    data_name = PyUnicode_InternFromString("data");
    grad_name = PyUnicode_InternFromString("grad");
    if (!ag_backward_name || !data_name || !grad_name)
        return NULL;

    for (size_t i = 0; i < AG_N_ELEMENTWISE; i++) {
        const op_entry *op = &op_entries[i];
        if (op->slot == Py_nb_power)
            slots[n_slots++] = (PyType_Slot){op->slot, (void *)op->ternary};
        else if (op->slot && op->arity == 2)
            slots[n_slots++] = (PyType_Slot){op->slot, (void *)op->binary};
        else if (op->slot)
            slots[n_slots++] = (PyType_Slot){op->slot, (void *)op->unary};
        else if (op->is_method == 1)
            methods[n_methods++] = (PyMethodDef){op->name, op->method, METH_NOARGS,
                                                 "an op of the table in csrc/ops.h"};
        else if (op->is_method == 2)
            methods[n_methods++] = (PyMethodDef){op->name, (PyCFunction)(void (*)(void))op->slope,
                                                 METH_VARARGS | METH_KEYWORDS,
                                                 "an op of the table in csrc/ops.h (slope=0.01)"};
        else if (op->is_method == 3)
            ag_op_functions[n_functions++] = (PyMethodDef){op->name, op->function, METH_VARARGS,
                                                           "an op of the table in csrc/ops.h: name(a, b)"};
    }
    ag_op_functions[n_functions] = (PyMethodDef){NULL, NULL, 0, NULL};
    methods[n_methods++] = (PyMethodDef){"backward", value_backward, METH_NOARGS,
        "Adds d(self)/d(node) to .grad of every node this Value depends on (self gets +1).\n\n"
        "Like PyTorch, each call adds once; micrograd instead compounds interior grads when\n"
        "called twice. Zero the grads (Module.zero_grad) between steps."};
    methods[n_methods++] = (PyMethodDef){"forward", value_forward, METH_NOARGS,
        "Recomputes this Value and everything under it from the current leaf data.\n\n"
        "Replays the recorded graph in C: Python control flow is not re-run, branches\n"
        "inside ops (relu) are. Returns self.data."};
    methods[n_methods++] = (PyMethodDef){"__getstate__", value_getstate, METH_NOARGS,
        "the attributes a pickle carries (without _backward), or None"};
    methods[n_methods] = (PyMethodDef){NULL, NULL, 0, NULL};

    slots[n_slots++] = (PyType_Slot){Py_tp_methods, methods};
    slots[n_slots++] = (PyType_Slot){Py_tp_getset, getset};
    slots[n_slots++] = (PyType_Slot){Py_tp_members, members};
    slots[n_slots++] = (PyType_Slot){Py_tp_new, (void *)ag_value_new};
    slots[n_slots++] = (PyType_Slot){Py_tp_init, (void *)ag_value_init};
    slots[n_slots++] = (PyType_Slot){Py_tp_dealloc, (void *)value_dealloc};
    slots[n_slots++] = (PyType_Slot){Py_tp_traverse, (void *)value_traverse};
    slots[n_slots++] = (PyType_Slot){Py_tp_clear, (void *)value_clear};
    slots[n_slots++] = (PyType_Slot){Py_tp_getattro, (void *)value_getattro};
    slots[n_slots++] = (PyType_Slot){Py_tp_setattro, (void *)value_setattro};
    slots[n_slots++] = (PyType_Slot){Py_tp_repr, (void *)value_repr};
    slots[n_slots++] = (PyType_Slot){Py_tp_doc,
        "Value(data, _children=(), _op='', label='', local_grads=None)\n\n"
        "A scalar that remembers how it was computed, so backward() can differentiate it.\n"
        "micrograd's signature: `_children` and `_op` make a hand-built node (give it a\n"
        "`_backward` to pass gradients); with `local_grads` (or numbers as the third\n"
        "argument, microgpt's way) its local derivatives are those numbers."};
    slots[n_slots] = (PyType_Slot){0, NULL};

    static PyType_Spec spec = {"pyautograd.engine.Value", sizeof(ValueObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, NULL};
    spec.slots = slots;
    PyTypeObject *type = (PyTypeObject *)PyType_FromSpec(&spec);
    if (!type)
        return NULL;
    type->tp_vectorcall = ag_value_vectorcall;
    /* Python's own messages print tp_name: "unsupported operand type(s) for +: 'Value'
     * and 'str'", as for a class written in Python (__module__ keeps the full name). */
    type->tp_name = "Value";
    add_name = PyUnicode_InternFromString("__add__");
    mul_name = PyUnicode_InternFromString("__mul__");
    pow_name = PyUnicode_InternFromString("__pow__");
    neg_name = PyUnicode_InternFromString("__neg__");
    relu_name = PyUnicode_InternFromString("relu");
    PyObject **own[] = {&own_add, &own_mul, &own_pow, &own_neg, &own_relu};
    PyObject *names[] = {add_name, mul_name, pow_name, neg_name, relu_name};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *own[i] = names[i] ? PyDict_GetItemWithError(type->tp_dict, names[i]) : NULL;
        if (!*own[i]) { /* never without an error: the slots and methods above make them */
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_SystemError, "Value was made without __add__, __mul__, __pow__, __neg__ or relu");
            Py_DECREF(type);
            return NULL;
        }
        Py_INCREF(*own[i]);
    }
    ag_value_type = type;
    return type;
}
