"""pyautograd.optim against torch.optim: the same parameters after several steps (within
1e-12) for SGD and Adam/AdamW over their settings, with lr changed between steps; and
the optimizers' own contract (zero_grad, validation, keeping parameters alive).
"""
import gc
import math
import random

import pytest

from pyautograd import optim
from pyautograd.engine import Value

from conftest import require

REL = 1e-12
STEPS = 6


@pytest.fixture
def torch():
    return require("torch", "PYAUTOGRAD_REQUIRE_TORCH")


def loss_of(ps, coeffs, lib_exp):
    """A smooth non-quadratic loss over the parameters, written once for both libraries."""
    total = 0
    for i, (p, (a, b)) in enumerate(zip(ps, coeffs)):
        total = total + a * (p - b) * (p - b) + lib_exp(p * 0.3) * (i % 3)
    return total


def run_both(torch, make_ours, make_theirs, seed=0, n=7, lrs=None):
    rng = random.Random(seed)
    start = [rng.uniform(-2, 2) for _ in range(n)]
    coeffs = [(rng.uniform(0.1, 2), rng.uniform(-1, 1)) for _ in range(n)]
    ours = [Value(x) for x in start]
    theirs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in start]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for k in range(STEPS):
        if lrs:
            opt.lr = lrs[k]
            for group in topt.param_groups:
                group["lr"] = lrs[k]
        opt.zero_grad()
        loss_of(ours, coeffs, lambda v: v.exp()).backward()
        topt.zero_grad()
        loss_of(theirs, coeffs, torch.exp).backward()
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            assert math.isclose(p.data, t.item(), rel_tol=REL, abs_tol=REL), (k, p.data, t.item())
    return ours


@pytest.mark.parametrize("momentum, weight_decay", [(0, 0), (0.9, 0), (0, 0.1), (0.5, 0.01)])
def test_sgd_matches_torch(torch, momentum, weight_decay):
    run_both(torch,
             lambda ps: optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay),
             lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay))


@pytest.mark.parametrize("kwargs", [
    {},
    {"lr": 0.1, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.01, "betas": (0.0, 0.5)},
])
def test_adam_matches_torch(torch, kwargs):
    run_both(torch, lambda ps: optim.Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs))


@pytest.mark.parametrize("weight_decay", [0.01, 0.3])
def test_decoupled_adam_matches_torch_adamw(torch, weight_decay):
    run_both(torch,
             lambda ps: optim.Adam(ps, lr=0.05, weight_decay=weight_decay, decoupled=True),
             lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=weight_decay))


def test_lr_set_between_steps_matches_torch(torch):
    lrs = [1.0 - 0.9 * k / STEPS for k in range(STEPS)]
    run_both(torch, lambda ps: optim.SGD(ps, lr=9.0, momentum=0.3),
             lambda ps: torch.optim.SGD(ps, lr=9.0, momentum=0.3), lrs=[x * 0.1 for x in lrs])
    run_both(torch, lambda ps: optim.Adam(ps, lr=9.0), lambda ps: torch.optim.Adam(ps, lr=9.0),
             lrs=[x * 0.1 for x in lrs])


def test_sgd_is_micrograds_update_bitwise():
    rng = random.Random(1)
    ps = [Value(rng.uniform(-1, 1)) for _ in range(20)]
    for p in ps:
        p.grad = rng.uniform(-1, 1)
    expected = [p.data - 0.37 * p.grad for p in ps]  # micrograd's p.data -= lr * p.grad
    optim.SGD(ps, lr=0.37).step()
    assert [p.data for p in ps] == expected


def test_zero_grad():
    ps = [Value(1.0), Value(2.0)]
    (ps[0] * ps[1]).backward()
    opt = optim.Adam(ps)
    opt.zero_grad()
    assert [p.grad for p in ps] == [0.0, 0.0]


def test_optimizer_keeps_its_parameters_alive():
    opt = optim.SGD([Value(3.0) for _ in range(3)], lr=0.5)
    gc.collect()
    [Value(-1.0) for _ in range(10)]  # would reuse freed ids
    for p in opt.params:
        p.grad = 2.0
    opt.step()
    assert [p.data for p in opt.params] == [2.0, 2.0, 2.0]


def test_validation():
    v = Value(1.0)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(v, lr=0.1)
    with pytest.raises(TypeError, match="'float'"):
        optim.SGD([v, 1.0], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([v, v])
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([v], lr=-1)
    with pytest.raises(TypeError, match="lr"):
        optim.SGD([v], lr="fast")
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([v], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        optim.Adam([v], betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas"):
        optim.Adam([v], betas=0.9)
    with pytest.raises(ValueError, match="eps"):
        optim.Adam([v], eps=-1e-8)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.Adam([v], weight_decay=float("nan"))
    opt = optim.SGD([v], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -0.1
    opt.lr = 0.25
    assert opt.lr == 0.25


def test_reprs():
    ps = [Value(1.0), Value(2.0)]
    assert repr(optim.SGD(ps, lr=0.1)) == "SGD(2 parameters, lr=0.1, momentum=0.0, weight_decay=0.0)"
    assert "decoupled=True" in repr(optim.Adam(ps, decoupled=True))
