/* What the files that speak the Python C-API share: the Value object and how nodes
 * become Values. Included by value.c (the Value type), graph.c (NodeList, fused ops,
 * graph walks) and python.c (the glue that publishes them); never by the C core.
 *
 * Every function here runs with the GIL held (build_ext.py keeps it in cffi calls). */
#ifndef AG_PYTHON_H
#define AG_PYTHON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "arena.h"
#include "core.h"
#include "nodes.h"

/* A Value: its node's id, and the Python side a micrograd Value has (attributes,
 * weak references). 56 bytes with the GC header; a Value that carries no attributes is
 * never tracked by the cyclic GC (it holds no Python references), like a tuple of
 * numbers. The node holds a borrowed pointer back (ag_node.py, invariant 8). */
typedef struct {
    PyObject_HEAD
    ag_id id;          /* one reference to the node; 0 only while being made */
    PyObject *dict;    /* attributes, a Python-written _backward; NULL until set */
    PyObject *weakrefs;
} ValueObject;

#define VALUE_ID(o) (((ValueObject *)(o))->id)

extern PyTypeObject *ag_value_type;  /* pyautograd.engine.Value */

static inline int ag_is_value(PyObject *o) { return PyObject_TypeCheck(o, ag_value_type); }

/* o's class name as Python's own messages show it ('Decimal', not 'decimal.Decimal'). */
static inline const char *ag_type_name(PyObject *o) { return _PyType_Name(Py_TYPE(o)); }

/* value.c: Values for nodes. */
extern PyObject *ag_backward_name;        /* "_backward", interned */
PyObject *ag_value_alloc(void);           /* a Value with no node yet, for ag_value_own */
PyObject *ag_value_own(PyObject *v, ag_id id); /* v takes the new node id's reference; on
                                              id 0 (a failed op) drops v and returns NULL */
PyObject *ag_value_of(ag_id id);          /* the node's Value (new reference): the one that
                                              exists, or a new one (invariant 8) */
/* Raises the exception for a failed core call: `what` names the operation, inputs
 * (stolen, may be NULL) are the operands shown in the message. Returns NULL. */
PyObject *ag_raise_failure(const char *what, PyObject *inputs);

/* o as a double: 1 when o is a real number, 0 when it is not (nothing raised),
 * -1 when converting it raised (e.g. OverflowError). */
int ag_as_double(PyObject *o, double *x);

/* pins.c: the Value gets Python state (attributes, a Python _backward, a subclass):
 * its node pins it while used, and the cyclic GC looks after it (invariant 8). */
void ag_mark_state(PyObject *self);
void ag_install_hooks(void);  /* ag_hooks (arena.h): pins and Python rules */

/* value_new.c: Value.__new__, Value.__init__ and the Value(x) fast path. */
PyObject *ag_value_new(PyTypeObject *type, PyObject *args, PyObject *kwargs);
int ag_value_init(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *ag_value_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* value.c, graph.c: their types and functions, made and published by python.c. */
PyTypeObject *ag_make_value_type(void);
PyTypeObject *ag_make_node_list_type(void);
extern PyMethodDef ag_graph_functions[];
int ag_set_failure_hook(PyObject *hook);

#endif
