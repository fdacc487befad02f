"""The cffi builder: compiles csrc/ into pyautograd._ag. It only builds.

API mode, out of line: the cdef is csrc/ag.h itself (its `#` lines dropped), so the
C declarations are written once.
"""
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
SOURCES = ["arena.c", "nodes.c", "sweep.c", "labels.c", "optim.c", "stats.c", "nn.c", "value_type.c"]


def read_cdef():
    with open(os.path.join(CSRC, "ag.h")) as header:
        return "".join(line for line in header if not line.lstrip().startswith("#"))


# cffi releases the GIL around every call. We keep it instead: the GIL is the arena's
# lock (no two calls ever overlap), and a call no longer waits behind a busy Python
# thread to get the GIL back (the "convoy", ~300x slower per op). The wrappers cffi
# generates come after this preamble, so they use these definitions;
# ag_gil_held() lets the tests prove it stays applied.
PREAMBLE = """
#include "ag.h"
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
/* Not in the limited API cffi compiles against, but exported by every CPython >= 3.4. */
extern int PyGILState_Check(void);
static int ag_gil_held(void) { return PyGILState_Check(); }
"""

CFLAGS = [] if sys.platform == "win32" else ["-O2", "-ffp-contract=off", "-fvisibility=hidden"]
CFLAGS += os.environ.get("PYAUTOGRAD_CFLAGS", "").split()
LDFLAGS = os.environ.get("PYAUTOGRAD_LDFLAGS", "").split()

ffibuilder = FFI()
# Beyond ag.h: the GIL check, and the C type behind Value's arithmetic (value_type.c),
# which calls the Python C-API and so relies on the GIL being kept.
ffibuilder.cdef(read_cdef() + "\nint ag_gil_held(void);\nint ag_make_value_type(void);\n")
ffibuilder.set_source(
    "pyautograd._ag",
    PREAMBLE,
    sources=[os.path.relpath(os.path.join(CSRC, name), HERE) for name in SOURCES],
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
    # value_type.c uses the full C-API and the preamble PyGILState_Check: the module is
    # built for one CPython version, not the stable ABI (no .abi3 name).
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
