"""Export: a pyautograd graph as a batched PyTorch module or a pure JAX function.

to_torch(outputs, inputs) gives a torch.fx.GraphModule and to_jax(outputs, inputs) a
function fn(params, *xs) with its params: both compute the outputs elementwise over any
batch shape, from one sample's scalar graph. The export follows the graph's structure,
not its scalars: the dot nodes of a pyautograd.nn layer (one per neuron, over the same
inputs) become one matrix product over a weight matrix, an activation applied to every
output of such a product becomes one op on the whole vector, and sum and dot nodes
become reductions. So the exported graph's size is that of the model's structure, not
of its width, of the batch, or of the number of samples the scalar graph was built for.

Each elementwise op of the op table (csrc/ops.h, pyautograd.engine.OP_NAMES) has one
entry in OP_RULES: its torch form and its JAX form, with pyautograd's derivative rules
(relu's gradient is 0 at 0, pow's at a zero base or exponent, tanh's 1 - out*out).

torch and jax are optional (extras [torch] and [jax]): importing this module imports
neither; each export imports its target when called.
"""

import keyword
import operator
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _ag
from .engine import OP_NAMES, OP_PYTHON, Value

if TYPE_CHECKING:
    import torch.fx

__all__ = ["to_torch", "to_jax", "ExportError", "OP_RULES", "module_to_torch"]


class ExportError(ValueError):
    """A graph (or a node of it) that has no torch or JAX form."""


_OP = {name: code for code, name in enumerate(OP_NAMES)}
_LEAF, _CONST, _SUM, _DOT, _CUSTOM, _LOCAL = (_OP[n] for n in ("leaf", "const", "sum", "dot", "custom", "local"))
_CHOSEN = 256  # node_ops' flag: a derivative built for the values of the time


def _need(module_name, extra):
    try:
        return __import__(module_name)
    except ImportError as error:
        raise ImportError(
            f"pyautograd.export needs {module_name} for this: pip install 'pyautograd-arena[{extra}]'"
        ) from error


# ---- the rules: one entry per elementwise row of the op table ----


class Rule:
    """How one elementwise op exports. `torch(a, b)` builds it from torch tensors (or fx
    proxies); `forward(np, a, b)` computes it with an array namespace (jax.numpy), and
    `to_a(t, a, b, out)` / `to_b(...)` are what it passes back to each input from a
    gradient t (ops.h's derivative column, linear in t), which the JAX form installs as
    its derivative. Unary ops ignore b. An input that is a Python float is a constant."""

    __slots__ = ("arity", "torch", "forward", "to_a", "to_b")

    def __init__(self, arity, torch, forward, to_a, to_b=None):
        self.arity, self.torch, self.forward, self.to_a, self.to_b = arity, torch, forward, to_a, to_b


def _torch_mod():
    import torch

    return torch


_tanh_function = []


def _fx_call(fn):
    """Marks a torch rule that the fx graph calls as one function (torch.export and
    onnx trace into it)."""
    fn.fx_call = True
    return fn


@_fx_call
def _torch_tanh(a):
    """tanh with ops.h's gradient G * (1 - out*out), rounded as pyautograd rounds it
    (torch's fused kernel computes 1 - out*out with an FMA: 1e-11 apart at |x| = 12)."""
    if not _tanh_function:
        torch = _torch_mod()

        class Tanh(torch.autograd.Function):
            @staticmethod
            def forward(a):
                return torch.tanh(a)

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(output)

            @staticmethod
            def backward(ctx, g):
                (out,) = ctx.saved_tensors
                return g * (1.0 - out * out)

        _tanh_function.append(Tanh)
    return _tanh_function[0].apply(a)


def _pick(np, cond, t, factor):
    """t * factor where cond is false, exactly 0 where it is true (ops.h's SELECT(cond,
    ZERO, ...)): the unused factor, nan or inf, never reaches t or its transpose."""
    return np.where(cond, 0.0, t * np.where(cond, 1.0, factor))


def _sign(np, a):
    return np.where(a > 0.0, 1.0, 0.0) - np.where(a < 0.0, 1.0, 0.0)  # 0 at nan, as ops.h


_GELU_BETA = 1.41421356237309504880 * 1.12837916709551257390 * 0.5  # ops.h's AG_GELU_BETA
_GELU_KAPPA = 0.044715


def _gelu_inner(a):
    return _GELU_BETA * (a + _GELU_KAPPA * (a * a * a))


def _gelu_to_a(t, a, b, out, np):
    th = np.tanh(_gelu_inner(a))
    return t * (0.5 * (1.0 + th) + ((0.5 * a) * (1.0 - th * th)) * (_GELU_BETA * (1.0 + (3.0 * _GELU_KAPPA) * (a * a))))


def _softplus_d(np, a, b=None):
    e = np.exp(np.where(a > 20.0, 0.0, a))
    return np.where(a > 20.0, 1.0, e / (e + 1.0))


def _max_share(np, a, b):
    """ops.h's ag_max_share: 0 below, 1/2 at a tie, 1 above or at a nan."""
    return np.where(a < b, 0.0, np.where(a == b, 0.5, 1.0))


def _share_of(np, t, a, b):
    """ops.h's AG_SHARE_OF: t times the share (1, 1/2 or 0), exactly 0 where it is 0."""
    share = _max_share(np, a, b)
    return np.where(share > 0.0, t * share, 0.0)


def _exactly_zero(t, a, b, out, np):
    """ops.h's ZERO pass-back: exactly 0, not t * 0 (nan where t is inf or nan)."""
    return np.zeros_like(t)


