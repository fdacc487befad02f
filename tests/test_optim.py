"""pyautograd.optim against torch.optim: the same parameters after several steps (within
1e-12) for SGD and Adam/AdamW over their settings, with lr changed between steps; and
the optimizers' own contract (zero_grad, validation, keeping parameters alive).
"""

import copy
import gc
import math
import pickle
import sys
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


def run_both(torch, make_ours, make_theirs, seed=0, n=7, lrs=None, changes=None):
    """Steps both optimizers STEPS times; lrs[k] is set before step k, and so is each
    hyper-parameter in changes[k] (a dict of name: value), on ours as an attribute and on
    torch's in its param group."""
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
        for name, value in (changes or {}).get(k, {}).items():
            setattr(opt, name, value)
            for group in topt.param_groups:
                group[name] = value
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
    run_both(
        torch,
        lambda ps: optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 0.1, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.05, "weight_decay": 0.1},
        {"lr": 0.01, "betas": (0.0, 0.5)},
    ],
)
def test_adam_matches_torch(torch, kwargs):
    run_both(torch, lambda ps: optim.Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs))


@pytest.mark.parametrize("weight_decay", [0.01, 0.3])
def test_decoupled_adam_matches_torch_adamw(torch, weight_decay):
    run_both(
        torch,
        lambda ps: optim.Adam(ps, lr=0.05, weight_decay=weight_decay, decoupled=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=weight_decay),
    )


def test_lr_set_between_steps_matches_torch(torch):
    lrs = [1.0 - 0.9 * k / STEPS for k in range(STEPS)]
    run_both(
        torch,
        lambda ps: optim.SGD(ps, lr=9.0, momentum=0.3),
        lambda ps: torch.optim.SGD(ps, lr=9.0, momentum=0.3),
        lrs=[x * 0.1 for x in lrs],
    )
    run_both(
        torch, lambda ps: optim.Adam(ps, lr=9.0), lambda ps: torch.optim.Adam(ps, lr=9.0), lrs=[x * 0.1 for x in lrs]
    )


def test_sgd_hyper_parameters_set_between_steps_match_torch(torch):
    # momentum turned on after construction (its buffer starts then, as torch's), off,
    # and on again (the buffer carries on); weight decay turned on late
    changes = {
        1: {"momentum": 0.9},
        2: {"weight_decay": 0.1},
        3: {"momentum": 0.0},
        4: {"momentum": 0.5, "weight_decay": 0.0},
    }
    run_both(torch, lambda ps: optim.SGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05), changes=changes)


def test_adam_hyper_parameters_set_between_steps_match_torch(torch):
    changes = {
        1: {"betas": (0.5, 0.9)},
        2: {"eps": 1e-3},
        3: {"weight_decay": 0.2},
        5: {"betas": (0.0, 0.99), "eps": 1e-8},
    }
    run_both(torch, lambda ps: optim.Adam(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05), changes=changes)
    run_both(
        torch,
        lambda ps: optim.Adam(ps, lr=0.05, decoupled=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.0),
        changes={2: {"weight_decay": 0.3}, 4: {"betas": (0.7, 0.95)}},
    )


def test_momentum_set_after_construction_is_used_at_the_next_step():
    # once "invalid arguments to SGD.step": the momentum buffer was only made by __init__
    p = Value(1.0)
    opt = optim.SGD([p], lr=0.5)
    opt.momentum = 0.9
    p.grad = 1.0
    opt.step()  # first step with momentum: buf = grad
    assert p.data == 0.5
    opt.step()  # buf = 0.9 * 1 + 1
    assert p.data == 0.5 - 0.5 * 1.9


