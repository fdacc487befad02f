/* What the arena needs from Python (ag_hooks, arena.h): a node pinning its Value, the
 * check that frees a micrograd-style closure cycle when its pin goes, pins the cyclic GC
 * can see through, and running a Python-written _backward in the sweep. And what makes a Value "carry Python state"
 * (mark_state): from then on its node pins it while the node is used (invariant 8), and
 * the cyclic GC looks after it. */
#include "python.h"
#include "sweep.h"

/* ---- pins: a node keeping its Value (and so its Python state) alive ---- */

/* One reference to the Value for each holder of the node besides the Value (invariant
 * 8): a holder's share is what the GC sees reported for it (invariant 6, below). */
static void pin(ag_node *node)
{
    node->flags |= AG_FLAG_PINNED;
    Py_INCREF((PyObject *)node->py);
}

/* The node just got Python state: a reference for each holder it already has. */
static void pin_holders(ag_node *node)
{
    for (uint32_t holders = node->refs - 1; holders; holders--)
        pin(node);
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
    if (node->refs > 1) { /* others hold the node still: so do they the Value */
        Py_DECREF(v);     /* never the last reference (one per holder left) */
        return;
    }
    node->flags &= (uint16_t)~AG_FLAG_PINNED;
    if (PyObject_GC_IsTracked(v) && held_only_by_its_state(v))
        Py_CLEAR(((ValueObject *)v)->dict); /* breaks the cycle: the group is freed */
    Py_DECREF(v); /* the Value may die here, and release the node */
}

/* ---- pins the cyclic GC can see (invariant 6) ----
 * A pin is a reference from a node to its Value that no Python object holds, so the GC
 * cannot see it, and a cycle through one (w.reg = w * w: w, its dict, the product's
 * Value, its node, w's node, the pin, w) would never be collected. So a pin holds one
 * reference for each holder of the node besides the Value (invariant 8), and the Value
 * that alone holds the way down to a holder reports that holder's references as its
 * own (value.c's value_traverse): its node is held by it alone, and each node on the
 * way only by the one above it, so those references go exactly when that Value goes.
 * Each holder is on at most one such way (ways held alone never meet), so the GC never
 * sees more references than the pin holds; a holder that nobody reports (a list of
 * ids, a row, a node held by others besides the Value's own nodes) keeps the Value
 * reachable: a cycle left uncollected, never something alive freed. With several
 * holders reported (w.reg = w * w and w.sq = w + 1), one GC pass frees the lot. The
 * walk goes as deep and wide as the graph, into a node that several of the Value's own
 * nodes hold once it has met all their uses (a layer's rows aside: there it stops, and
 * leaves a cycle uncollected). Such a Value must be tracked by the GC: it is when it is made over
 * a node whose Value's state may refer to objects (AG_FLAG_REACHES_STATE: an attribute
 * that is not a number or a string, a Python _backward, a dict handed out), or over a
 * node made so; when a node already in use gets such state, the next GC pass looks for
 * the holders first (ag_track_pin_holders). State of numbers only (Eureka's p.m = 0.0)
 * can make no cycle, and the Values made over it stay out of the GC's work. */

#define AG_PIN_LOOKS 256 /* inputs looked at below one Value when a walk is not alone */

/* Puts id at stack[depth], growing the stack as needed; 0 if it cannot grow. */
static int push(buffer *stack, size_t depth, ag_id id)
{
    if (ag_reserve(stack, depth + 1, sizeof(ag_id)) != AG_OK)
        return 0;
    ((ag_id *)stack->p)[depth] = id;
    return 1;
}

/* The walks' stack, kept (a GC pass walks below many Values). A walk may run inside
 * another's visit (the check when a pin goes traverses the Values it meets, and their
 * traverse walks): each walk uses the entries from walk_top up, and sets walk_top to
 * its own depth before it visits, so one inside it starts above. The ids on it are
 * borrowed: a walk frees nothing and calls no Python (its visits are the GC's counting
 * callbacks, the group check's, or keep_if_pinned's marking), so every node it reaches
 * is held by the one above it for the whole walk. The same holds for the passes of
 * ag_track_pin_holders, whose marking only tracks Values and takes references. */
static buffer walks;
static size_t walk_top;
#define AG_WALK_KEEP ((size_t)1 << 16) /* entries always worth keeping */

#define AG_REPEATS_LOOKED_FOR 64 /* inputs a node may have for its repeats to be counted */

/* Whether a walk goes down into input i of a node (inputs in[0..n), one of them Value-less
 * with refs references) at once: at its first place among the inputs (a + a: one way
 * down, not two), and when alone, only if this node is all that holds it. Repeats are
 * counted in a node of few inputs. An input that others hold too, or in a wider node,
 * is left to the count of uses met (visit_pins_below). */