def _torch_leaky_relu(a, b):
    torch = _torch_mod()
    if isinstance(b, float):
        return torch.nn.functional.leaky_relu(a, b)
    return torch.where(a > 0.0, a, a * b)


OP_RULES = {
    "add": Rule(2, operator.add, lambda np, a, b: a + b, lambda t, a, b, out, np: t, lambda t, a, b, out, np: t),
    "sub": Rule(2, operator.sub, lambda np, a, b: a - b, lambda t, a, b, out, np: t, lambda t, a, b, out, np: -t),
    "mul": Rule(
        2, operator.mul, lambda np, a, b: a * b, lambda t, a, b, out, np: t * b, lambda t, a, b, out, np: t * a
    ),
    "truediv": Rule(
        2,
        operator.truediv,
        lambda np, a, b: a / b,
        lambda t, a, b, out, np: t * (1.0 / b),
        lambda t, a, b, out, np: -(t * (out / b)),
    ),
    # torch's pow has ops.h's rules (they were written from it)
    "pow": Rule(
        2,
        operator.pow,
        lambda np, a, b: np.power(a, b),
        lambda t, a, b, out, np: _pick(np, b == 0.0, t, b * np.power(a, b - 1.0)),
        lambda t, a, b, out, np: t * np.where((a == 0.0) & (b >= 0.0), 0.0, out * np.log(a)),
    ),
    "neg": Rule(1, operator.neg, lambda np, a, b: -a, lambda t, a, b, out, np: -t),
    # torch.relu: gradient 0 at 0 as here (it differs only at nan: G there, 0 here)
    "relu": Rule(
        1,
        lambda a: _torch_mod().relu(a),
        lambda np, a, b: np.where(a < 0.0, 0.0, a),
        lambda t, a, b, out, np: np.where(out > 0.0, t, 0.0),
    ),
    "tanh": Rule(1, _torch_tanh, lambda np, a, b: np.tanh(a), lambda t, a, b, out, np: t * (1.0 - out * out)),
    "exp": Rule(1, lambda a: _torch_mod().exp(a), lambda np, a, b: np.exp(a), lambda t, a, b, out, np: t * out),
    "log": Rule(1, lambda a: _torch_mod().log(a), lambda np, a, b: np.log(a), lambda t, a, b, out, np: t * (1.0 / a)),
    # torch.sigmoid's gradient is G * out * (1 - out), as here
    "sigmoid": Rule(
        1,
        lambda a: _torch_mod().sigmoid(a),
        lambda np, a, b: 1.0 / (1.0 + np.exp(-a)),
        lambda t, a, b, out, np: t * (out * (1.0 - out)),
    ),
    "step": Rule(
        1,
        lambda a: (a > 0.0).to(_torch_mod().float64),
        lambda np, a, b: np.where(a > 0.0, 1.0, 0.0),
        _exactly_zero,
    ),
    "gate": Rule(
        2,
        lambda a, b: _torch_mod().where(b > 0.0, a, 0.0),
        lambda np, a, b: np.where(b > 0.0, a, 0.0),
        lambda t, a, b, out, np: np.where(b > 0.0, t, 0.0),
        _exactly_zero,
    ),
    "sin": Rule(1, lambda a: _torch_mod().sin(a), lambda np, a, b: np.sin(a), lambda t, a, b, out, np: t * np.cos(a)),
    "cos": Rule(
        1, lambda a: _torch_mod().cos(a), lambda np, a, b: np.cos(a), lambda t, a, b, out, np: -(t * np.sin(a))
    ),
    "sqrt": Rule(
        1, lambda a: _torch_mod().sqrt(a), lambda np, a, b: np.sqrt(a), lambda t, a, b, out, np: t / (2.0 * out)
    ),
    "abs": Rule(
        1, lambda a: _torch_mod().abs(a), lambda np, a, b: np.abs(a), lambda t, a, b, out, np: t * _sign(np, a)
    ),
    # the slope is a number (x.leaky_relu(0.1)); a tensor slope gets ops.h's rule too
    "leaky_relu": Rule(
        2,
        _torch_leaky_relu,
        lambda np, a, b: np.where(a > 0.0, a, a * b),
        lambda t, a, b, out, np: t * np.where(a > 0.0, 1.0, b),
        lambda t, a, b, out, np: t * (a - np.where(a > 0.0, a, 0.0)),
    ),
    # the tanh form, torch's gelu(approximate='tanh') operation for operation (ops.h)
    "gelu": Rule(
        1,
        lambda a: _torch_mod().nn.functional.gelu(a, approximate="tanh"),
        lambda np, a, b: 0.5 * a * (1.0 + np.tanh(_gelu_inner(a))),
        _gelu_to_a,
    ),
    "softplus": Rule(
        1,
        lambda a: _torch_mod().nn.functional.softplus(a),
        lambda np, a, b: np.where(a > 20.0, a, np.log1p(np.exp(a))),
        lambda t, a, b, out, np: t * _softplus_d(np, a),
    ),
    # the value, and exactly 0 back
    "detach": Rule(1, lambda a: a.detach(), lambda np, a, b: a, _exactly_zero),
    # torch.maximum's rules: G to the larger input, G / 2 to each at a tie, G to both at a nan
    "maximum": Rule(
        2,
        lambda a, b: _torch_mod().maximum(a, b),
        lambda np, a, b: np.where(np.isnan(a) | np.isnan(b), a + b, np.where(a >= b, a, b)),
        lambda t, a, b, out, np: _share_of(np, t, a, b),
        lambda t, a, b, out, np: _share_of(np, t, b, a),
    ),
    "minimum": Rule(
        2,
        lambda a, b: _torch_mod().minimum(a, b),
        lambda np, a, b: np.where(np.isnan(a) | np.isnan(b), a + b, np.where(a <= b, a, b)),
        lambda t, a, b, out, np: _share_of(np, t, b, a),
        lambda t, a, b, out, np: _share_of(np, t, a, b),
    ),
    # internal rows: only derivative graphs make them
    "sign": Rule(
        1,
        lambda a: (a > 0.0).to(_torch_mod().float64) - (a < 0.0).to(_torch_mod().float64),
        lambda np, a, b: _sign(np, a),
        _exactly_zero,
    ),
    "leaky_slope": Rule(
        2,
        lambda a, b: _torch_mod().where(a > 0.0, _torch_mod().ones_like(a), b),
        lambda np, a, b: np.where(a > 0.0, 1.0, b),
        _exactly_zero,
        lambda t, a, b, out, np: t * (1.0 - np.where(a > 0.0, 1.0, 0.0)),
    ),
    # torch.sigmoid is exp(a) / (exp(a) + 1) to the ulp, with the same derivative
    "softplus_d": Rule(
        1,
        lambda a: _torch_mod().where(a > 20.0, _torch_mod().ones_like(a), _torch_mod().sigmoid(a)),
        _softplus_d,
        lambda t, a, b, out, np: t * (out * (1.0 - out)),
    ),
    "max_share": Rule(
        2,
        lambda a, b: 1.0 - (a < b).to(_torch_mod().float64) - 0.5 * (a == b).to(_torch_mod().float64),
        lambda np, a, b: _max_share(np, a, b),
        _exactly_zero,
        _exactly_zero,
    ),
}
"""Export rules by op name (pyautograd.engine.OP_NAMES): one entry per elementwise row
of the op table. The structural rows (leaf, const, sum, dot) are the exporter's own;
hand-made nodes (custom, local) cannot be exported."""


