/* What the files that speak the Python C-API share: the Value object, how nodes become
 * Values, and taking many Values at once. Included by value.c, value_new.c, pins.c
 * (the Value type), node_list.c, layer_weights.c, graph.c, walks.c (many Values at once)
 * and python.c (the glue that publishes them); never by the C core.
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
    uint16_t tracked;  /* 1 once the cyclic GC tracks it (ag_mark_state), which it then
                          does until the Value dies: dealloc's fast path reads this
                          instead of asking the GC, a call per op's result */
    uint16_t placeholder; /* 1 while a subclass instance has __new__'s placeholder leaf,
                             which its first Value.__init__ replaces (value_new.c) */
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
PyObject *ag_living_value(ag_node *node); /* node->py unless it is dying (borrowed), or NULL */
/* The Values of n nodes the caller keeps alive, as a tuple (or a list): every Value is
 * made before the container, so Python code that a GC pass runs meanwhile never meets a
 * container with empty slots (invariant 10). */
PyObject *ag_values_of(const ag_id *ids, size_t n, int as_tuple);
/* Raises the exception for a failed core call: `what` names the operation, inputs
 * (stolen, may be NULL) are the operands shown in the message. Returns NULL. */
PyObject *ag_raise_failure(const char *what, PyObject *inputs);

/* text (a str) as UTF-8 for the label and op-text maps, which keep C strings: NULL with
 * ValueError naming `what` when it holds a NUL, which would cut it short. */
const char *ag_text_utf8(PyObject *text, const char *what);

/* o as a double: 1 when o is a real number, 0 when it is not (nothing raised),
 * -1 when converting it raised (e.g. OverflowError). */
int ag_as_double(PyObject *o, double *x);
/* 1 when o is something ag_as_double takes (a real number or numpy's bool), 0 when
 * not, -1 with an exception; converts nothing. */
int ag_is_number(PyObject *o);

/* node_list.c: taking many Values at once (invariant 7). What a caller passed, held by
 * us: items (a tuple) and, for each, either a Value (kept alive by items) or a number
 * to become a leaf. */
typedef struct gathered {
    PyObject *items;
    Py_ssize_t n;
    double *numbers;    /* numbers[i] when is_number[i] */
    uint8_t *is_number;
    size_t n_numbers;
} gathered;

/* Copies an iterable of Values and real numbers (only Values if values_only): -1 with a
 * TypeError naming `what` otherwise. Runs Python code; makes no node. */
int ag_gather(PyObject *iterable, const char *what, int values_only, gathered *g);
void ag_gathered_free(gathered *g);
/* ids[i] for every item (a Value's node, borrowed, or a new leaf whose reference also
 * goes in leaves[]). Runs no Python code; on failure releases what it made. */
int ag_make_ids(const gathered *g, ag_id *ids, ag_id *leaves);
void ag_release_all(const ag_id *ids, size_t n);

/* An immutable list of nodes owning a reference to each. */
typedef struct {
    PyObject_VAR_HEAD
    ag_id ids[1];
} NodeListObject;

extern PyTypeObject *ag_node_list_type;
NodeListObject *ag_node_list_alloc(Py_ssize_t n);    /* ids all 0 */
PyObject *ag_node_list_from(PyObject *iterable, const char *what, int values_only);

/* mode_switch.c: the base of modes.py's no_grad and detect_anomaly. */
PyTypeObject *ag_make_mode_switch_type(void);

/* layer_weights.c: a Layer's weight rows (ag_row) for layer() and layers(). */
extern PyTypeObject *ag_layer_weights_type;
int ag_layer_weights_rows(PyObject *o, const char *what, ag_row *const **rows, size_t *nout, size_t *nin);

/* pins.c: pins the cyclic GC can see (invariant 6). A Value reports the pins it alone
 * holds the way down to (ag_visit_pins_held_alone, from its tp_traverse); Values that
 * may hold one, alone now or once the other holders die, are tracked by the GC: when made (ag_note_state_below, from ag_value_own),
 * and, when a node in use gets state that may refer to objects (ag_note_held_objects,
 * which sets ag_pin_holders_unknown), by ag_track_pin_holders before the next GC pass. */
