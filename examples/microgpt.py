"""A character-level GPT in scalar arithmetic, run on pyautograd's Value or on a pure-Python one.

The shape of Karpathy's microgpt (Feb 2026): every weight and activation is one scalar
Value, the model is a 1-layer, 4-head transformer over 27 tokens (a-z plus one BOS/EOS
token), processed one token at a time with a KV cache, trained with a plain-Python Adam
loop, one name per step. It is a program written the micrograd way, not a use of
pyautograd's fused ops: it touches only `+ - * / **`, `exp`, `log`, `relu`, `.data`,
`.grad`, `Value(x)` and `backward()`, so the same code runs on any micrograd-style Value.
`PyValue` below is such a Value in pure Python, the reference; bench/bench_dropin.py
times the two.

    python examples/microgpt.py [--steps N] [--engine pyautograd|python] [--seed S]

What it is not: a tokenizer, a batched or vectorised model, or a faithful copy of
microgpt's code (this was written from the architecture). The data (a few hundred
first names) is embedded below, so it runs offline.
"""

import argparse
import math
import random
import sys
import time

# ---- the data: lowercase first names, one document each ----

NAMES = """
emma olivia ava isabella sophia mia amelia harper evelyn abigail emily ella elizabeth
camila luna sofia avery mila aria scarlett penelope layla chloe victoria madison eleanor
grace nora riley zoey hannah hazel lily ellie violet lillian zoe stella aurora natalie
emilia everly leah aubrey willow addison lucy audrey bella nova brooklyn paisley savannah
claire skylar isla genesis naomi elena caroline eliana anna maya valentina ruby kennedy
ivy ariana aaliyah cora madelyn alice kinsley hailey gabriella allison gianna serenity
samantha sarah autumn quinn eva piper sophie sadie delilah josephine nevaeh adeline
arya emery lydia clara vivian madeline peyton julia rylee brielle reagan natalia jade
athena maria leilani everleigh liliana melanie mackenzie hadley raelynn kaylee rose
arianna isabelle melody eliza lyla katherine aubree adalynn kylie faith mary margaret
ximena iris alexandra jasmine charlotte amaya taylor isabel ashley khloe ryleigh alexa
amara valeria andrea parker norah eden elliana brianna emersyn valerie anastasia eloise
liam noah william james oliver benjamin elijah lucas mason logan alexander ethan jacob
michael daniel henry jackson sebastian aiden matthew samuel david joseph carter owen
wyatt john jack luke jayden dylan grayson levi isaac gabriel julian mateo anthony jaxon
lincoln joshua christopher andrew theodore caleb ryan asher nathan thomas leo isaiah
charles josiah hudson christian hunter connor eli ezra aaron landon adrian jonathan
nolan jeremiah easton elias colton cameron carson robert angel maverick nicholas dominic
jaxson greyson adam ian austin santiago jordan cooper brayden roman evan ezekiel xavier
jose jace jameson leonardo bryson axel everett rafael kayden miles sawyer jason declan
weston micah ayden wesley luca vincent damian zachary silas gavin chase kai emmett harrison
nathaniel kingston cole tyler bennett bentley ryker tristan brandon kevin luis george
ashton rowan braxton ryder gael ivan diego maxwell max carlos kaiden juan maddox justin
waylon calvin giovanni jonah abel jayce jesus amir king beau camden alex jasper malachi
brody jude blake emmanuel eric brooks elliot antonio abraham timothy finn rhett elliott
edward august xander alan dean lorenzo bryce karter victor milo miguel hayden graham
grant zion tucker jesse zayden joel richard patrick emiliano oakley nicolas brantley
dawson myles matteo river steven thiago zane matias judah messiah jeremy preston oscar
kaleb alejandro marcus mark peter maximus barrett jax andres holden legend charlie knox
""".split()

VOCAB_SIZE = 27  # a..z are 0..25
BOS = 26  # begins and ends every document
N_EMBD = 16
N_HEAD = 4
HEAD_DIM = N_EMBD // N_HEAD
N_LAYER = 1
BLOCK_SIZE = 16


def documents(seed):
    """The names in a seeded random order (every engine sees the same order)."""
    docs = list(NAMES)
    random.Random(seed).shuffle(docs)
    return docs


def encode(name):
    """BOS, the letters, BOS: the model learns both where a name starts and where it ends."""
    return [BOS] + [ord(c) - ord("a") for c in name] + [BOS]


def decode(tokens):
    return "".join(chr(ord("a") + t) for t in tokens)