def elementwise_ops():
    """The op table's elementwise rows, read at run time: every one needs an OP_RULES entry."""
    return [name for name, python in zip(OP_NAMES, OP_PYTHON) if python]


# ---- reading the graph ----


def _as_values(things, what):
    single = isinstance(things, Value)
    items = [things] if single else list(things)
    for i, v in enumerate(items):
        if not isinstance(v, Value):
            raise TypeError(f"{what}[{i}] must be a Value, not {type(v).__name__!r}")
    return single, items


def _describe(v):
    label = f", label {v.label!r}" if v.label else ""
    return f"_op {v._op!r}, data {v.data!r}{label}"


def _walk(outputs):
    """Every node under outputs, inputs before users (depth-first, operand order), with
    each node's inputs. Iterative: graphs may be millions of nodes deep."""
    order, inputs_of, position = [], [], {}
    entered = set()
    for root in outputs:
        if root._id in entered:
            continue
        entered.add(root._id)
        stack = [[root, root._inputs, 0]]
        while stack:
            frame = stack[-1]
            node, ins, i = frame
            if i < len(ins):
                frame[2] = i + 1
                child = ins[i]
                if child._id not in entered:
                    entered.add(child._id)
                    stack.append([child, child._inputs, 0])
            else:
                stack.pop()
                position[node._id] = len(order)
                order.append(node)
                inputs_of.append(tuple(position[c._id] for c in ins))
    return order, inputs_of, position


_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_RESERVED = {
    "forward",
    "training",
    "graph",
    "code",
    "parameters",
    "buffers",
    "modules",
    "children",
    "state_dict",
    "to",
    "type",
    "double",
    "float",
    "half",
    "cuda",
    "cpu",
    "eval",
    "train",
    "apply",
    "zero_grad",
    "register_buffer",
    "register_parameter",
    "add_module",
    "get_submodule",
    "get_parameter",
    "get_buffer",
    "recompile",
    "print_readable",
    "meta",
    "leaves",
    "pyautograd_leaves",
    "dump_patches",
    "call_super_init",
    "T_destination",
}


# Names the exporters make for parameters and buffers (and fx for tensor constants).
_GENERATED_NAME = re.compile(r"(p\d+|linear\d+_(weight|bias)|const\d+|output_const\d+|_tensor_constant\d+)\Z")
# Globals of the code fx generates: an argument of one of these names would shadow it
# (an input labelled "inf" took the place of the constant inf).
_FX_GLOBALS = {"torch", "inf", "nan", "device", "pytree", "fx_pytree", "NoneType"}


def _usable(name):
    """Whether a label can name an argument or a parameter: an identifier, not a keyword,
    not `self` (the generated forward's own), and no attribute of a torch module (torch
    is loaded when to_torch plans: the list above is what any version has, this the rest)."""
    if not _IDENTIFIER.match(name) or keyword.iskeyword(name) or name in _RESERVED or name == "self":
        return False
    if name in _FX_GLOBALS or name.startswith("pyautograd"):  # the fx_call functions' globals
        return False
    fx = getattr(sys.modules.get("torch"), "fx", None)
    return not (fx and (hasattr(fx.GraphModule, name) or name in getattr(fx.graph, "_custom_builtins", ())))