@pytest.mark.parametrize(
    "make, name, bad, error, message",
    [
        (lambda ps: optim.SGD(ps, lr=0.1), "momentum", -0.9, ValueError, "momentum must be >= 0"),
        (lambda ps: optim.SGD(ps, lr=0.1), "momentum", "0.9", TypeError, "momentum must be a real"),
        (lambda ps: optim.SGD(ps, lr=0.1), "weight_decay", float("nan"), ValueError, "weight_decay"),
        (lambda ps: optim.SGD(ps, lr=0.1), "lr", None, TypeError, "lr must be a real"),
        (lambda ps: optim.Adam(ps), "betas", (0.9, 1.0), ValueError, r"betas\[1\] must be in \[0, 1\)"),
        (lambda ps: optim.Adam(ps), "betas", 0.9, TypeError, "betas must be a pair"),
        (lambda ps: optim.Adam(ps), "betas", ("a", 0.9), TypeError, r"betas\[0\] must be a real"),
        (lambda ps: optim.Adam(ps), "eps", -1e-8, ValueError, "eps must be >= 0"),
        (lambda ps: optim.Adam(ps), "weight_decay", True, TypeError, "weight_decay must be a real"),
    ],
)
def test_a_bad_hyper_parameter_set_after_construction_raises_at_once(make, name, bad, error, message):
    p = Value(1.0)
    opt = make([p])
    before = getattr(opt, name)
    with pytest.raises(error, match=message):
        setattr(opt, name, bad)
    assert getattr(opt, name) == before  # unchanged, and the optimizer still steps
    p.grad = 1.0
    opt.step()
    assert p.data < 1.0


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
    for bad in ("no", "False", [0], 2, None):  # bool("no") once switched AdamW on
        with pytest.raises(TypeError, match="decoupled"):
            optim.Adam([v], decoupled=bad)
    assert optim.Adam([v], decoupled=1).decoupled is True
    opt = optim.SGD([v], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -0.1
    opt.lr = 0.25
    assert opt.lr == 0.25


def test_reprs():
    ps = [Value(1.0), Value(2.0)]
    assert repr(optim.SGD(ps, lr=0.1)) == "SGD(2 parameters, lr=0.1, momentum=0.0, weight_decay=0.0)"
    assert "decoupled=True" in repr(optim.Adam(ps, decoupled=True))


# ---- saving and resuming ----


def _moons_like(seed):
    from pyautograd import nn

    random.seed(seed)
    model = nn.MLP(2, [6, 1])
    data = [([random.uniform(-1, 1), random.uniform(-1, 1)], random.choice([-1.0, 1.0])) for _ in range(12)]
    return model, data


def _train(model, opt, data, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sum((1 + -y * model(x)).relu() for x, y in data) * (1.0 / len(data))
        loss.backward()
        opt.step()
        losses.append(loss.data)
    return losses


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=0.05, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=0.05, weight_decay=1e-2, decoupled=True),
    ],
)
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "state_dict"])
def test_a_run_saved_and_resumed_gives_bitwise_the_same_losses(make, how):
    model, data = _moons_like(3)
    opt = make(model.parameters())
    whole = _train(model, opt, data, 10)

    model, data = _moons_like(3)
    opt = make(model.parameters())
    first = _train(model, opt, data, 4)
    if how == "pickle":
        model, opt = pickle.loads(pickle.dumps((model, opt)))
    elif how == "deepcopy":
        model, opt = copy.deepcopy((model, opt))
    else:
        saved_weights = [p.data for p in model.parameters()]
        saved = opt.state_dict()
        model, data = _moons_like(3)
        for p, w in zip(model.parameters(), saved_weights):
            p.data = w
        opt = make(model.parameters())
        opt.load_state_dict(saved)
    assert all(a is b for a, b in zip(opt.params, model.parameters()))  # still shared
    assert first + _train(model, opt, data, 6) == whole


@pytest.mark.parametrize("change", ["reverse", "replace", "clear"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copy_steps_what_the_optimizer_steps_whatever_became_of_its_list(change, how):
    # The optimizer never reads opt.params again after it is made; a copy once rebuilt
    # itself from that list, so a changed list gave it other parameters, or the state
    # of one parameter on another.
    a, b = Value(1.0), Value(100.0)
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad, b.grad = 1.0, 50.0
    opt.step()
    if change == "reverse":
        opt.params.reverse()
    elif change == "replace":
        opt.params[0] = Value(-7.0)
    else:
        opt.params.clear()
    a2, b2, opt2 = pickle.loads(pickle.dumps((a, b, opt))) if how == "pickle" else copy.deepcopy((a, b, opt))
    for o, x, y in ((opt, a, b), (opt2, a2, b2)):
        x.grad = y.grad = 0.0
        o.step()
    assert (a2.data, b2.data) == (a.data, b.data)
    assert opt2.params[0] is a2 and opt2.params[1] is b2


def test_state_dict_has_torchs_shape_and_bad_states_are_refused():
    xs = [Value(1.0), Value(2.0)]
    opt = optim.Adam(xs, lr=0.1)
    for x in xs:
        x.grad = 0.5
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1] and sd["param_groups"][0]["lr"] == 0.1
    assert set(sd["state"][1]) == {"step", "exp_avg", "exp_avg_sq"} and sd["state"][1]["step"] == 1
    with pytest.raises(ValueError, match="has 1 parameter"):
        optim.Adam([Value(1.0)], lr=0.1).load_state_dict(sd)
    bad = {"state": {}, "param_groups": [dict(sd["param_groups"][0], lr=-1.0)]}
    with pytest.raises(ValueError, match="lr"):
        optim.Adam(xs, lr=0.1).load_state_dict(bad)


@pytest.mark.parametrize("make", [lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)])
def test_a_state_that_fails_to_load_changes_nothing(make):
    # A state missing one parameter's entry once raised a bare KeyError after the new lr
    # and eps were set and the moments zeroed (step left at 3): training went on mixed.
    xs = [Value(1.0), Value(2.0)]
    opt = make(xs)
    for _ in range(3):
        for x in xs:
            x.grad = 0.5
        opt.step()
    before = opt.state_dict()
    broken = copy.deepcopy(before)
    broken["param_groups"][0]["lr"] = 0.5
    del broken["state"][1]
    with pytest.raises(ValueError, match="for every parameter"):
        opt.load_state_dict(broken)
    assert opt.state_dict() == before


