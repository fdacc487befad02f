# Types of the top-level names for editors and type checkers (tests/test_types.py checks
# them with mypy --strict and against the runtime). grad, gradcheck and gradgradcheck are
# declared here, as autograd.py defines them, until that module carries annotations.
from collections.abc import Callable, Iterable

from .autograd import GradcheckError as GradcheckError
from .engine import Value as Value
from .functional import dot as dot, log_softmax as log_softmax, softmax as softmax
from .functional import sum as sum
from .modes import detect_anomaly as detect_anomaly, is_grad_enabled as is_grad_enabled
from .modes import no_grad as no_grad

# As __init__.py's (sum left out so that `import *` keeps Python's sum).
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
__version__: str

# ---- begin: the op table's functions (tools/op_stubs.py) ----
from .engine import maximum as maximum
from .engine import minimum as minimum

__all__ += ["maximum", "minimum"]
# ---- end: the op table's functions ----

def grad(output: Value, inputs: Value | Iterable[Value], *, create_graph: bool = False) -> list[Value]:
    """d output / d input for each input, touching no .grad; with create_graph=True the
    results are Values that can be differentiated again."""

def jvp(
    outputs: Value | Iterable[Value],
    inputs: Value | Iterable[Value],
    tangents: Iterable[float],
    *,
    create_graph: bool = False,
) -> list[Value]:
    """Forward mode: each output's directional derivative along tangents (one per input)."""

def hvp(output: Value, inputs: Value | Iterable[Value], vector: Iterable[float]) -> list[Value]:
    """The Hessian of output in inputs times vector, forward over reverse."""

def hessian(output: Value, inputs: Value | Iterable[Value]) -> list[list[Value]]:
    """The Hessian of output in inputs, row by row."""

def gradcheck(
    fn: Callable[..., Value],
    inputs: Value | Iterable[Value],
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """True if fn's gradient at inputs (fn(*inputs)) agrees with central finite
    differences; else GradcheckError naming the worst input."""

def gradgradcheck(
    fn: Callable[..., Value],
    inputs: Value | Iterable[Value],
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """As gradcheck, for fn's second derivatives (grad of grad)."""
