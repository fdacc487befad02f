"""pyautograd.losses against torch in float64 (values and gradients within 1e-12), the
hinge loss bitwise against micrograd's demo expression, and the stable forms at logits
where the naive formulas overflow.
"""

import math
import random

import pytest

import pyautograd
from pyautograd import losses
from pyautograd.engine import Value

from conftest import require

REL = 1e-12


def close(a, b):
    return math.isclose(a, b, rel_tol=REL, abs_tol=REL)


def values(xs):
    return [Value(x) for x in xs]


@pytest.fixture
def torch():
    return require("torch", "PYAUTOGRAD_REQUIRE_TORCH")


def against_torch(torch, ours_fn, torch_fn, inputs, targets, torch_targets=None):
    """Runs both losses; checks the loss and the gradient of every input."""
    ours_in = values(inputs)
    loss = ours_fn(ours_in, targets)
    loss.backward()
    t_in = torch.tensor(inputs, dtype=torch.float64, requires_grad=True)
    t_loss = torch_fn(t_in, torch_targets if torch_targets is not None else torch.tensor(targets, dtype=torch.float64))
    t_loss.backward()
    assert isinstance(loss, Value)
    assert close(loss.data, t_loss.item()), (loss.data, t_loss.item())
    for a, b in zip(ours_in, t_in.grad.flatten().tolist()):
        assert close(a.grad, b), (a.grad, b)
    return loss


@pytest.mark.parametrize("seed", range(3))
def test_mse_matches_torch(torch, seed):
    rng = random.Random(seed)
    preds = [rng.uniform(-3, 3) for _ in range(9)]
    targets = [rng.uniform(-3, 3) for _ in range(9)]
    against_torch(torch, losses.mse, torch.nn.functional.mse_loss, preds, targets)


def test_hinge_matches_torch_and_micrograds_demo(torch):
    rng = random.Random(5)
    scores = [rng.uniform(-2, 2) for _ in range(12)]
    labels = [rng.choice([-1, 1]) for _ in scores]
    against_torch(torch, losses.hinge, lambda s, y: torch.relu(1 - y * s).mean(), scores, labels)
    ours = losses.hinge(values(scores), labels)
    demo = [(1 + -yi * si).relu() for yi, si in zip(labels, values(scores))]
    demo_loss = sum(demo) * (1.0 / len(demo))  # micrograd's demo, on pyautograd Values
    assert ours.data == demo_loss.data


@pytest.mark.parametrize("scale", [1.0, 40.0, 800.0])
def test_binary_cross_entropy_with_logits_matches_torch(torch, scale):
    rng = random.Random(int(scale))
    logits = [rng.uniform(-1, 1) * scale for _ in range(10)] + [0.0]
    targets = [rng.choice([0.0, 1.0, 0.3]) for _ in logits]
    loss = against_torch(
        torch,
        losses.binary_cross_entropy_with_logits,
        torch.nn.functional.binary_cross_entropy_with_logits,
        logits,
        targets,
    )
    assert math.isfinite(loss.data)


@pytest.mark.parametrize("scale", [1.0, 50.0, 1000.0])
def test_cross_entropy_matches_torch(torch, scale):
    rng = random.Random(int(scale) + 1)
    rows = [[rng.uniform(-1, 1) * scale for _ in range(4)] for _ in range(6)]
    targets = [rng.randrange(4) for _ in rows]
    ours_in = [values(r) for r in rows]
    loss = losses.cross_entropy(ours_in, targets)
    loss.backward()
    t_in = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t_in, torch.tensor(targets))
    t_loss.backward()
    assert close(loss.data, t_loss.item())
    for row, t_row in zip(ours_in, t_in.grad.tolist()):
        for a, b in zip(row, t_row):
            assert close(a.grad, b)


def test_single_predictions(torch):
    one = losses.cross_entropy(values([0.5, 2.0, -1.0]), 1)
    t = torch.nn.functional.cross_entropy(torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64), torch.tensor(1))
    assert close(one.data, t.item())
    assert close(losses.mse(Value(2.0), 0.5).data, 2.25)
    assert close(losses.hinge(Value(0.25), 1).data, 0.75)
    b = losses.binary_cross_entropy_with_logits(Value(0.0), 1.0)
    assert close(b.data, math.log(2))
    rows = [values([0.1, 0.2]), values([1.0, -1.0])]
    from_iterators = losses.cross_entropy(iter(rows), iter([0, 1]))
    assert from_iterators.data == losses.cross_entropy(rows, [0, 1]).data


