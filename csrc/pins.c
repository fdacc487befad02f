/* What the arena needs from Python (ag_hooks, arena.h): a node pinning its Value, the
 * check that frees a micrograd-style closure cycle when its pin goes, and running a
 * Python-written _backward in the sweep. And what makes a Value "carry Python state"
 * (mark_state): from then on its node pins it while the node is used (invariant 8), and
 * the cyclic GC looks after it. */
#include "python.h"

/* ---- pins: a node keeping its Value (and so its Python state) alive ---- */

static void pin(ag_node *node)
{
    node->flags |= AG_FLAG_PINNED;
    Py_INCREF((PyObject *)node->py);
}

/* ---- garbage that only its own state holds ----
 * A micrograd-style op makes a cycle: out -> its dict -> the _backward closure -> a cell
 * -> out. While out's node has users, the node's pin keeps out alive; when the last
 * user dies, out may be garbage that only that cycle holds. The cyclic GC would find it,
 * but only in its next pass, and each pass would free one level of a graph of such ops
 * (the level below is still pinned until the level above is freed). So when a pin
 * goes, the few objects around the Value are checked the way the GC checks a
 * generation: count the references each gets from inside the group; those with more
 * are held from outside, and so is whatever they reach; if the Value is not among
 * them, nothing outside holds it and clearing its dict frees the lot now. Checking a
 * smaller group than the whole cycle can only fail to free, never free wrongly. */

#define AG_GROUP_MAX 32     /* objects looked at around one Value */
#define AG_GROUP_REFCNT 4   /* objects held this often are left outside the group */

typedef struct group {
    PyObject *members[AG_GROUP_MAX];
    Py_ssize_t inside[AG_GROUP_MAX]; /* references from members */
    int held[AG_GROUP_MAX];          /* held from outside, directly or through members */
    int n;
} group;

static int group_index(const group *g, PyObject *o)
{
    for (int i = 0; i < g->n; i++)
        if (g->members[i] == o)
            return i;
    return -1;
}

static int group_add(PyObject *o, void *arg)
{
    group *g = arg;
    if (g->n < AG_GROUP_MAX && PyObject_GC_IsTracked(o) && Py_REFCNT(o) <= AG_GROUP_REFCNT
        && group_index(g, o) < 0)
        g->members[g->n++] = o;
    return 0;
}

static int group_count(PyObject *o, void *arg)
{
    group *g = arg;
    int i = group_index(g, o);
    if (i >= 0)
        g->inside[i]++;
    return 0;
}

static int group_hold(PyObject *o, void *arg)
{
    group *g = arg;
    int i = group_index(g, o);
    if (i >= 0 && !g->held[i]) {
        g->held[i] = 1;
        Py_TYPE(o)->tp_traverse(o, group_hold, g);
    }
    return 0;
}

/* An object the GC would finalize before freeing (a __del__): such a finalizer may
 * resurrect the group, which then must still be whole, so the GC's own pass, which
 * runs finalizers before it clears anything, is left to free it. */
static int has_finalizer(PyObject *o)
{
    return Py_TYPE(o)->tp_finalize != NULL || Py_TYPE(o)->tp_del != NULL;
}

/* v (with one reference of the caller's) is held only by the objects its dict reaches. */
static int held_only_by_its_state(PyObject *v)
{
    group g = {.members = {v}, .n = 1};
    for (int i = 0; i < g.n; i++) /* grows while walked: breadth-first */
        Py_TYPE(g.members[i])->tp_traverse(g.members[i], group_add, &g);
    for (int i = 0; i < g.n; i++)
        Py_TYPE(g.members[i])->tp_traverse(g.members[i], group_count, &g);
    g.inside[0]++; /* the caller's reference */
    for (int i = 0; i < g.n; i++)
        if (Py_REFCNT(g.members[i]) > g.inside[i] && !g.held[i]) {
            g.held[i] = 1;
            Py_TYPE(g.members[i])->tp_traverse(g.members[i], group_hold, &g);
        }
    if (g.held[0])
        return 0;
    for (int i = 0; i < g.n; i++)
        if (!g.held[i] && has_finalizer(g.members[i]))
            return 0;
    return 1;
}

static void unpin(ag_node *node)
{
    PyObject *v = node->py;
    node->flags &= (uint16_t)~AG_FLAG_PINNED;
    if (PyObject_GC_IsTracked(v) && held_only_by_its_state(v))
        Py_CLEAR(((ValueObject *)v)->dict); /* breaks the cycle: the group is freed */
    Py_DECREF(v); /* the Value may die here, and release the node */
}

/* The Value gets Python state: its node keeps it while anything else holds the node,
 * and the cyclic GC now looks after it. */
void ag_mark_state(PyObject *self)
{
    ag_node *node = ag_node_at(VALUE_ID(self));
    if (node->flags & AG_FLAG_PYSTATE)
        return;
    node->flags |= AG_FLAG_PYSTATE;
    if (!PyObject_GC_IsTracked(self)) /* a subclass instance is tracked from birth */
        PyObject_GC_Track(self);
    ((ValueObject *)self)->tracked = 1;
    if (node->refs > 1)
        pin(node);
}

/* The Python _backward in the node's Value's dict (borrowed), or NULL (an exception
 * set if looking raised). */
static PyObject *rule_of(ag_node *node)
{
    ValueObject *v = node->py;
    return v && v->dict ? PyDict_GetItemWithError(v->dict, ag_backward_name) : NULL;
}

static int has_rule(ag_node *node)
{
    PyObject *rule = rule_of(node);
    PyErr_Clear();
    return rule != NULL;
}

/* A Python _backward, called by the sweep (sweep.c) in the node's place in the order.
 * The node is the root or has users, so its Value, if it has one, is alive (held or
 * pinned). AG_ENORULE when there is none: the dict was handed out (vars(v)) and holds
 * no _backward, so the op's own rule runs. */
static int run_rule(ag_node *node)
{
    PyObject *self = node->py, *rule = rule_of(node);
    if (!rule)
        return PyErr_Occurred() ? AG_EPYTHON : AG_ENORULE;
    Py_INCREF(rule);
    Py_INCREF(self); /* the rule may drop every other reference */
    PyObject *result = PyObject_CallNoArgs(rule);
    Py_DECREF(self);
    Py_DECREF(rule);
    if (!result)
        return AG_EPYTHON;
    Py_DECREF(result);
    return AG_OK;
}

void ag_install_hooks(void)
{
    ag_hooks = (ag_python_hooks){pin, unpin, run_rule, has_rule};
}
