"""Layer-wise relevance propagation (LRP): rules, composites and `lrp`.

The target's value is redistributed layer by layer from the output to the input.
Each linear layer (convolution or dense, with its bias) shares the relevance of
its outputs among its inputs by a *rule*:

- `Epsilon(epsilon)`: in proportion to the contributions `a_j w_jk`, with `epsilon`
  added to the denominator's magnitude (absorbing weak, noisy contributions).
  With `epsilon -> 0` on a ReLU network this is gradient x input.
- `Gamma(gamma)`: positive weights (and bias) favoured, `w + gamma * w+`.
- `AlphaBeta(alpha, beta)`: positive and negative contributions apart,
  `alpha * R+ - beta * R-` (`alpha - beta = 1` conserves relevance);
  `ZPlus()` is `AlphaBeta(1, 0)`.
- `ZBox(low, high)`: for the first layer, whose inputs are bounded
  (`low <= x <= high`, e.g. the pixel range): the z^B rule.

A rule for every layer (`rule=Epsilon()`), one per layer (`rule=[...]`, in the
order the forward pass meets them), or a function of the layer (`Layer` ->
rule) select them; `epsilon_gamma_box` and `epsilon_plus` are the composites
recommended for CNNs. The model is read from its jaxpr (Linen, NNX or any JAX
function, unchanged).

References:
  Bach, Binder, Montavon, Klauschen, Mueller, Samek. On Pixel-Wise Explanations
  for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation (2015).
  Montavon, Binder, Lapuschkin, Samek, Mueller. Layer-Wise Relevance
  Propagation: An Overview (2019).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core import registry
from .._core import layers as _layers, batching
from .._core import validate as V
from ._lrp_rules import Layer, propagated
from .._core.types import Explanation
from .._compile import jit
from ._shared import prepare_site
from ._shared import count
from .._core.cache import traced_cached
from .._core.models import as_model


class _Rule:
    """A rule's numbers (`_numbers`) are checked (finite, >= 0) when it is made."""

    _numbers: tuple[str, ...] = ("epsilon",)

    def __post_init__(self):
        for f in self._numbers:
            v = V.check_float(getattr(self, f), f"{type(self).__name__}.{f}", minimum=0.0)
            object.__setattr__(self, f, v)


@dataclasses.dataclass(frozen=True)
class Epsilon(_Rule):
    """LRP-epsilon: `R_j = sum_k a_j w_jk / (z_k + epsilon sign(z_k)) R_k`."""

    epsilon: float = 1e-6
    name = "epsilon"


@dataclasses.dataclass(frozen=True)
class Gamma(_Rule):
    """LRP-gamma: Epsilon with weights and bias `p + gamma * max(p, 0)`.

    `gamma_bias=False` leaves the bias as it is (Captum's `GammaRule`); the default
    raises it too, as Montavon et al. (2019) and Zennit do.
    """

    gamma: float = 0.25
    epsilon: float = 1e-6
    gamma_bias: bool = True
    name = "gamma"
    _numbers = ("gamma", "epsilon")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.gamma_bias, bool):
            V.fail("Gamma.gamma_bias", "True or False", repr(self.gamma_bias), TypeError)


@dataclasses.dataclass(frozen=True)
class AlphaBeta(_Rule):
    """LRP-alpha-beta: positive contributions share `alpha R`, negative ones `-beta R`.

    A contribution `a_j w_jk` is positive when `a_j` and `w_jk` have the same sign.
    Two conventions for the bias `b_k`:

    - `bias=False` (the default): the bias takes no relevance; the denominators are
      the sums of the positive and of the negative contributions alone, so
      relevance is conserved (`alpha - beta = 1`) whatever the biases;
    - `bias=True`: `max(b, 0)` joins the positive denominator and `min(b, 0)` the
      negative one (the convention of Zennit's and Captum's rules), so a bias
      absorbs its share and the input relevance sums to less than the output's.
    """

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-6
    bias: bool = False
    name = "alpha_beta"
    _numbers = ("alpha", "beta", "epsilon")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.bias, bool):
            V.fail("AlphaBeta.bias", "True or False", repr(self.bias), TypeError)


