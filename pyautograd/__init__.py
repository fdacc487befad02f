"""pyautograd: a scalar reverse-mode autodiff engine whose graph lives in C.

A drop-in, faster micrograd: `from pyautograd.engine import Value`.
"""
from .autograd import GradcheckError, grad, gradcheck, gradgradcheck, hessian, hvp, jvp
from .engine import OP_FUNCTIONS as _OP_FUNCTIONS
from .engine import Value
from .functional import dot, log_softmax, softmax, sum  # sum shadows the builtin on purpose
from .modes import detect_anomaly, is_grad_enabled, no_grad

# sum is left out: `from pyautograd import *` must not replace the builtin sum.
__all__ = ["Value", "no_grad", "detect_anomaly", "is_grad_enabled",
           "dot", "softmax", "log_softmax", "grad", "jvp", "hvp", "hessian", "gradcheck", "gradgradcheck", "GradcheckError"]

# The op table's module functions (maximum, minimum, ...), one per `function` row.
globals().update(_OP_FUNCTIONS)
__all__ += sorted(_OP_FUNCTIONS)
__version__ = "0.1.0"
