"""pyautograd: a scalar reverse-mode autodiff engine whose graph lives in C.

A drop-in, faster micrograd: `from pyautograd.engine import Value`.
"""

import os as _os

try:
    from . import _ag  # the compiled C core: built when the package is installed
except ImportError as _error:
    import importlib.machinery as _machinery

    _here = _os.path.dirname(_os.path.abspath(__file__))
    _built = any(_os.path.exists(_os.path.join(_here, "_ag" + end)) for end in _machinery.EXTENSION_SUFFIXES)
    if _built or not _os.path.exists(_os.path.join(_here, _os.pardir, "build_ext.py")):
        raise  # e.g. a sub-interpreter, which the extension refuses: its own message
    # Python found this package in a source tree (a checkout or an unpacked sdist, the
    # current directory of a REPL or a script), not the installed one, and the C core is
    # not built here: without this, the error would read like a circular import.
    raise ImportError(
        f"pyautograd was imported from its source tree ({_here}), where its C extension "
        f"(pyautograd._ag) is not built for this Python. The source tree is shadowing the "
        f"installed package, because the current directory (or the script's) comes first "
        f"on sys.path. Run Python from another directory to use the installed package, or "
        f"install this tree in editable mode (`pip install -e .`), which builds the "
        f"extension here."
    ) from _error

from .autograd import GradcheckError, grad, gradcheck, gradgradcheck, hessian, hvp, jvp
from .engine import OP_FUNCTIONS as _OP_FUNCTIONS
from .engine import Value
from .functional import dot, log_softmax, softmax, sum  # sum shadows the builtin on purpose
from .modes import detect_anomaly, is_grad_enabled, no_grad

# sum is left out: `from pyautograd import *` must not replace the builtin sum.
__all__ = [
    "Value",
    "no_grad",
    "detect_anomaly",
    "is_grad_enabled",
    "dot",
    "softmax",
    "log_softmax",
    "grad",
    "jvp",
    "hvp",
    "hessian",
    "gradcheck",
    "gradgradcheck",
    "GradcheckError",
]

# The op table's module functions (maximum, minimum, ...), one per `function` row.
globals().update(_OP_FUNCTIONS)
__all__ += sorted(_OP_FUNCTIONS)
__version__ = "0.1.0"