def ZPlus(epsilon: float = 1e-6, bias: bool = False) -> AlphaBeta:
    """LRP-z+: only positive contributions (`AlphaBeta(1, 0)`; `bias` as there)."""
    return AlphaBeta(1.0, 0.0, epsilon, bias)


@dataclasses.dataclass(frozen=True, eq=False)
class ZBox(_Rule):
    """LRP-z^B for a layer whose inputs lie in `[low, high]` (scalars, or arrays
    broadcastable to one example of that layer's input, e.g. per-channel bounds
    of normalised pixels). Use it for the first layer."""

    low: Any = 0.0
    high: Any = 1.0
    epsilon: float = 1e-6
    name = "box"


@dataclasses.dataclass(frozen=True)
class _Box:
    """`ZBox` inside the compiled program: its bounds travel as arguments."""

    epsilon: float
    name = "box"


RULES = (Epsilon, Gamma, AlphaBeta, ZBox)


def epsilon_gamma_box(low: Any = 0.0, high: Any = 1.0, *, epsilon: float = 0.25,
                      gamma: float = 0.25) -> Callable[[Layer], Any]:
    """The CNN composite of Montavon et al. (2019): `ZBox` on the first layer,
    `Gamma` on the other convolutions, `Epsilon` on the dense layers."""
    box, g, e = ZBox(low, high), Gamma(gamma), Epsilon(epsilon)
    return lambda layer: box if layer.index == 0 else (g if layer.kind == "conv" else e)


def epsilon_plus(*, epsilon: float = 0.25) -> Callable[[Layer], Any]:
    """`ZPlus` on the convolutions, `Epsilon` on the dense layers."""
    p, e = ZPlus(), Epsilon(epsilon)
    return lambda layer: p if layer.kind == "conv" else e


def _check_rule(r, where: str):
    if not isinstance(r, RULES):
        V.fail(where, "an LRP rule (Epsilon, Gamma, AlphaBeta, ZPlus() or ZBox)", repr(r),
               TypeError)
    return r


def layers(model: Any, x: jax.Array) -> tuple[Layer, ...]:
    """The linear layers `lrp` applies rules to, in forward order (traced, not run)."""
    return _linear_layers(as_model(model), V.check_array(x))


def _linear_layers(model, x) -> tuple[Layer, ...]:
    def trace():
        g = propagated(model, lambda i, kind: Epsilon())
        jax.make_jaxpr(g)((one,), 0.0, 0.0)
        return tuple(Layer(i, len(g.layers), k) for i, k in enumerate(g.layers))

    one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)
    return traced_cached(trace, model, one, "lrp.layers")


def _resolve(rule: Any, found: tuple[Layer, ...]) -> tuple[Any, ...]:
    n = len(found)
    if n == 0:
        V.fail("model", "a model with at least one convolution or dense layer on the input's path",
               "no linear layer (LRP needs one)")
    if isinstance(rule, RULES):
        rules = [rule] * n
    elif callable(rule):
        rules = [_check_rule(rule(layer), f"rule({layer})") for layer in found]
    elif isinstance(rule, Sequence) and not isinstance(rule, str):
        if len(rule) != n:
            V.fail("rule", f"one rule per linear layer ({n}: {', '.join(l.kind for l in found)})",
                   f"{len(rule)} rules")
        rules = [_check_rule(r, f"rule[{i}]") for i, r in enumerate(rule)]
    else:
        V.fail("rule", "an LRP rule, a sequence of rules (one per layer) or a function of "
               "the layer", repr(rule), TypeError)
    boxes = [i for i, r in enumerate(rules) if isinstance(r, ZBox)]
    if boxes and boxes != [0]:
        V.fail("rule", "ZBox on the first layer only (its bounds are the input's)",
               f"ZBox on layer(s) {boxes}")
    return tuple(rules)