class _Plan:
    """A graph as vector instructions, target-neutral. Refs (how to get a scalar):
    ("arg", k), ("const", x), ("param", name, index), ("var", v), ("col", v, j).
    Instructions: (kind, out var, ...), run in order by a target."""

    def __init__(self, outputs, inputs):
        self.single, outputs = _as_values(outputs, "outputs")
        _, inputs = _as_values(inputs, "inputs")
        if not outputs:
            raise ValueError("export needs at least one output")
        order, ins_of, position = _walk(outputs)
        ops = _ag.node_ops(order)
        n = len(order)
        arg_of = {}
        for k, (v, op) in enumerate(zip(inputs, _ag.node_ops(inputs))):
            if op & 255 not in (_LEAF, _CUSTOM, _LOCAL) or v._inputs:
                raise ValueError(f"inputs[{k}] must be a leaf Value, not a node computed by an op ({_describe(v)})")
            if v._id in arg_of:
                raise ValueError(f"inputs[{k}] is listed twice")
            arg_of[v._id] = k
        kind = [None] * n  # 'arg', 'param', 'const', 'op'
        batched = [False] * n
        for p, v in enumerate(order):
            op, chosen = ops[p] & 255, ops[p] & _CHOSEN
            ins = ins_of[p]
            if chosen:
                raise ExportError(
                    f"cannot export a derivative built by grad(create_graph=True) "
                    f"that picked a branch by the values of the time "
                    f"({_describe(v)}): other values may not take it"
                )
            if v._id in arg_of:
                kind[p], batched[p] = "arg", True
                continue
            if not ins and op in (_LEAF, _CUSTOM, _LOCAL):
                kind[p] = "param"
                continue
            if op == _CONST:
                kind[p] = "const"
                continue
            if op in (_CUSTOM, _LOCAL):
                how = (
                    "its local derivatives are numbers, and its value was computed in Python"
                    if op == _LOCAL
                    else "its value was computed in Python"
                )
                raise ExportError(
                    f"cannot export a hand-made node ({_describe(v)}): {how}, "
                    f"so it is no function of its inputs that torch or JAX could run"
                )
            if "_backward" in v.__dict__:
                raise ExportError(
                    f"cannot export a node with a Python _backward ({_describe(v)}): a Python function is no graph"
                )
            name = OP_NAMES[op]
            if op not in (_SUM, _DOT) and name not in OP_RULES:
                raise ExportError(f"no export rule for op {name!r} ({_describe(v)})")
            kind[p] = "op"
            batched[p] = any(batched[q] for q in ins)
            if ins and all(kind[q] == "const" for q in ins):
                kind[p] = "const"  # a number computed from numbers: pyautograd's value
        self.order, self.ins_of, self.ops, self.kind, self.batched = order, ins_of, ops, kind, batched
        self.n_inputs = len(inputs)
        self.arg_of = arg_of
        self.arg_names = self._arg_names(inputs)
        self.code = []  # instructions
        self.widths = []  # per var: None (scalar) or vector width
        self.var_batched = []
        self.params = {}  # name -> (shape, data list, leaves list)  (row-major)
        self.consts = {}  # name -> (shape, data list)
        self._plan([position[v._id] for v in outputs])

    @staticmethod
    def _arg_names(inputs):
        labels = [v.label for v in inputs]
        names = []
        for k, label in enumerate(labels):
            ok = _usable(label) and labels.count(label) == 1 and not re.match(r"x\d+\Z", label)
            names.append(label if ok else f"x{k}")
        return names

    def _var(self, width, batched):
        self.widths.append(width)
        self.var_batched.append(batched)
        return len(self.widths) - 1

    # -- structure: dot nodes over the same inputs become one matrix product --

    def _groups(self):
        """member position -> (group, column); groups as dicts."""
        kind, ins_of, ops = self.kind, self.ins_of, self.ops
        source = [k in ("param", "const") for k in kind]
        by_key, groups = {}, []
        for p in range(len(kind)):
            if kind[p] != "op" or ops[p] & 255 != _DOT:
                continue
            ins = ins_of[p]
            pairs = len(ins) // 2
            if pairs == 0:
                continue
            bias = ins[-1] if len(ins) % 2 else None
            if bias is not None and not source[bias]:
                continue
            evens, odds = ins[0 : 2 * pairs : 2], ins[1 : 2 * pairs : 2]
            if all(source[q] for q in evens):
                ws, xs = evens, odds
            elif all(source[q] for q in odds):
                ws, xs = odds, evens
            else:
                continue
            key = (xs, bias is None)
            group = by_key.get(key)
            if group is None:
                group = by_key[key] = {"kind": "linear", "xs": xs, "rows": [], "biases": [], "members": []}
                groups.append(group)
            group["rows"].append(ws)
            group["biases"].append(bias)
            group["members"].append(p)
        member = {}
        for g, group in enumerate(groups):
            for j, p in enumerate(group["members"]):
                member[p] = (g, j)
        # an elementwise unary op applied to every output of a group: one op on the vector
        while True:
            buckets = {}
            for p in range(len(kind)):
                if (
                    kind[p] == "op"
                    and p not in member
                    and len(ins_of[p]) == 1
                    and ins_of[p][0] in member
                    and OP_NAMES[ops[p] & 255] in OP_RULES
                    and OP_RULES[OP_NAMES[ops[p] & 255]].arity == 1
                ):
                    g, j = member[ins_of[p][0]]
                    buckets.setdefault((ops[p] & 255, g), {}).setdefault(j, []).append(p)
            added = False
            for (op, g), columns in buckets.items():
                width = len(groups[g]["members"])
                if len(columns) != width or any(len(ps) != 1 for ps in columns.values()):
                    continue  # only ops covering the whole vector (else unused columns' nan)
                members = [columns[j][0] for j in range(width)]
                groups.append({"kind": "map", "op": OP_NAMES[op], "of": g, "members": members})
                for j, p in enumerate(members):
                    member[p] = (len(groups) - 1, j)
                added = True
            if not added:
                return groups, member

    def _assign_parameters(self, groups):
        """Leaves -> parameters: a group's fresh weight leaves become one matrix (and its
        biases a vector); every other leaf is a scalar, named by its label if usable.
        Parameters come in the order the graph first uses them."""
        kind, order, ins_of = self.kind, self.order, self.ins_of
        first_user = {}
        for p, ins in enumerate(ins_of):
            for q in ins:
                first_user.setdefault(q, p)
        owner = {}  # leaf position -> (param key, index)
        entries = []  # (order key, param key, shape, leaf positions)
        for g, group in enumerate(groups):
            if group["kind"] != "linear":
                continue
            rows, at = group["rows"], group["members"][0]
            flat = [q for row in rows for q in row]
            if (
                all(kind[q] == "param" for q in flat)
                and len(set(flat)) == len(flat)
                and not any(q in owner for q in flat)
            ):
                key = ("weight", g)
                for i, q in enumerate(flat):
                    owner[q] = (key, divmod(i, len(rows[0])))
                entries.append(((at, 0), key, (len(rows), len(rows[0])), flat))
            biases = group["biases"]
            if (
                biases[0] is not None
                and all(kind[q] == "param" for q in biases)
                and len(set(biases)) == len(biases)
                and not any(q in owner for q in biases)
            ):
                key = ("bias", g)
                for j, q in enumerate(biases):
                    owner[q] = (key, (j,))
                entries.append(((at, 1), key, (len(biases),), list(biases)))
        scalars = [p for p in range(len(kind)) if kind[p] == "param" and p not in owner]
        entries += [((first_user.get(p, -1), 2), ("scalar", p), (), [p]) for p in scalars]
        entries.sort(key=lambda entry: entry[0])
        labels = [order[p].label for p in scalars]
        names = {}
        for p, label in zip(scalars, labels):
            if _usable(label) and labels.count(label) == 1 and not _GENERATED_NAME.match(label):
                names[("scalar", p)] = label
        counters = {"scalar": 0, "linear": 0}
        linear_number = {}
        for _, key, shape, leaves in entries:
            if key in names:
                pass
            elif key[0] == "scalar":
                names[key] = f"p{counters['scalar']}"
                counters["scalar"] += 1
            else:
                g = key[1]
                if g not in linear_number:
                    linear_number[g] = counters["linear"]
                    counters["linear"] += 1
                names[key] = f"linear{linear_number[g]}_{key[0]}"
            name = names[key]
            self.params[name] = (shape, [order[q].data for q in leaves], [order[q] for q in leaves])
        self.param_of = {q: (names[key], index) for q, (key, index) in owner.items()}
        for p in scalars:
            self.param_of[p] = (names[("scalar", p)], ())

    # -- instructions --

    def _plan(self, outputs):
        groups, member = self._groups()
        self._assign_parameters(groups)
        kind, order, ins_of = self.kind, self.order, self.ins_of
        code, refs = self.code, [None] * len(order)
        group_var = {}
        scalar_cache = {}

        def scalar(ref):
            """ref as something an op takes: ('var', v), ('arg', k), ('const', x), or a
            parameter element."""
            if ref[0] != "col":
                return ref
            got = scalar_cache.get(ref)
            if got is None:
                v = self._var(None, self.var_batched[ref[1]])
                code.append(("select", v, ref[1], ref[2]))
                got = scalar_cache[ref] = ("var", v)
            return got

        def is_batched(ref):
            return ref[0] == "arg" or (ref[0] in ("var", "col") and self.var_batched[ref[1]])

        stacks = {}

        def vector(qs):
            """The scalars at positions qs as one vector var."""
            qs = tuple(qs)
            if qs in stacks:
                return stacks[qs]
            stacks[qs] = v = new_vector(qs)
            return v

        def new_vector(qs):
            rs = [refs[q] for q in qs]
            if (
                rs
                and rs[0][0] == "col"
                and self.widths[rs[0][1]] == len(rs)
                and all(r[0] == "col" and r[1] == rs[0][1] and r[2] == j for j, r in enumerate(rs))
            ):
                return rs[0][1]
            items = [scalar(r) for r in rs]
            flags = [is_batched(r) for r in items]
            v = self._var(len(items), any(flags))
            code.append(("stack", v, items, flags))
            return v

        def matrix(qs_rows, key):
            """A weight matrix (or bias vector): its parameter, a constant, or stacked."""
            flat = [q for row in qs_rows for q in row] if key == "weight" else list(qs_rows)
            shape = (len(qs_rows), len(qs_rows[0])) if key == "weight" else (len(qs_rows),)
            first = self.param_of.get(flat[0])
            # The parameter itself only where every leaf sits at its own place in it: a
            # layer that reads another's leaves transposed, permuted or repeated (tied
            # weights) gets its matrix built from them.
            places = (
                [divmod(i, shape[1]) for i in range(len(flat))] if key == "weight" else [(i,) for i in range(len(flat))]
            )
            if (
                first is not None
                and self.params[first[0]][0] == shape
                and all(self.param_of.get(q) == (first[0], place) for q, place in zip(flat, places))
            ):
                return ("param", first[0], None)
            if all(kind[q] == "const" for q in flat):
                name = f"const{len(self.consts)}"
                self.consts[name] = (shape, [order[q].data for q in flat])
                return ("constant", name)
            items = [scalar(refs[q]) for q in flat]
            v = self._var(None, False)
            code.append(("build", v, items, shape))
            return ("var", v)

        # Sources first: a group's matrix is built at its first dot node, and the leaves of
        # its later rows (a weight tied across neurons) may come after it in the order.
        for p, k in enumerate(kind):
            if k == "const":
                refs[p] = ("const", float(order[p].data))
            elif k == "param":
                name, index = self.param_of[p]
                refs[p] = ("param", name, index)
        for p, v in enumerate(order):
            k = kind[p]
            if k == "arg":
                refs[p] = ("arg", self.arg_of[v._id])
                continue
            if k in ("const", "param"):
                continue
            ins = ins_of[p]
            if p in member:
                g, j = member[p]
                if g not in group_var:
                    group = groups[g]
                    if group["kind"] == "linear":
                        x = vector(group["xs"])
                        w = matrix(group["rows"], "weight")
                        b = None if group["biases"][0] is None else matrix(group["biases"], "bias")
                        out = self._var(len(group["members"]), self.var_batched[x])
                        code.append(("linear", out, x, w, b))
                    else:
                        src = group_var[group["of"]]
                        out = self._var(self.widths[src], self.var_batched[src])
                        code.append(("map", out, group["op"], src))
                    group_var[g] = out
                refs[p] = ("col", group_var[g], j)
                continue
            op = self.ops[p] & 255
            if op == _SUM:
                if not ins:
                    refs[p] = ("const", 0.0)
                elif len(ins) == 1:
                    refs[p] = refs[ins[0]]
                else:
                    vec = vector(ins)
                    out = self._var(None, self.var_batched[vec])
                    code.append(("sum", out, vec))
                    refs[p] = ("var", out)
                continue
            if op == _DOT:
                pairs = len(ins) // 2
                bias = scalar(refs[ins[-1]]) if len(ins) % 2 else None
                if pairs == 0:  # dot([], []) is 0.0, plus its bias if it has one
                    refs[p] = ("const", 0.0) if bias is None else bias
                    continue
                wv = vector(ins[0 : 2 * pairs : 2])
                xv = vector(ins[1 : 2 * pairs : 2])
                out = self._var(
                    None, self.var_batched[wv] or self.var_batched[xv] or (bias is not None and is_batched(bias))
                )
                code.append(("dot", out, wv, xv, bias))
                refs[p] = ("var", out)
                continue
            args = [scalar(refs[q]) for q in ins]
            out = self._var(None, any(is_batched(a) for a in args))
            code.append(("op", out, OP_NAMES[op], args))
            refs[p] = ("var", out)
        self.outputs = []
        for p in outputs:
            r = scalar(refs[p])
            if not is_batched(r) and self.n_inputs:
                v = self._var(None, True)
                code.append(("broadcast", v, r))
                r = ("var", v)
            self.outputs.append(r)

    def release(self):
        """Drops the graph's Values: what runs the plan needs none (an exported function
        must not keep the whole scalar graph alive)."""
        self.order = self.ins_of = self.ops = self.kind = self.batched = None
        self.params = {name: (shape, data, None) for name, (shape, data, _) in self.params.items()}

    def leaves(self):
        """Parameter name -> the Values it holds: a Value, a list (a bias vector), or a
        list of rows (a weight matrix)."""
        out = {}
        for name, (shape, _, leaves) in self.params.items():
            if shape == ():
                out[name] = leaves[0]
            elif len(shape) == 1:
                out[name] = list(leaves)
            else:
                out[name] = [list(leaves[i * shape[1] : (i + 1) * shape[1]]) for i in range(shape[0])]
        return out