def test_bce_gradient_is_sigmoid_minus_target_at_zero():
    x = Value(0.0)
    losses.binary_cross_entropy_with_logits([x], [0.25]).backward()
    assert x.grad == 0.5 - 0.25


def test_numbers_as_predictions_give_constant_losses():
    assert close(losses.mse([1.0, 2.0], [0.0, 0.0]).data, 2.5)
    assert isinstance(losses.binary_cross_entropy_with_logits([1.0], [1.0]), Value)


def test_bad_inputs():
    v = Value(1.0)
    with pytest.raises(ValueError, match="mse"):
        losses.mse([v, v], [1.0])
    with pytest.raises(ValueError, match="hinge"):
        losses.hinge([], [])
    with pytest.raises(TypeError, match=r"mse\(\).*'str'"):
        losses.mse([v], ["a"])
    with pytest.raises(TypeError, match=r"binary_cross_entropy_with_logits\(\).*'NoneType'"):
        losses.binary_cross_entropy_with_logits(None, [1.0])
    with pytest.raises(TypeError, match=r"cross_entropy\(\).*'float'"):
        losses.cross_entropy([v, v], 1.0)
    with pytest.raises(TypeError, match=r"cross_entropy\(\).*'bool'"):
        losses.cross_entropy([v, v], True)
    with pytest.raises(IndexError, match="out of range"):
        losses.cross_entropy([v, v], 2)
    with pytest.raises(ValueError, match="cross_entropy"):
        losses.cross_entropy([[v, v]], [0, 1])


@pytest.mark.parametrize("label", [0, 0.5, 2, -1.5, math.nan])
def test_hinge_labels_outside_plus_minus_one_are_refused(label):
    # a label of 0 would make its example count for nothing: relu(1 - 0 * score) is 1
    v = Value(1.0)
    with pytest.raises(ValueError, match=rf"^hinge\(\) labels must be -1 or \+1, got {label!r}$"):
        losses.hinge([v, v], [1, label])
    assert losses.hinge([v, v, v], [1, -1, 1.0]).data == 2 / 3  # -1, +1 (and 1.0) are fine


@pytest.mark.parametrize("target", [2.0, -0.1, 1.0000001, math.nan, math.inf])
def test_bce_targets_outside_zero_one_are_refused(target):
    v = Value(0.0)
    with pytest.raises(
        ValueError,
        match=r"^binary_cross_entropy_with_logits\(\) targets must be in "
        rf"\[0, 1\], got {target!r}$",
    ):
        losses.binary_cross_entropy_with_logits([v, v], [0.5, target])
    for edge in (0, 1, 0.0, 1.0, True):
        assert losses.binary_cross_entropy_with_logits([v], [edge]).data == math.log(2)


def test_losses_train_a_model():
    """Each loss, minimised by a few Adam steps, goes down."""
    from pyautograd.nn import MLP
    from pyautograd.optim import Adam

    random.seed(0)
    data = [[random.uniform(-1, 1), random.uniform(-1, 1)] for _ in range(16)]
    cases = [
        (1, lambda out: losses.mse(out, [a + b for a, b in data])),
        (1, lambda out: losses.hinge(out, [1 if a > b else -1 for a, b in data])),
        (1, lambda out: losses.binary_cross_entropy_with_logits(out, [float(a > 0) for a, _ in data])),
        (3, lambda out: losses.cross_entropy(out, [int(a > 0) + int(b > 0) for a, b in data])),
    ]
    for nout, loss_fn in cases:
        model = MLP(2, [8, nout])
        opt = Adam(model.parameters(), lr=0.05)
        history = []
        for _ in range(30):
            loss = loss_fn([model(x) for x in data])
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.data)
        assert history[-1] < 0.7 * history[0], history
    assert pyautograd.is_grad_enabled()