@registry.method("gradients", evals=lambda a: 1, demo={"label": "LRP", "quick": None, "full": {}})
def lrp(model: Any, x: jax.Array, *, target: Any, rule: Any = Epsilon(),
        layer: Any = None, at: str = "output", batch_size: int | None = None) -> Explanation:
    """Layer-wise relevance propagation of the target (one forward + one backward pass).

    Args:
      model, x, target: see `saliency`.
      rule: an LRP rule for every linear layer (default `Epsilon(1e-6)`), a
        sequence with one rule per layer (see `layers(model, x)`), or a function
        `Layer -> rule` such as `epsilon_gamma_box(low, high)`.
      layer: `None` for the input's relevance; a layer name (Linen / NNX models,
        as in `grad_cam`) for the relevance of that layer's output (`at="output"`)
        or input (`at="input"`), as Captum's `LayerLRP`.
      batch_size: examples per chunk.

    Returns:
      `Explanation` with `values` (relevance) shaped like `x` (or the layer's
      activation) and `gap` `sum(values) - f_target(x)` per example: the relevance
      absorbed by biases and stabilisers (0 for bias-free networks under
      conserving rules).

    Linear layers are convolutions and matrix products whose weights do not
    depend on the input, each with its bias add. Activations pass relevance
    through (`R_in = R_out`); pooling, means and reshapes keep their gradient
    (max pooling gives each window's relevance to its arg-max). Layers inside
    control flow (`scan`, `while`) are not seen and keep their gradient.

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> w1, w2 = jnp.array([[1.0, 2.0], [1.0, -1.0]]), jnp.array([[1.0], [1.0]])
    >>> net = lambda z: jnp.maximum(z @ w1, 0) @ w2
    >>> jx.lrp(net, jnp.array([[2.0, 1.0]]), target=0, rule=jx.relevance.ZPlus(0.0)).values
    Array([[5., 1.]], dtype=float32)
    """
    model, x, t, parts = prepare_site(model, x, target, layer, at, "lrp")
    batch_size = V.check_batch_size(batch_size)
    rules = _resolve(rule, _linear_layers(model, x))
    low = high = V.to_device(np.zeros((), x.dtype))  # host-built: no eager XLA op
    if isinstance(rules[0], ZBox):
        box = rules[0]
        low = V.check_baseline(box.low, x, "ZBox.low")[0]
        high = V.check_baseline(box.high, x, "ZBox.high")[0]
        rules = (_Box(box.epsilon),) + rules[1:]
    return _lrp(model, x, t, low, high, rules=rules, layer=parts, at=at, batch_size=batch_size)


@functools.partial(jit, static_argnames=("rules", "layer", "at", "batch_size"))
def _lrp(model, x, target, low, high, *, rules, layer, at, batch_size):
    pick = lambda i, kind: rules[i]
    if layer is None:
        g = propagated(model, pick)
    else:
        shape = _layers.activation_shape(model, x, layer, at)
        g = propagated(lambda z, d: _layers.probe(model, z, layer, d, at=at), pick)

    # Only a ZBox reads the bounds; their cotangents (one more input-sized transpose
    # each) are asked for only then. A 16-image Epsilon call took 0.3 ms longer with
    # them than compiled whole, where XLA could fold the zero bounds away.
    box = isinstance(rules[0], _Box)

    def chunk(start, size):
        rows = start + jnp.arange(size, dtype=jnp.int32)
        xs = jax.lax.dynamic_slice_in_dim(x, start, size)
        lo, hi = jnp.broadcast_to(low, xs.shape), jnp.broadcast_to(high, xs.shape)
        ins = (xs,) if layer is None else (xs, jnp.zeros((size,) + tuple(shape.shape[1:]),
                                                         shape.dtype))
        if box:
            f = lambda *a: g(a[:-2], a[-2], a[-1])  # noqa: E731
            ins = ins + (lo, hi)
        else:
            f = lambda *a: g(a, lo, hi)  # noqa: E731
        if layer is None:
            out, vjp = jax.vjp(f, *ins)
        else:
            out, vjp, act = jax.vjp(f, *ins, has_aux=True)
        bound = target.take(rows).bind(jax.lax.stop_gradient(out))
        cts = vjp(jax.grad(lambda o: jnp.sum(bound.select(o)))(out))
        if layer is not None:
            rel = act * cts[1]
        elif box:
            rel = xs * cts[0] + lo * cts[1] + hi * cts[2]
        else:
            rel = xs * cts[0]
        return rel, bound.select(out)

    rel, value = batching.chunked_map(chunk, x.shape[0], batch_size)
    gap = rel.reshape(x.shape[0], -1).sum(1) - value
    return Explanation(rel, gap=gap, n_evals=count(x.shape[0], 1))