def _run(plan, target, xs):
    """Runs plan's instructions on a target (torch proxies, or jax arrays); returns the
    outputs."""
    env = [None] * len(plan.widths)
    elements = {}

    def get(ref):
        tag = ref[0]
        if tag == "var":
            return env[ref[1]]
        if tag == "arg":
            return xs[ref[1]]
        if tag == "const":
            return ref[1]
        if tag == "constant":
            return target.constant(ref[1])
        name, index = ref[1], ref[2]
        if not index:
            return target.param(name)
        got = elements.get((name, index))
        if got is None:
            got = elements[(name, index)] = target.param(name)[index]
        return got

    for ins in plan.code:
        tag, out = ins[0], ins[1]
        if tag == "op":
            env[out] = target.op(ins[2], [get(a) for a in ins[3]])
        elif tag == "select":
            env[out] = target.select(env[ins[2]], ins[3])
        elif tag == "stack":
            env[out] = target.stack([get(a) for a in ins[2]], ins[3])
        elif tag == "linear":
            env[out] = target.linear(env[ins[2]], get(ins[3]), None if ins[4] is None else get(ins[4]))
        elif tag == "map":
            env[out] = target.op(ins[2], [env[ins[3]]])
        elif tag == "sum":
            env[out] = target.sum(env[ins[2]])
        elif tag == "dot":
            env[out] = target.dot(env[ins[2]], env[ins[3]], None if ins[4] is None else get(ins[4]))
        elif tag == "build":
            env[out] = target.build([get(a) for a in ins[2]], ins[3])
        elif tag == "broadcast":
            env[out] = target.broadcast(get(ins[2]), xs[0])
        else:  # pragma: no cover
            raise AssertionError(tag)
    return [target.result(get(r)) for r in plan.outputs]


