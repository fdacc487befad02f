"""pyautograd: a scalar reverse-mode autodiff engine whose graph lives in C.

A drop-in, faster micrograd: `from pyautograd.engine import Value`.
"""
from .autograd import GradcheckError, grad, gradcheck, gradgradcheck
from .engine import Value, maximum, minimum
from .functional import dot, log_softmax, softmax, sum  # sum shadows the builtin on purpose
from .modes import detect_anomaly, is_grad_enabled, no_grad

# sum is left out: `from pyautograd import *` must not replace the builtin sum.
__all__ = ["Value", "maximum", "minimum", "no_grad", "detect_anomaly", "is_grad_enabled",
           "dot", "softmax", "log_softmax", "grad", "gradcheck", "gradgradcheck", "GradcheckError"]
__version__ = "0.1.0"