static int walks_into(const ag_id *in, size_t n, size_t i, uint32_t refs, int alone)
{
    if (refs == 1)
        return 1; /* held here once, and by nothing else */
    if (n > AG_REPEATS_LOOKED_FOR)
        return !alone;
    uint32_t uses = 0;
    for (size_t j = 0; j < n; j++)
        if (in[j] == in[i]) {
            if (j < i)
                return 0;
            uses++;
        }
    return !alone || uses == refs;
}

/* The uses a walk held alone has met of Value-less nodes that several hold (a diamond:
 * t = h * h.sigmoid() uses h's node twice, from two nodes), in a small open-addressed
 * table of the walk's own (walks nest): such a node is the walk's alone once it has met
 * all its references, and is entered then. A table that cannot grow enters none. */
typedef struct {
    ag_id id;
    uint32_t met;
} use_count;

typedef struct {
    use_count *slots; /* cap of them, a power of 2; id 0: empty */
    size_t cap, used;
} uses_met;

/* The count of id's uses met so far, one more; 0 if the table could not grow. */
static uint32_t meet(uses_met *t, ag_id id)
{
    if (2 * (t->used + 1) > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        use_count *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return 0;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].id) {
                size_t k = t->slots[i].id * 2654435761u & (cap - 1);
                while (slots[k].id)
                    k = (k + 1) & (cap - 1);
                slots[k] = t->slots[i];
            }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    size_t k = id * 2654435761u & (t->cap - 1);
    while (t->slots[k].id && t->slots[k].id != id)
        k = (k + 1) & (t->cap - 1);
    if (!t->slots[k].id) {
        t->slots[k].id = id;
        t->used++;
    }
    return ++t->slots[k].met;
}

/* Calls visit(pinned Value, arg) for each pinned node below node `id` (through inputs
 * that have no Value); stops at the first nonzero return, which it returns. With
 * `alone`, only the pins that node `id` alone holds the way down to (what its Value
 * may report to the GC): those ways never meet, so every walk of a GC pass together
 * looks at each node once at most, and the walk goes as deep and wide as the graph
 * does. Without, every pin below (whose holders the GC must track: the other holders
 * may die and leave this one alone), looking at AG_PIN_LOOKS inputs at most: ways that
 * others hold too are shared, and walking each whole from every Value above would not
 * be linear (ag_track_pin_holders has a pass of its own that is). If the stack cannot
 * grow, a way is left unwalked: a cycle left uncollected, never something alive freed. */
static int visit_pins_below(ag_id id, int alone, visitproc visit, void *arg)
{
    const size_t base = walk_top;
    size_t depth = base, looks = 0;
    int stop = 0;
    uses_met shared = {NULL, 0, 0};
    /* a node that others hold too is this Value's alone when pinned: each other holder
     * then holds the Value as well, so the node dies before it (invariant 8) */
    if (!id || (alone && ag_node_at(id)->refs != 1 && !(ag_node_at(id)->flags & AG_FLAG_PINNED)))
        return 0;
    if (!push(&walks, depth++, id))
        return 0;
    while (!stop && depth > base && (alone || looks < AG_PIN_LOOKS)) {
        const ag_node *node = ag_node_at(((ag_id *)walks.p)[--depth]);
        size_t n;
        const ag_id *in = ag_inputs_of(node, &n);
        if (alone && ag_rows_of(node))
            continue; /* its rows hold its inputs: not it alone */
        for (size_t i = 0; !stop && i < n && (alone || looks < AG_PIN_LOOKS); i++, looks++) {
            ag_node *input = ag_node_at(in[i]);
            if (input->py) {
                /* the pin holds one reference for each use, this one's among them (invariant 8) */
                if (input->flags & AG_FLAG_PINNED) {
                    walk_top = depth; /* a walk inside the visit starts above this one's entries */
                    stop = visit((PyObject *)input->py, arg);
                }
            } else if (walks_into(in, n, i, input->refs, alone)) {
                depth += push(&walks, depth, in[i]);
            } else if (alone && meet(&shared, in[i]) == input->refs) {
                depth += push(&walks, depth, in[i]); /* its last use met: all its holders are ours */
            }
        }
    }
    walk_top = base;
    free(shared.slots);
    return stop;
}

int ag_visit_pins_held_alone(ag_id id, visitproc visit, void *arg)
{
    return visit_pins_below(id, 1, visit, arg);
}

int ag_holds_no_object(PyObject *o)
{
    return o == Py_None || PyFloat_CheckExact(o) || PyLong_CheckExact(o) || PyBool_Check(o)
           || PyUnicode_CheckExact(o) || PyBytes_CheckExact(o) || PyComplex_CheckExact(o);
}

int ag_pin_holders_unknown;
static size_t notes_since_look; /* nodes in use that got such state since the last look */

size_t ag_nodes_reaching_state;