# ---- torch ----

# Ops whose torch form needs tensors where the graph has a number (a constant): every
# operand, or only the first (x / 2.0 stays as it is). pow takes tensors on both sides:
# torch turns x ** 0.5 into sqrt and x ** -0.5 into rsqrt, which differ from C's pow at
# -0.0 and -inf (-0.0 for 0.0, nan for inf).
_TENSORS_ONLY = {"maximum", "minimum", "gate", "leaky_slope", "max_share", "pow"}
_NUMBER_FIRST = {"truediv"}


class _TorchTarget:
    def __init__(self, torch, root, graph, tracer):
        from torch.fx.proxy import Proxy

        self.torch, self.root, self.graph, self.tracer, self.Proxy = torch, root, graph, tracer, Proxy
        self.attrs = {}

    def _attr(self, name):
        got = self.attrs.get(name)
        if got is None:
            got = self.attrs[name] = self.Proxy(self.graph.get_attr(name), self.tracer)
        return got

    param = constant = _attr

    def op(self, name, args):
        if (name in _TENSORS_ONLY and any(isinstance(a, float) for a in args)) or (
            name in _NUMBER_FIRST and isinstance(args[0], float)
        ):
            # a number where these take tensors: torch's Python-number forms differ (2.0 ** x
            # is wrong for a negative base, 0.0 / x's gradient is nan at 1e-300), or do not
            # exist (torch.maximum), or are float32 (torch.where)
            like = next(a for a in args if not isinstance(a, float))
            args = [self.torch.full_like(like, a) if isinstance(a, float) else a for a in args]
        fn = OP_RULES[name].torch
        if getattr(fn, "fx_call", False):
            return self.tracer.create_proxy("call_function", fn, tuple(args), {})
        return fn(*args)

    def select(self, v, j):
        return v.select(-1, j)

    def _tensors(self, items, flags):
        like = next((i for i, f in zip(items, flags) if f), None)
        if like is not None:
            return [
                i if f else (self.torch.full_like(like, i) if isinstance(i, float) else i.expand_as(like))
                for i, f in zip(items, flags)
            ]
        like = next((i for i in items if not isinstance(i, float)), None)
        if like is None:  # only constants: buffers, unbatched (as JAX's stack of them)
            return [self.result(i) for i in items]
        return [self.torch.full_like(like, i) if isinstance(i, float) else i for i in items]

    def stack(self, items, flags):
        if not all(flags):
            items = self._tensors(items, flags)
        return self.torch.stack(items, -1)

    def build(self, items, shape):
        return self.torch.stack(self._tensors(items, [False] * len(items)), -1).reshape(shape)

    def linear(self, x, w, b):
        return self.torch.nn.functional.linear(x, w, b)

    def sum(self, v):
        return v.sum(-1)

    def dot(self, w, x, b):
        total = (w * x).sum(-1)
        return total if b is None else b + total

    def broadcast(self, r, like):
        return self.torch.full_like(like, r) if isinstance(r, float) else r.expand_as(like)

    def result(self, r):
        if isinstance(r, float):  # a constant output of a graph with no inputs, or a stack's
            name = f"output_const{len(self.attrs)}"
            self.root.register_buffer(name, self.torch.tensor(r, dtype=self.torch.float64))
            return self._attr(name)
        return r


