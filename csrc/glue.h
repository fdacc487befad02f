/* The preamble of the cffi-generated module (build_ext.py): it comes before cffi's
 * wrappers, so its definitions apply to them. See python.c for the whole story.
 *
 * cffi releases the GIL around every call. We keep it instead: the GIL is the arena's
 * lock (no two calls ever overlap), the C-API files may call Python, and a call no
 * longer waits behind a busy Python thread to get the GIL back (the "convoy", ~300x
 * slower per op). ag_gil_held() lets the tests prove this stays applied. */
#include "ag.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }

/* Not in the limited API cffi compiles against, but exported by every CPython >= 3.4. */
extern int PyGILState_Check(void);
static int ag_gil_held(void) { return PyGILState_Check(); }

int ag_python_init(void); /* python.c */
const char *ag_python_init_error(void);