def test_subclasses_with_hyper_parameters_of_their_own_load_their_state():
    # load_state_dict once ran the setters on a blank instance of the subclass and read
    # back a private field per name: a plain attribute of the subclass's, or its own
    # __setattr__, made it (and pickle and deepcopy) raise AttributeError.
    class DecayAdam(optim.Adam):
        _HYPER = optim.Adam._HYPER + ("decay",)

        def __init__(self, params, decay=0.99, **kwargs):
            super().__init__(params, **kwargs)
            self.decay = decay

    class Logged(optim.SGD):
        def __init__(self, *args, **kwargs):
            object.__setattr__(self, "log", [])
            super().__init__(*args, **kwargs)

        def __setattr__(self, name, value):
            self.log.append(name)
            object.__setattr__(self, name, value)

    p = Value(1.0)
    opt = DecayAdam([p], lr=0.1, decay=0.5)
    p.grad = 1.0
    opt.step()
    state = opt.state_dict()
    other = DecayAdam([Value(1.0)], lr=0.3, decay=0.9)
    other.load_state_dict(state)
    assert (other.decay, other.lr, other.state_dict()) == (0.5, 0.1, state)
    p2, copied = copy.deepcopy((p, opt))  # through state_dict, as pickle
    assert copied.decay == 0.5 and copied.state_dict() == state
    logged = Logged([Value(1.0)], lr=0.5, momentum=0.9)
    logged.load_state_dict(
        {**logged.state_dict(), "param_groups": [{**logged.state_dict()["param_groups"][0], "lr": 0.25}]}
    )
    assert logged.lr == 0.25


class Capped(optim.SGD):
    def __init__(self, params, lr, cap):
        self.cap = cap
        super().__init__(params, lr)

    @optim.SGD.lr.setter  # SGD's getter, a setter of its own
    def lr(self, value):
        if value > self.cap:
            raise ValueError("lr above cap")
        optim.SGD.lr.fset(self, value)


def test_a_setter_that_reads_the_optimizer_loads_pickles_and_copies():
    # load_state_dict ran the setters on a blank namespace: a setter reading the
    # instance (a bound, a log, super()) raised AttributeError there.
    p = Value(1.0)
    opt = Capped([p], 0.1, cap=1.0)
    state = opt.state_dict()
    opt.load_state_dict({**state, "param_groups": [{**state["param_groups"][0], "lr": 0.5}]})
    assert opt.lr == 0.5 and opt.cap == 1.0
    with pytest.raises(ValueError, match="above cap"):
        opt.load_state_dict({**state, "param_groups": [{**state["param_groups"][0], "lr": 2.0}]})
    assert opt.lr == 0.5
    for copied in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert (type(copied), copied.lr, copied.cap) == (Capped, 0.5, 1.0)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("step", 1e300, "step must be a whole number"),
        ("step", 2**53 + 1, "step must be a whole number"),
        ("step", True, "'step' of parameter 0 must be a real number"),
        ("exp_avg", "abc", "'exp_avg' of parameter 0 must be a real number"),
        ("exp_avg", "1.5", "'exp_avg' of parameter 0 must be a real number"),
        ("exp_avg_sq", 10**400, "'exp_avg_sq' of parameter 0: int too large"),
    ],
)
def test_bad_numbers_in_a_state_are_value_errors_naming_load_state_dict(key, value, message):
    p = Value(1.0)
    opt = optim.Adam([p], lr=0.1)
    p.grad = 1.0
    opt.step()
    before = opt.state_dict()
    bad = copy.deepcopy(before)
    bad["state"][0][key] = value
    with pytest.raises(ValueError, match=f"load_state_dict: {message}"):
        opt.load_state_dict(bad)
    assert opt.state_dict() == before