def to_torch(outputs: Value | Sequence[Value], inputs: Value | Sequence[Value]) -> "torch.fx.GraphModule":
    """The graph computing `outputs` (a Value or a list of Values) from `inputs` (the leaf
    Values that become its arguments, in order) as a torch.fx.GraphModule.

    Called with one float64 tensor per input, all of one shape, it returns the outputs
    elementwise over that shape: a tensor for one output, a tuple for several. Every
    other leaf under the outputs is an nn.Parameter (float64): a layer's weights and
    biases one matrix and one vector (`linear0_weight`, `linear0_bias`), other leaves
    scalars named by their label where it is a usable name (else p0, p1, ..., in the
    order the graph first uses them). `module.pyautograd_leaves` maps each parameter
    name to the Values it came from. Needs torch (the [torch] extra).
    """
    torch = _need("torch", "torch")
    import torch.fx as fx
    from torch.fx.proxy import GraphAppendingTracer, Proxy

    plan = _Plan(outputs, inputs)
    root = torch.nn.Module()
    for name, (shape, data, _) in plan.params.items():
        root.register_parameter(name, torch.nn.Parameter(torch.tensor(data, dtype=torch.float64).reshape(shape)))
    for name, (shape, data) in plan.consts.items():
        root.register_buffer(name, torch.tensor(data, dtype=torch.float64).reshape(shape))
    graph = fx.Graph()
    tracer = GraphAppendingTracer(graph)
    xs = [Proxy(graph.placeholder(name), tracer) for name in plan.arg_names]
    outs = _run(plan, _TorchTarget(torch, root, graph, tracer), xs)
    graph.output(outs[0].node if len(outs) == 1 else tuple(o.node for o in outs))
    module = fx.GraphModule(root, graph, class_name="ExportedGraph")
    module.pyautograd_leaves = plan.leaves()
    plan.release()
    return module


# ---- jax ----

_jax_ops = {}


def _jax_op(name):
    """The JAX function for an op: its forward, and its derivative from OP_RULES (a
    custom_jvp, so jax.grad uses pyautograd's rules where jax's own differ)."""
    fn = _jax_ops.get(name)
    if fn is not None:
        return fn
    import jax
    import jax.numpy as jnp

    rule = OP_RULES[name]
    if rule.arity == 1:

        @jax.custom_jvp
        def fn(a):
            return rule.forward(jnp, a, None)

        @fn.defjvp
        def _unary_jvp(primals, tangents):
            (a,), (ta,) = primals, tangents
            out = rule.forward(jnp, a, None)
            return out, rule.to_a(ta, a, None, out, jnp)
    else:
        from jax.custom_derivatives import SymbolicZero

        @jax.custom_jvp
        def fn(a, b):
            return rule.forward(jnp, a, b)

        # An operand that does not move (a constant, the 2 in x ** 2) has no tangent: its
        # pass-back is left out, not multiplied by a zero (x ** 2 at x < 0: 0 * nan).
        def _binary_jvp(primals, tangents):
            (a, b), (ta, tb) = primals, tangents
            out = rule.forward(jnp, a, b)
            moved = [(to, t) for to, t in ((rule.to_a, ta), (rule.to_b, tb)) if not isinstance(t, SymbolicZero)]
            parts = [to(t, a, b, out, jnp) for to, t in moved]
            return out, parts[0] + parts[1] if len(parts) == 2 else parts[0] if parts else jnp.zeros_like(out)

        fn.defjvp(_binary_jvp, symbolic_zeros=True)

    fn.__name__ = f"pyautograd_{name}"
    _jax_ops[name] = fn
    return fn


