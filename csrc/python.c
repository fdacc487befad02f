/* The glue between cffi and the Python C-API, in one place.
 *
 * pyautograd._ag is a cffi extension: cffi compiles csrc/ and generates a wrapper per
 * function of ag.h. Three things make the C-API files (python.h lists them) live in it:
 *  1. The GIL. cffi's wrappers release the GIL around every call; build_ext.py's
 *     preamble (glue.h) turns that off, so the GIL is held in every call. That makes
 *     the GIL the arena's lock (arena.h, invariant 4) and lets C code call the C-API.
 *  2. Publishing. cffi owns the module object, so the types and functions made here are
 *     added to it by name when engine.py first calls ag_python_init() through cffi.
 *  3. One interpreter. The arena is one per process and its nodes point back at Python
 *     objects of one interpreter, so a sub-interpreter gets an ImportError, before
 *     anything is made, whether it imports before or after the main interpreter, and
 *     the main interpreter can still import afterwards.
 */
#include "python.h"

static PyObject *set_failure_hook(PyObject *module, PyObject *hook)
{
    (void)module;
    ag_set_failure_hook(hook);
    Py_RETURN_NONE;
}

static PyMethodDef glue_functions[] = {
    {"_set_failure_hook", set_failure_hook, METH_O,
     "the Python function that turns a failed core call into an exception"},
    {NULL, NULL, 0, NULL},
};

static char init_error[256];

/* Why ag_python_init failed (an exception cannot cross a cffi call cleanly). */
const char *ag_python_init_error(void) { return init_error; }

static int init_failed(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    snprintf(init_error, sizeof init_error, "%s", utf8 ? utf8 : "could not create the Value type");
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    PyErr_Clear();
    return -1;
}

/* 0, or -1 with the reason in ag_python_init_error(). Idempotent: a reload of
 * pyautograd.engine finds the same types. */
int ag_python_init(void)
{
    static int done;
    /* Checked before `done`: a sub-interpreter importing after the main one gets a copy
     * of the module as cffi first made it (single-phase init), without the names added
     * below, and must be refused here, not fail later on a missing attribute. */
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        snprintf(init_error, sizeof init_error, "%s",
                 "pyautograd cannot be imported in a sub-interpreter: its one C arena belongs "
                 "to the main interpreter");
        return -1;
    }
    if (done)
        return 0;
    PyObject *module = PyImport_ImportModule("pyautograd._ag");
    if (!module)
        return init_failed();
    PyTypeObject *value = ag_make_value_type(), *node_list = value ? ag_make_node_list_type() : NULL;
    PyTypeObject *layer_weights = node_list ? ag_make_layer_weights_type() : NULL;
    PyTypeObject *mode_switch = layer_weights ? ag_make_mode_switch_type() : NULL;
    int status = -1;
    if (mode_switch && PyModule_AddObjectRef(module, "ModeSwitch", (PyObject *)mode_switch) == 0
        && PyModule_AddObjectRef(module, "Value", (PyObject *)value) == 0
        && PyModule_AddObjectRef(module, "NodeList", (PyObject *)node_list) == 0
        && PyModule_AddObjectRef(module, "LayerWeights", (PyObject *)layer_weights) == 0
        && PyModule_AddFunctions(module, ag_graph_functions) == 0
        && PyModule_AddFunctions(module, ag_walk_functions) == 0
        && PyModule_AddFunctions(module, ag_op_functions) == 0
        && PyModule_AddFunctions(module, glue_functions) == 0) {
        ag_install_hooks();
        ag_thread_locals_ready();
        /* the tables the modules keep beside the arena, so the arena names none of them */
        ag_register_side_table(&ag_labels_table);
        ag_register_side_table(&ag_sweep_table);
        ag_register_side_table(&ag_tangents_table);
        ag_register_side_table(&ag_reaching_state_table);
        done = 1;
        status = 0;
    }
    Py_DECREF(module);
    return status == 0 ? 0 : init_failed();
}