# ---- a micrograd-style scalar in pure Python, the reference engine ----


class PyValue:
    """A scalar that records its inputs and their local derivatives, microgpt's way.

    Each op computes its result and, beside it, d(result)/d(input) for each input, as plain
    floats; backward() multiplies them along the graph. Only what the model uses is here.
    """

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        other = other if isinstance(other, PyValue) else PyValue(other)
        return PyValue(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, PyValue) else PyValue(other)
        return PyValue(self.data * other.data, (self, other), (other.data, self.data))

    def __truediv__(self, other):
        other = other if isinstance(other, PyValue) else PyValue(other)
        out = self.data / other.data
        return PyValue(out, (self, other), (1 / other.data, -out / other.data))  # d/db = -a/b^2

    def __pow__(self, k):  # k a number
        return PyValue(self.data**k, (self,), (k * self.data ** (k - 1),))

    def exp(self):
        out = math.exp(self.data)
        return PyValue(out, (self,), (out,))

    def log(self):
        return PyValue(math.log(self.data), (self,), (1 / self.data,))

    def relu(self):
        return PyValue(max(0.0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):  # -a
        return self * -1

    def __sub__(self, other):  # a - b
        return self + (-other)

    def __radd__(self, other):  # other + a
        return self + other

    def __rsub__(self, other):  # other - a
        return other + (-self)

    def __rmul__(self, other):  # other * a
        return self * other

    def __rtruediv__(self, other):  # other / a
        return PyValue(other) / self

    def backward(self):
        """Adds d(self)/d(node) to every node's grad. The topological order comes from a
        depth-first walk with an explicit stack: no recursion, so any depth works."""
        topo, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                topo.append(node)
            elif node not in seen:
                seen.add(node)
                stack.append((node, True))
                stack.extend((child, False) for child in node._children if child not in seen)
        self.grad = 1
        for node in reversed(topo):
            for child, local in zip(node._children, node._local_grads):
                child.grad += local * node.grad

    def __repr__(self):
        return f"PyValue(data={self.data}, grad={self.grad})"


# ---- the model: written once, for any Value class ----


def init_params(Value, seed, std=0.08):
    """The weight matrices (lists of rows of Values), drawn from a seeded generator in a
    fixed order, so every engine starts from the very same numbers."""
    rng = random.Random(seed)

    def matrix(nout, nin):
        return [[Value(rng.gauss(0.0, std)) for _ in range(nin)] for _ in range(nout)]

    params = {"wte": matrix(VOCAB_SIZE, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD)}
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            params[f"h{layer}.attn.{name}"] = matrix(N_EMBD, N_EMBD)
        params[f"h{layer}.mlp.fc1"] = matrix(4 * N_EMBD, N_EMBD)
        params[f"h{layer}.mlp.fc2"] = matrix(N_EMBD, 4 * N_EMBD)
    params["lm_head"] = matrix(VOCAB_SIZE, N_EMBD)
    return params


def linear(x, w):
    """w @ x with w a list of rows: no bias, as in microgpt."""
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def softmax(logits):
    """exp(l - max) / sum: the max is a number read from .data, so it is a constant."""
    max_val = max(v.data for v in logits)
    exps = [(v - max_val).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    """x / sqrt(mean(x^2) + 1e-5), without a learned gain."""
    mean_square = sum(xi * xi for xi in x) / len(x)
    scale = (mean_square + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(params, token, pos, keys, values):
    """The logits for the next token, given this token at position pos. keys and values
    are the per-layer caches of the earlier positions; this position's are appended."""
    x = [t + p for t, p in zip(params["wte"][token], params["wpe"][pos])]
    x = rmsnorm(x)
    for layer in range(N_LAYER):
        # attention: each head looks at every position so far through its 4 dimensions
        residual = x
        x = rmsnorm(x)
        q = linear(x, params[f"h{layer}.attn.wq"])
        keys[layer].append(linear(x, params[f"h{layer}.attn.wk"]))
        values[layer].append(linear(x, params[f"h{layer}.attn.wv"]))
        heads = []
        for h in range(N_HEAD):
            lo = h * HEAD_DIM
            q_h = q[lo : lo + HEAD_DIM]
            logits = [sum(q_h[j] * k[lo + j] for j in range(HEAD_DIM)) / HEAD_DIM**0.5 for k in keys[layer]]
            weights = softmax(logits)
            heads.extend(sum(w * v[lo + j] for w, v in zip(weights, values[layer])) for j in range(HEAD_DIM))
        x = linear(heads, params[f"h{layer}.attn.wo"])
        x = [a + b for a, b in zip(x, residual)]
        # MLP: 16 -> 64 -> relu -> 16
        residual = x
        x = rmsnorm(x)
        x = [h.relu() for h in linear(x, params[f"h{layer}.mlp.fc1"])]
        x = linear(x, params[f"h{layer}.mlp.fc2"])
        x = [a + b for a, b in zip(x, residual)]
    return linear(x, params["lm_head"])


def document_loss(params, tokens):
    """Mean over the document's positions of -log p(next token)."""
    n = min(BLOCK_SIZE, len(tokens) - 1)
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    losses = []
    for pos in range(n):
        probs = softmax(gpt(params, tokens[pos], pos, keys, values))
        losses.append(-probs[tokens[pos + 1]].log())
    return (1 / n) * sum(losses)


class Trainer:
    """The model, its data and Adam's moments; one step = loss(), backward, update().
    The pieces are separate so a benchmark can time them apart."""

    def __init__(self, Value, num_steps, seed=42, lr=0.01, beta1=0.85, beta2=0.99, eps=1e-8):
        self.docs = documents(seed)
        self.params = init_params(Value, seed)
        self.flat = [p for matrix in self.params.values() for row in matrix for p in row]
        self.m = [0.0] * len(self.flat)
        self.v = [0.0] * len(self.flat)
        self.num_steps, self.lr, self.beta1, self.beta2, self.eps = num_steps, lr, beta1, beta2, eps

    def loss(self, step):
        return document_loss(self.params, encode(self.docs[step % len(self.docs)]))

    def update(self, step):
        """Adam with bias correction and a learning rate decaying linearly to 0, then the
        grads zeroed: a plain loop over every parameter, as micrograd programs write it."""
        lr_t = self.lr * (1 - step / self.num_steps)
        beta1, beta2, eps, m, v = self.beta1, self.beta2, self.eps, self.m, self.v
        for i, p in enumerate(self.flat):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad**2
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            v_hat = v[i] / (1 - beta2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat**0.5 + eps)
            p.grad = 0

    def step(self, step):
        loss = self.loss(step)
        loss.backward()
        self.update(step)
        return loss.data

    def train(self, on_step=None):
        """Runs every step; returns the per-step losses. on_step(k, loss) after each."""
        losses = []
        for k in range(self.num_steps):
            losses.append(self.step(k))
            if on_step:
                on_step(k, losses[-1])
        return losses


def train(Value, steps, seed=42, on_step=None):
    """Trains a fresh model for `steps` steps on this Value class; returns the per-step
    losses (floats). The same seed gives every engine the same data order and weights."""
    return Trainer(Value, steps, seed).train(on_step)


def sample(params, count=10, temperature=0.5, seed=0):
    """Names drawn from the model, one token at a time, until it emits BOS."""
    rng = random.Random(seed)
    names = []
    for _ in range(count):
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        token, out = BOS, []
        for pos in range(BLOCK_SIZE):
            probs = softmax([l / temperature for l in gpt(params, token, pos, keys, values)])
            token = rng.choices(range(VOCAB_SIZE), weights=[p.data for p in probs])[0]
            if token == BOS:
                break
            out.append(token)
        names.append(decode(out))
    return names


def engine(name):
    if name == "python":
        return PyValue
    from pyautograd.engine import Value

    return Value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument(
        "--engine",
        choices=("pyautograd", "python"),
        default="pyautograd",
        help="pyautograd's Value (default) or the pure-Python PyValue",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed for data order and weights")
    parser.add_argument("--samples", type=int, default=10, help="names to sample after training")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    Value = engine(args.engine)
    print(
        f"microgpt on {args.engine}: {len(NAMES)} names, vocab {VOCAB_SIZE}, n_embd {N_EMBD}, "
        f"{N_LAYER} layer, {N_HEAD} heads, block {BLOCK_SIZE}"
    )
    start = time.perf_counter()
    trainer = Trainer(Value, args.steps, args.seed)
    trainer.train(lambda k, loss: print(f"step {k + 1:4d} / {args.steps} | loss {loss:.6f}", flush=True))
    seconds = time.perf_counter() - start
    print(
        f"{len(trainer.flat)} parameters; {args.steps} steps in {seconds:.2f} s "
        f"({seconds / args.steps * 1e3:.1f} ms/step)"
    )
    print("samples (temperature 0.5):")
    for name in sample(trainer.params, args.samples, 0.5, args.seed):
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