class WarmSGD(optim.SGD):
    _HYPER = optim.SGD._HYPER + ("mode", "warmup")

    def __init__(self, params, lr, mode="linear", warmup=0):
        self.mode = mode
        super().__init__(params, lr)
        self.warmup = warmup

    @property
    def warmup(self):
        return self._warmup

    @warmup.setter
    def warmup(self, value):
        if self.mode == "constant" and value:
            raise ValueError("a constant schedule has no warm-up")
        self._warmup = value


class ClippedSGD(optim.SGD):
    __slots__ = ("max_lr", "tag")

    def __init__(self, params, lr, max_lr):
        self.max_lr = max_lr
        super().__init__(params, lr)

    @optim.SGD.lr.setter
    def lr(self, value):
        optim.SGD.lr.fset(self, min(value, self.max_lr))


def test_setters_see_plain_hyper_parameters_and_slots_and_both_travel():
    opt = WarmSGD([Value(1.0)], lr=0.1, mode="linear", warmup=5)
    for copied in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert (copied.mode, copied.warmup, copied.lr) == ("linear", 5, 0.1)
    other = WarmSGD([Value(1.0)], lr=0.1, mode="constant", warmup=0)
    other.load_state_dict(opt.state_dict())  # the setter sees the loaded mode, not the old one
    assert (other.mode, other.warmup) == ("linear", 5)

    clipped = ClippedSGD([Value(1.0)], lr=0.5, max_lr=0.2)
    clipped.tag = "run-7"
    clipped.load_state_dict(
        {**clipped.state_dict(), "param_groups": [{"lr": 0.9, "momentum": 0, "weight_decay": 0, "params": [0]}]}
    )
    assert clipped.lr == 0.2
    for copied in (pickle.loads(pickle.dumps(clipped)), copy.deepcopy(clipped)):
        assert (copied.max_lr, copied.tag, copied.lr) == (0.2, "run-7", 0.2)


def test_the_copy_that_load_state_dict_sets_on_runs_no_finalizer_of_the_subclass(tmp_path):
    class LoggingSGD(optim.SGD):
        def __init__(self, params, lr, path):
            super().__init__(params, lr)
            self.log = open(path, "w")

        def __del__(self):
            self.log.close()

    opt = LoggingSGD([Value(1.0)], lr=0.1, path=tmp_path / "train.log")
    opt.load_state_dict(opt.state_dict())
    gc.collect()
    assert not opt.log.closed
    opt.log.close()


def test_load_state_dict_writes_back_nothing_it_did_not_load():
    # Another thread's write while the setters ran (a trace hook stands in for it) was
    # undone: the fields were compared with the live dict, not a snapshot.
    opt = optim.Adam([Value(1.0)], lr=0.01)
    opt.seen = 0
    state = opt.state_dict()

    def hook(frame, event, arg):
        if frame.f_code.co_name == "lr" and event == "call":
            opt.seen = 1
        return None

    sys.settrace(hook)
    try:
        opt.load_state_dict(state)
    finally:
        sys.settrace(None)
    assert opt.seen == 1


class SlotSGD(optim.SGD):
    __slots__ = ("nesterov",)
    _HYPER = optim.SGD._HYPER + ("nesterov",)

    def __init__(self, params, lr, nesterov=False):
        super().__init__(params, lr)
        self.nesterov = nesterov


def test_load_state_dict_sets_a_hyper_parameter_through_its_descriptor_and_keeps_the_class():
    # A slot holding a hyper-parameter was shadowed by a dict entry (nesterov stayed
    # False); the copy the setters run on was once an instance of a subclass made for
    # it, which ran __init_subclass__, joined registries and failed type checks.
    opt = SlotSGD([Value(1.0)], 0.1)
    opt.load_state_dict(SlotSGD([Value(1.0)], 0.5, nesterov=True).state_dict())
    assert (opt.nesterov, opt.lr, "nesterov" in vars(opt)) == (True, 0.5, False)

    made = []

    class Registered(optim.SGD):
        def __init_subclass__(cls, **kwargs):
            raise TypeError(f"{cls.__name__} is final")

        @optim.SGD.lr.setter
        def lr(self, value):
            made.append(type(self))
            optim.Optimizer.lr.fset(self, value)

    final = Registered([Value(1.0)], 0.1)
    final.load_state_dict(
        {**final.state_dict(), "param_groups": [{**final.state_dict()["param_groups"][0], "lr": 0.3}]}
    )
    assert final.lr == 0.3 and set(made) == {Registered} and Registered.__subclasses__() == []
    assert type(copy.deepcopy(final)) is Registered