static void forget_reaching_state(ag_id id)
{
    (void)id;
    ag_nodes_reaching_state--;
}

const ag_side_table ag_reaching_state_table = {AG_FLAG_REACHES_STATE, forget_reaching_state, NULL, NULL, NULL};

/* self's Python state may now refer to other objects (a Value, a list, a closure): a
 * cycle through its pin may form. Values made over its node from now on are tracked
 * (note_state_below); those made before are looked for before the next GC pass. */
void ag_note_held_objects(PyObject *self)
{
    ag_node *node = ag_node_at(VALUE_ID(self));
    if (node->flags & AG_FLAG_REACHES_STATE)
        return;
    ag_mark_reaches_state(node);
    if (node->refs > 1) {
        ag_pin_holders_unknown = 1;
        notes_since_look++;
    }
}

/* A holder found: its node now reaches state (so the Values made above it are tracked,
 * and the passes find the holders above it), and it is tracked and kept by its node
 * (note_state_below). A Value tracked already, for state of numbers only or as a
 * subclass instance, still gets the flag: the holders above it depend on it. */
static void mark_holder(ag_node *node)
{
    ag_mark_reaches_state(node);
    ag_mark_state(node->py);
}

static int keep_if_pinned(PyObject *pinned, void *holder)
{
    if (!(ag_node_at(VALUE_ID(pinned))->flags & AG_FLAG_REACHES_STATE))
        return 0;
    mark_holder(ag_node_at(((ValueObject *)holder)->id));
    return 1;
}

/* The bounded look at node `id` as a holder (the fallback below): a Value whose node
 * does not reach state yet, over pins that do, is marked (keep_if_pinned). 1 if it was. */
static int look_at_holder(ag_id id)
{
    const ag_node *node = ag_node_at(id);
    return node->op != AG_FREE && node->py && !(node->flags & AG_FLAG_REACHES_STATE)
           && visit_pins_below(id, 0, keep_if_pinned, node->py);
}

#define AG_AFTER_INPUTS ((ag_id)1 << 31) /* ids stay below it: see AG_MAX_NODES */

#define BIT(bits, id) ((bits)[(id) / 8] >> ((id) % 8) & 1)
#define SET_BIT(bits, id) ((bits)[(id) / 8] |= (uint8_t)(1u << ((id) % 8)))

/* Every live node, each after all the nodes below it: a depth-first post-order over the
 * whole arena, in a malloc'd array of *n ids; NULL if memory runs out. */
static ag_id *inputs_first_order(size_t *n)
{
    const ag_arena *ar = &ag_the_arena;
    size_t capacity = ar->n_blocks * AG_BLOCK_NODES, depth = 0;
    buffer stack = {NULL, 0};
    uint8_t *visited = calloc(capacity / 8 + 1, 1);
    ag_id *order = malloc((capacity + 1) * sizeof *order);
    int failed = !visited || !order;
    *n = 0;
    for (size_t start = 1; !failed && start < capacity; start++) {
        if (!ar->blocks[start >> AG_BLOCK_SHIFT] || ag_node_at((ag_id)start)->op == AG_FREE || BIT(visited, start))
            continue;
        failed = !push(&stack, depth++, (ag_id)start);
        while (depth && !failed) {
            ag_id top = ((ag_id *)stack.p)[--depth], id = top & ~AG_AFTER_INPUTS;
            if (top & AG_AFTER_INPUTS) {
                order[(*n)++] = id;
                continue;
            }
            if (BIT(visited, id))
                continue;
            SET_BIT(visited, id);
            size_t n_inputs;
            const ag_id *inputs = ag_inputs_of(ag_node_at(id), &n_inputs);
            failed = !push(&stack, depth++, id | AG_AFTER_INPUTS); /* back once its inputs are in */
            for (size_t i = 0; i < n_inputs && !failed; i++)
                failed = !push(&stack, depth++, inputs[i]);
        }
    }
    free(visited);
    free(stack.p);
    if (failed) {
        free(order);
        return NULL;
    }
    return order;
}

/* The look costs a pass over the whole arena: a pass of the youngest generations (every
 * few hundred allocations) makes it only once the notes since the last look number a
 * share of the live nodes, or the live nodes have grown by half since the fewest a pass
 * left since the last look (garbage the cycles left, or a growing graph: each look then
 * costs less than three times the nodes made since the one before). A loop giving state
 * to Values in use while its graph grows stays linear, and one whose cycles wait for a
 * look holds half as many nodes again as it keeps, at most. A full pass (gc.collect())
 * always looks. A holder not looked for yet only leaves its cycle for a later pass
 * (invariant 8: never something alive freed). */
#define AG_NOTES_PER_LOOK_SHARE 16 /* one note per this many live nodes */
static size_t fewest_live; /* the fewest live nodes a GC pass left since the last look */

