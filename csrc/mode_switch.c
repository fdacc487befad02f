/* ModeSwitch: the base of no_grad() and detect_anomaly() (modes.py), whose __enter__
 * and __exit__ are C methods. Python runs a pending signal handler (a Ctrl-C) between
 * bytecodes, and so inside an __enter__ or __exit__ written in Python: after the flag
 * was set and before __enter__ returned (no __exit__ then follows), or before __exit__
 * put the flag back. Either left the mode on for the thread, and no_grad stuck on makes
 * every later op record nothing. A C method runs no bytecode: the flag changes with the
 * call, and the with statement's protection covers the block from there. */
#include "python.h"

typedef struct {
    PyObject_HEAD
    int anomaly; /* which flag: detect_anomaly's, else no_grad's */
    int saved;   /* the flag as __enter__ found it */
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

static PyObject *mode_switch_enter(PyObject *op, PyObject *unused)
{
    ModeSwitchObject *self = (ModeSwitchObject *)op;
    (void)unused;
    self->saved = flag(self->anomaly);
    set_flag(self->anomaly, self->anomaly); /* anomaly mode on; grad off */
    return Py_NewRef(op);
}

static PyObject *mode_switch_exit(PyObject *op, PyObject *args)
{
    ModeSwitchObject *self = (ModeSwitchObject *)op;
    (void)args;
    set_flag(self->anomaly, self->saved);
    Py_RETURN_FALSE;
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
