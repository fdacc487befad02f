/* LayerWeights: a Layer's weights and biases as one weight row per neuron (ag_row,
 * arena.h), what layer() and layers() (graph.c) make a layer's dot nodes from.
 *
 * A row holds a reference to each of its weights and its bias (invariant 7), and each
 * dot node made from it holds the row; this object holds one reference to each row. So
 * a graph outlives the Layer's rebuilt weights, and the weights outlive both, without
 * Python holding anything. It holds no Python objects, so it is no GC container. */
#include "python.h"

typedef struct {
    PyObject_VAR_HEAD   /* ob_size: nout, the rows */
    Py_ssize_t nin;     /* weights per row */
    ag_row *rows[1];
} LayerWeightsObject;

PyTypeObject *ag_layer_weights_type;

static void layer_weights_dealloc(PyObject *self)
{
    LayerWeightsObject *lw = (LayerWeightsObject *)self;
    PyTypeObject *type = Py_TYPE(self);
    for (Py_ssize_t j = 0; j < Py_SIZE(self); j++)
        if (lw->rows[j])
            ag_row_release(lw->rows[j]); /* may run Python code (unpinned Values) */
    type->tp_free(self);
    Py_DECREF(type);
}

/* LayerWeights(weights, biases): len(biases) rows, row j the weights
 * weights[j*nin : (j+1)*nin] (nin = len(weights) / len(biases)) and the bias biases[j]. */
static PyObject *layer_weights_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"weights", "biases", NULL};
    PyObject *weights_arg, *biases_arg;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:LayerWeights", names, &weights_arg, &biases_arg))
        return NULL;
    (void)type;
    PyObject *weights = ag_node_list_from(weights_arg, "LayerWeights", 1);
    PyObject *biases = weights ? ag_node_list_from(biases_arg, "LayerWeights", 1) : NULL;
    LayerWeightsObject *lw = NULL;
    if (!biases)
        goto done;
    Py_ssize_t nout = Py_SIZE(biases), nin = nout ? Py_SIZE(weights) / nout : 0;
    if (nout == 0 || nin == 0 || nin * nout != Py_SIZE(weights)) {
        PyErr_Format(PyExc_ValueError, "LayerWeights(): %zd weights do not make rows for %zd biases",
                     Py_SIZE(weights), nout);
        goto done;
    }
    lw = PyObject_NewVar(LayerWeightsObject, ag_layer_weights_type, nout);
    if (!lw)
        goto done;
    lw->nin = nin;
    memset(lw->rows, 0, (size_t)nout * sizeof lw->rows[0]);
    /* The NodeLists own the ids until the rows retain them; no Python code in between. */
    const ag_id *w = ((NodeListObject *)weights)->ids, *b = ((NodeListObject *)biases)->ids;
    for (Py_ssize_t j = 0; j < nout; j++)
        if (!(lw->rows[j] = ag_row_new(w + j * nin, (size_t)nin, b[j]))) {
            Py_CLEAR(lw);
            PyErr_NoMemory();
            break;
        }
done:
    Py_XDECREF(weights);
    Py_XDECREF(biases);
    return (PyObject *)lw;
}

/* The rows, with nout and nin, of a LayerWeights object; -1 with a TypeError if it is not one. */
int ag_layer_weights_rows(PyObject *o, const char *what, ag_row *const **rows, size_t *nout, size_t *nin)
{
    if (!Py_IS_TYPE(o, ag_layer_weights_type)) {
        PyErr_Format(PyExc_TypeError, "%s takes LayerWeights, not '%.200s'", what, ag_type_name(o));
        return -1;
    }
    *rows = ((LayerWeightsObject *)o)->rows;
    *nout = (size_t)Py_SIZE(o);
    *nin = (size_t)((LayerWeightsObject *)o)->nin;
    return 0;
}

static Py_ssize_t layer_weights_length(PyObject *self) { return Py_SIZE(self); }

static PyObject *layer_weights_nin(PyObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromSsize_t(((LayerWeightsObject *)self)->nin);
}

static PyObject *layer_weights_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<LayerWeights: %zd rows of %zd weights and a bias>", Py_SIZE(self),
                                ((LayerWeightsObject *)self)->nin);
}

PyTypeObject *ag_make_layer_weights_type(void)
{
    static PyGetSetDef getset[] = {
        {"nin", layer_weights_nin, NULL, "weights per row (the layer's inputs)", NULL},
        {NULL, NULL, NULL, NULL, NULL},
    };
    static PyType_Slot slots[] = {
        {Py_tp_new, (void *)layer_weights_new},
        {Py_tp_dealloc, (void *)layer_weights_dealloc},
        {Py_tp_getset, getset},
        {Py_tp_repr, (void *)layer_weights_repr},
        {Py_sq_length, (void *)layer_weights_length},
        {Py_tp_doc, "LayerWeights(weights, biases): a layer's weights held as one row per neuron,\n"
                    "for layer() and layers(); len() is the number of neurons."},
        {0, NULL},
    };
    static PyType_Spec spec = {"pyautograd._ag.LayerWeights", offsetof(LayerWeightsObject, rows),
                               sizeof(ag_row *), Py_TPFLAGS_DEFAULT, slots};
    ag_layer_weights_type = (PyTypeObject *)PyType_FromSpec(&spec);
    return ag_layer_weights_type;
}