extern int ag_pin_holders_unknown;
void ag_track_pin_holders(int full_pass); /* full_pass: gc.collect(), the oldest generation */
void ag_gc_pass_ended(void);
void ag_note_held_objects(PyObject *self);
/* A number or a string refers to no other object: an attribute that is one (Eureka's
 * p.m = 0.0) can make no cycle. */
int ag_holds_no_object(PyObject *o);
int ag_visit_pins_held_alone(ag_id id, visitproc visit, void *arg);

static inline void ag_track(ValueObject *v)
{
    if (!v->tracked) {
        PyObject_GC_Track((PyObject *)v);
        v->tracked = 1;
    }
}

/* pins.c: the live nodes flagged AG_FLAG_REACHES_STATE, counted down as they die (a
 * side table of the arena's); while there are none, a new Value needs no look below. */
extern size_t ag_nodes_reaching_state;
extern const struct ag_side_table ag_reaching_state_table;

AG_INLINE void ag_mark_reaches_state(ag_node *node)
{
    if (!(node->flags & AG_FLAG_REACHES_STATE)) {
        node->flags |= AG_FLAG_REACHES_STATE;
        ag_nodes_reaching_state++;
    }
}

/* pins.c: the Value gets Python state (attributes, a Python _backward, a subclass):
 * its node pins it while used, and the cyclic GC looks after it (invariant 8). A Value
 * only kept by its node (one _prev handed out) is pinned, not tracked: it holds no
 * Python reference, so it can be in no cycle until it gets state. */
void ag_mark_state(PyObject *self);
void ag_keep_by_node(PyObject *self);
PyObject *ag_rule_in(PyObject *dict); /* a Value dict's _backward (borrowed) or NULL; no Python */

/* A Value made over a node that reaches such state may come to hold a pin: the GC
 * tracks it, and its node keeps it while used (ag_mark_state), so that the node never
 * outlives it and it can report its node's share of the pins below (pins.c). */
AG_INLINE void ag_note_state_below(ValueObject *v, ag_node *node)
{
    if (!ag_nodes_reaching_state)
        return; /* most programs: no attribute that refers to an object, ever */
    uint16_t below = 0;
    if (!ag_op_is_nary(node->op)) {
        if (node->in[0])
            below |= ag_node_at(node->in[0])->flags;
        if (node->in[1])
            below |= ag_node_at(node->in[1])->flags;
    } else {
        size_t n;
        const ag_id *in = ag_inputs_of(node, &n);
        for (size_t i = 0; i < n; i++)
            below |= ag_node_at(in[i])->flags;
    }
    if (below & AG_FLAG_REACHES_STATE) {
        ag_mark_reaches_state(node);
        ag_mark_state((PyObject *)v);
    }
}

/* bridge.c: numbers and text in, failures out. */
int ag_bridge_init(void);

void ag_install_hooks(void);  /* ag_hooks (arena.h): pins and Python rules */

/* value_new.c: Value.__new__, Value.__init__ and the Value(x) fast path. */
PyObject *ag_value_new(PyTypeObject *type, PyObject *args, PyObject *kwargs);
int ag_value_init(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *ag_value_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* value.c, node_list.c, graph.c, walks.c: their types and functions, made and
 * published by python.c. */
PyTypeObject *ag_make_value_type(void);
int ag_value_ops_ours(void); /* Value's +, * and relu not patched: nn's layers may run in C */
int ag_multiplies_as_value(PyObject *o);
void ag_set_class_change_hook(PyObject *hook);
extern unsigned long ag_class_changes; /* Values that changed class (v.__class__ = C) so far */
PyTypeObject *ag_make_node_list_type(void);
PyTypeObject *ag_make_layer_weights_type(void);
extern PyMethodDef ag_graph_functions[], ag_walk_functions[], ag_op_functions[];
int ag_set_failure_hook(PyObject *hook);

#endif
