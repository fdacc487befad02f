/* What crosses between Python and the core, in both directions: numbers in (any real
 * number, numpy's bool), text in (labels and op text, kept as C strings), and failures
 * out (a core call's status becomes the exception engine._raise_failure words). The
 * Value type (value.c) and every C-API file use these. */
#include <string.h>
#include "python.h"

static PyObject *failure_hook; /* engine._raise_failure(what, inputs, node, node_op, status, value, live) */
static PyObject *real_abc;     /* numbers.Real: numpy scalars, Fraction, ... */

int ag_bridge_init(void)
{
    PyObject *numbers = PyImport_ImportModule("numbers");
    if (!numbers)
        return -1;
    real_abc = PyObject_GetAttrString(numbers, "Real");
    Py_DECREF(numbers);
    return real_abc ? 0 : -1;
}

/* ---- failures out: the exception for a failed core call ---- */

int ag_set_failure_hook(PyObject *hook)
{
    Py_XINCREF(hook);
    Py_XSETREF(failure_hook, hook);
    return 0;
}

PyObject *ag_raise_failure(const char *what, PyObject *inputs)
{
    int status = ag_last_error();
    ag_id bad = ag_error_node();
    PyObject *node = NULL;
    const char *node_op = "";
    if ((status == AG_EANOMALY || status == AG_ENOREPLAY || status == AG_EPYRULE || status == AG_ECHOSEN) && bad
        && ag_node_checked(bad)) {
        node_op = ag_op_name(ag_node_at(bad)->op);
        node = ag_value_of(bad);
    }
    if (!PyErr_Occurred() && failure_hook && inputs) {
        PyObject *result = PyObject_CallFunction(failure_hook, "sOOsidn", what, inputs,
                                                 node ? node : Py_None, node_op, status,
                                                 ag_error_value(), (Py_ssize_t)ag_live_nodes());
        Py_XDECREF(result);
    }
    Py_XDECREF(node);
    Py_XDECREF(inputs);
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_RuntimeError, "pyautograd: %s failed", what);
    return NULL;
}

/* ---- numbers ---- */

/* numpy's bool scalar is not a numbers.Real (numpy registers its ints and floats with
 * the ABCs, not its bool), yet Value(True) takes Python's bool: numpy's is taken the
 * same way. It is known by its type's name, so numpy is never imported for it; the
 * check runs only for what is neither a float, an int nor a numbers.Real. */
static int is_numpy_bool(PyObject *o)
{
    const char *name = Py_TYPE(o)->tp_name;
    return strcmp(name, "numpy.bool") == 0 || strcmp(name, "numpy.bool_") == 0; /* 2.x, 1.x */
}

int ag_as_double(PyObject *o, double *x)
{
    if (PyFloat_CheckExact(o)) {
        *x = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (PyLong_Check(o)) {
        *x = PyLong_AsDouble(o);
    } else {
        int real = PyObject_IsInstance(o, real_abc);
        if (real < 0)
            return real;
        if (real == 0) {
            if (!is_numpy_bool(o))
                return 0;
            int truth = PyObject_IsTrue(o);
            if (truth < 0)
                return -1;
            *x = truth;
            return 1;
        }
        *x = PyFloat_AsDouble(o);
    }
    return (*x == -1.0 && PyErr_Occurred()) ? -1 : 1;
}

int ag_is_number(PyObject *o)
{
    if (PyFloat_Check(o) || PyLong_Check(o) || is_numpy_bool(o))
        return 1;
    return PyObject_IsInstance(o, real_abc);
}

/* ---- text in ---- */

const char *ag_text_utf8(PyObject *text, const char *what)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 && strlen(utf8) != (size_t)size) {
        PyErr_Format(PyExc_ValueError, "%s must not contain NUL characters", what);
        return NULL;
    }
    return utf8;
}
