"""The cffi builder: compiles csrc/ into pyautograd._ag. It only builds.

API mode, out of line: the cdef is csrc/ag.h itself (its `#` lines dropped), so the
C declarations are written once.
"""

import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
SOURCES = [
    "arena.c",
    "nodes.c",
    "sweep.c",
    "tape.c",
    "tape_make.c",
    "key_sort.c",
    "grad.c",
    "higher.c",
    "tangents.c",
    "labels.c",
    "optim.c",
    "stats.c",
    "nn.c",
    "value.c",
    "value_new.c",
    "bridge.c",
    "pins.c",
    "node_list.c",
    "layer_weights.c",
    "mode_switch.c",
    "graph.c",
    "walks.c",
    "python.c",
]


def read_cdef():
    with open(os.path.join(CSRC, "ag.h")) as header:
        return "".join(line for line in header if not line.lstrip().startswith("#"))


# The preamble keeps the GIL held in every call and declares the glue (csrc/glue.h,
# explained in csrc/python.c).
PREAMBLE = '#include "glue.h"\n'

# A release build carries no debug info (Python's own CFLAGS ask for -g): -g0 after them,
# and the linker strips the symbol table. PYAUTOGRAD_CFLAGS comes last, so its -g (the
# sanitizer build's, or a developer's) wins, and a build asked for -g is not stripped.
EXTRA_CFLAGS = os.environ.get("PYAUTOGRAD_CFLAGS", "").split()
DEBUG = any(flag.startswith("-g") and flag != "-g0" for flag in EXTRA_CFLAGS)
CFLAGS = [] if sys.platform == "win32" else ["-O2", "-ffp-contract=off", "-fvisibility=hidden", "-g0"]
CFLAGS += EXTRA_CFLAGS
LDFLAGS = ["-s"] if sys.platform.startswith("linux") and not DEBUG else []
LDFLAGS += os.environ.get("PYAUTOGRAD_LDFLAGS", "").split()

ffibuilder = FFI()
# Beyond ag.h: the GIL check, and the call that makes the Value type and the functions
# that speak the Python C-API (value.c, graph.c) and adds them to this module.
ffibuilder.cdef(
    read_cdef() + "\nint ag_gil_held(void);\nint ag_python_init(void);\nconst char *ag_python_init_error(void);\n"
)
ffibuilder.set_source(
    "pyautograd._ag",
    PREAMBLE,
    sources=[os.path.relpath(os.path.join(CSRC, name), HERE) for name in SOURCES],
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
    # value.c uses the full C-API and the preamble PyGILState_Check: the module is
    # built for one CPython version, not the stable ABI (no .abi3 name).
    py_limited_api=False,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