void ag_gc_pass_ended(void)
{
    if (ag_the_arena.live < fewest_live)
        fewest_live = ag_the_arena.live;
}

/* Nodes in use got Python state since the last GC pass: their holders may be Values the
 * GC does not track, or that their nodes do not keep. Finds them all, from a GC
 * callback before the pass: a Value without state is a holder when a pinned Value that
 * reaches state is below it, through Value-less nodes; once marked, it is such a Value
 * for the holders above it. One pass in an order that puts each node after the nodes
 * below it settles every node from what is below it, however deep or wide the graph:
 * `reaches` marks the Value-less nodes with such a pin below. Without the memory for
 * it, passes in id order with bounded looks, again until one finds no new holder. */
void ag_track_pin_holders(int full_pass)
{
    size_t live = ag_the_arena.live;
    if (!ag_pin_holders_unknown
        || (!full_pass && notes_since_look * AG_NOTES_PER_LOOK_SHARE < live
            && live < fewest_live + fewest_live / 2))
        return;
    ag_pin_holders_unknown = 0;
    notes_since_look = 0;
    fewest_live = live;
    const ag_arena *ar = &ag_the_arena;
    size_t capacity = ar->n_blocks * AG_BLOCK_NODES, n;
    uint8_t *reaches = calloc(capacity / 8 + 1, 1);
    ag_id *order = reaches ? inputs_first_order(&n) : NULL;
    for (size_t i = 0; order && i < n; i++) {
        ag_node *node = ag_node_at(order[i]);
        size_t n_inputs;
        const ag_id *inputs = ag_inputs_of(node, &n_inputs);
        int below = 0;
        for (size_t k = 0; k < n_inputs && !below; k++) {
            const ag_node *input = ag_node_at(inputs[k]);
            below = input->py ? (input->flags & AG_FLAG_PINNED) && (input->flags & AG_FLAG_REACHES_STATE)
                              : BIT(reaches, inputs[k]);
        }
        if (!below)
            continue;
        if (!node->py)
            SET_BIT(reaches, order[i]);
        else
            mark_holder(node);
    }
    if (!order) /* the fallback's looks are bounded: the full search is tried again next pass */
        ag_pin_holders_unknown = 1;
    for (int found = !order; found;) {
        found = 0;
        for (size_t id = 1; id < capacity; id++)
            if (ar->blocks[id >> AG_BLOCK_SHIFT])
                found |= look_at_holder((ag_id)id);
    }
    free(order);
    free(reaches);
    if (walks.cap > AG_WALK_KEEP && walk_top == 0) { /* grown by a graph since gone: not kept */
        free(walks.p);
        walks = (buffer){NULL, 0};
    }
}

/* The Value's node keeps it while anything else holds the node (invariant 8). */
void ag_keep_by_node(PyObject *self)
{
    ag_node *node = ag_node_at(VALUE_ID(self));
    if (node->flags & AG_FLAG_PYSTATE)
        return;
    node->flags |= AG_FLAG_PYSTATE;
    pin_holders(node);
}

/* The Value gets Python state: its node keeps it, and the cyclic GC now looks after it. */
void ag_mark_state(PyObject *self)
{
    ValueObject *v = (ValueObject *)self;
    if (!v->tracked) {
        if (!PyObject_GC_IsTracked(self)) /* a subclass instance is tracked from birth */
            PyObject_GC_Track(self);
        v->tracked = 1;
    }
    ag_keep_by_node(self);
}

/* The _backward in a Value's dict (borrowed), or NULL, found without calling Python:
 * the dict is the program's (vars(v)), where a key of its own with the same hash would
 * have its __eq__ run by a lookup, in the middle of a sort, or replacing the very dict
 * being searched. Each str key is compared by its characters. */
PyObject *ag_rule_in(PyObject *dict)
{
    PyObject *key, *value;
    Py_ssize_t at = 0;
    while (dict && PyDict_Next(dict, &at, &key, &value))
        if (key == ag_backward_name || (PyUnicode_Check(key) && PyUnicode_Compare(key, ag_backward_name) == 0))
            return value;
    return NULL;
}

static PyObject *rule_of(ag_node *node)
{
    ValueObject *v = node->py;
    return v ? ag_rule_in(v->dict) : NULL;
}

static int has_rule(ag_node *node) { return rule_of(node) != NULL; }

/* A Python _backward, called by the sweep (sweep.c) in the node's place in the order.
 * The node is the root or has users, so its Value, if it has one, is alive (held or
 * pinned). AG_ENORULE when there is none: the dict was handed out (vars(v)) and holds
 * no _backward, so the op's own rule runs. */
static int run_rule(ag_node *node)
{
    PyObject *self = node->py, *rule = rule_of(node);
    if (!rule)
        return AG_ENORULE;
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