class _JaxTarget:
    def __init__(self, jnp, params, consts):
        self.jnp, self.params, self.consts = jnp, params, consts

    def param(self, name):
        return self.params[name]

    def constant(self, name):
        return self.consts[name]

    def op(self, name, args):
        jnp = self.jnp
        return _jax_op(name)(*(jnp.asarray(a, jnp.float64) if isinstance(a, float) else a for a in args))

    def select(self, v, j):
        return v[..., j]

    def stack(self, items, flags):
        jnp = self.jnp
        if not all(flags):
            like = next((i for i, f in zip(items, flags) if f), None)
            shape = jnp.shape(like) if like is not None else ()
            items = [i if f else jnp.broadcast_to(jnp.asarray(i, jnp.float64), shape) for i, f in zip(items, flags)]
        return jnp.stack(items, -1)

    def build(self, items, shape):
        jnp = self.jnp
        return jnp.stack([jnp.asarray(i, jnp.float64) for i in items]).reshape(shape)

    def linear(self, x, w, b):
        y = self.jnp.matmul(x, w.T)
        return y if b is None else y + b

    def sum(self, v):
        return self.jnp.sum(v, -1)

    def dot(self, w, x, b):
        total = self.jnp.sum(w * x, -1)
        return total if b is None else b + total

    def broadcast(self, r, like):
        return self.jnp.broadcast_to(self.jnp.asarray(r, self.jnp.float64), self.jnp.shape(like))

    def result(self, r):
        return self.jnp.asarray(r, self.jnp.float64) if isinstance(r, float) else r


def to_jax(
    outputs: Value | Sequence[Value], inputs: Value | Sequence[Value]
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The graph computing `outputs` from `inputs` as a pure JAX function: returns
    (fn, params), where fn(params, *xs) takes one float64 array per input, all of one
    shape, and returns the outputs elementwise over it (an array for one output, a tuple
    for several). params is a dict of float64 arrays named as to_torch names its
    parameters; fn works under jax.jit, jax.grad and jax.vmap, and fn.pyautograd_leaves
    maps each parameter name to the Values it came from.

    Exactness needs float64: this turns on jax's `jax_enable_x64` flag. Needs jax (the
    [jax] extra).
    """
    jax = _need("jax", "jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    plan = _Plan(outputs, inputs)
    params = {name: jnp.asarray(data, jnp.float64).reshape(shape) for name, (shape, data, _) in plan.params.items()}
    consts = {name: jnp.asarray(data, jnp.float64).reshape(shape) for name, (shape, data) in plan.consts.items()}
    n_inputs = plan.n_inputs

    def fn(params, *xs):
        if len(xs) != n_inputs:
            raise TypeError(
                f"the exported function takes params and {n_inputs} input{'' if n_inputs == 1 else 's'}, not {len(xs)}"
            )
        outs = _run(plan, _JaxTarget(jnp, params, consts), xs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    fn.pyautograd_leaves = plan.leaves()  # type: ignore[attr-defined]
    plan.release()
    return fn, params


# ---- pyautograd.nn modules as torch.nn modules ----


def _check_exportable(part: Any, cls: type) -> None:
    """Linear and ReLU stand for what pyautograd.nn's classes compute, and nothing else."""
    from . import nn

    if not (isinstance(part, cls) and nn._computes_as_defined(part)):
        raise TypeError(
            f"to_torch() exports what pyautograd.nn's Neuron, Layer and MLP compute; a "
            f"{type(part).__name__!r} where a {cls.__name__} belongs computes something else "
            f"(a __call__ of its own, or not a {cls.__name__})"
        )


def module_to_torch(module: Any) -> Any:
    """A pyautograd.nn Neuron, Layer or MLP as a torch.nn.Sequential of nn.Linear (float64,
    the same weights) and nn.ReLU: it maps a tensor of shape (..., nin) to (..., nout).
    Needs torch (the [torch] extra)."""
    torch = _need("torch", "torch")
    from . import nn

    if isinstance(module, nn.MLP):
        layers = list(module.layers)
        _check_exportable(module, nn.MLP)
    elif isinstance(module, nn.Layer):
        layers = [module]
    elif isinstance(module, nn.Neuron):
        layers = []
    else:
        raise TypeError(f"to_torch() exports a Neuron, a Layer or an MLP, not {type(module).__name__!r}")
    for layer in layers:
        _check_exportable(layer, nn.Layer)
    parts = []
    for neurons in [list(layer.neurons) for layer in layers] if layers else [[module]]:
        for neuron in neurons:
            _check_exportable(neuron, nn.Neuron)
        nins = {len(n.w) for n in neurons}
        nonlins = {bool(n.nonlin) for n in neurons}
        if len(nins) != 1 or len(nonlins) != 1:
            raise ValueError(
                "to_torch() needs the neurons of a layer to have the same number of inputs and the same nonlin"
            )
        linear = torch.nn.Linear(nins.pop(), len(neurons), dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in neurons], dtype=torch.float64))
            linear.bias.copy_(torch.tensor([n.b.data for n in neurons], dtype=torch.float64))
        parts.append(linear)
        if nonlins.pop():
            parts.append(torch.nn.ReLU())
    return torch.nn.Sequential(*parts)
