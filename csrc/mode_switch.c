/* ModeSwitch: the base of no_grad() and detect_anomaly() (modes.py), whose __enter__
 * and __exit__ are C methods. Python runs a pending signal handler (a Ctrl-C) between
 * bytecodes, and so inside an __enter__ or __exit__ written in Python: after the flag
 * was set and before __enter__ returned (no __exit__ then follows), or before __exit__
 * put the flag back. Either left the mode on for the thread, and no_grad stuck on makes
 * every later op record nothing. A C method runs no bytecode: the flag changes with the
 * call, and the with statement's protection covers the block from there. */
#include "python.h"

#define AG_MODE_DEPTH 64 /* nested withs of one object: the flags its enters found */

typedef struct {
    PyObject_HEAD
    int anomaly;    /* which flag: detect_anomaly's, else no_grad's */
    int depth;      /* withs of this object entered and not yet left */
    uint64_t saved; /* bit k: the flag as the (k+1)-th of them found it */
} ModeSwitchObject;

static int flag(int anomaly) { return anomaly ? ag_anomaly_mode() : ag_grad_enabled(); }

static void set_flag(int anomaly, int on)
{
    if (anomaly)
        ag_set_anomaly_mode(on);
    else
        ag_set_grad_enabled(on);
}

/* The class says which flag, once, as the instance is made: its _anomaly attribute. */
static PyObject *mode_switch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    PyObject *anomaly = PyObject_GetAttrString((PyObject *)type, "_anomaly");
    int is_anomaly = anomaly ? PyObject_IsTrue(anomaly) : -1;
    Py_XDECREF(anomaly);
    if (is_anomaly < 0)
        return NULL;
    ModeSwitchObject *self = (ModeSwitchObject *)type->tp_alloc(type, 0);
    if (self)
        self->anomaly = is_anomaly;
    return (PyObject *)self;
}

/* One object may be entered again inside its own with (m = no_grad(); with m: with m:):
 * each exit puts back what its own enter found. */
static PyObject *mode_switch_enter(PyObject *op, PyObject *unused)
{
    ModeSwitchObject *self = (ModeSwitchObject *)op;
    (void)unused;
    if (self->depth == AG_MODE_DEPTH) {
        PyErr_Format(PyExc_RuntimeError, "%s entered %d times inside itself: use a new one", Py_TYPE(op)->tp_name,
                     AG_MODE_DEPTH);
        return NULL;
    }
    uint64_t bit = (uint64_t)1 << self->depth++;
    self->saved = flag(self->anomaly) ? self->saved | bit : self->saved & ~bit;
    set_flag(self->anomaly, self->anomaly); /* anomaly mode on; grad off */
    return Py_NewRef(op);
}

static PyObject *mode_switch_exit(PyObject *op, PyObject *args)
{
    ModeSwitchObject *self = (ModeSwitchObject *)op;
    (void)args;
    if (self->depth == 0) { /* nothing to put back: turning the mode off would be a guess */
        PyErr_Format(PyExc_RuntimeError, "%s.__exit__ without __enter__", Py_TYPE(op)->tp_name);
        return NULL;
    }
    set_flag(self->anomaly, (int)(self->saved >> --self->depth & 1));
    Py_RETURN_FALSE;
}

/* A copy or a pickle is a new mode object of the same class, not entered. */
static PyObject *mode_switch_reduce(PyObject *op, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(O())", (PyObject *)Py_TYPE(op));
}

static void mode_switch_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyTypeObject *ag_make_mode_switch_type(void)
{
    static PyMethodDef methods[] = {
        {"__enter__", mode_switch_enter, METH_NOARGS, "sets the mode's flag for this thread"},
        {"__exit__", mode_switch_exit, METH_VARARGS, "puts the flag back as __enter__ found it"},
        {"__reduce__", mode_switch_reduce, METH_NOARGS, "a new, unentered mode object of this class"},
        {NULL, NULL, 0, NULL},
    };
    static PyType_Slot slots[] = {
        {Py_tp_new, (void *)mode_switch_new},
        {Py_tp_dealloc, (void *)mode_switch_dealloc},
        {Py_tp_methods, methods},
        {Py_tp_doc, "The base of no_grad and detect_anomaly: a per-thread flag set and put back in C."},
        {0, NULL},
    };
    static PyType_Spec spec = {"pyautograd._ag.ModeSwitch", sizeof(ModeSwitchObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, slots};
    return (PyTypeObject *)PyType_FromSpec(&spec);
}
