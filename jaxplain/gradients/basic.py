"""The plain gradient methods: saliency, gradient x input, integrated gradients, and
guided backpropagation / DeconvNet.

Every method enumerates its model evaluations (examples x steps) as one flat
range, builds the inputs on device from indices, and streams them through
`batching.per_example_sum`: one jitted program, at most `batch_size` inputs alive.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core import registry
from .._core import validate as V
from .._core import batching
from .._core.quadrature import RULES, quadrature
from ._relu_rules import MODES, ReluRuleApply
from .._core.types import Explanation
from .._core.models import Model, as_model
from .._core.targets import value_and_grad
from ._shared import bcast, count, prepare_input


# ---- saliency and gradient x input ----------------------------------------------------


@registry.method(
    "gradients",
    evals=lambda a: 1,
    demo={"label": "saliency", "quick": {}, "full": {}},
)
def saliency(model: Any, x: jax.Array, *, target: Any, absolute: bool = False,
             batch_size: int | None = None) -> Explanation:
    """Gradient of the target with respect to the input (one forward + backward).

    Args:
      model: a `Model`, an NNX module or a callable `f(x_batch) -> outputs`.
      x: inputs `(N, ...)`.
      target: see `jaxplain.as_target`.
      absolute: return `|grad|` (Simonyan et al.'s saliency map) instead of the
        signed gradient.
      batch_size: examples per chunk.

    Returns:
      `Explanation` with `values` shaped like `x`.

    References:
      Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks (2014).

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    >>> jx.saliency(m, jnp.ones((1, 2)), target=0).values
    Array([[ 1., -2.]], dtype=float32)
    """
    model, x, t = prepare_input(model, x, target)
    return saliency_program(model, x, t, absolute=bool(absolute), times_input=False,
                     batch_size=V.check_batch_size(batch_size))


@registry.method(
    "gradients",
    evals=lambda a: 1,
    demo={"label": "gradient x input", "quick": None, "full": {}},
)
def gradient_x_input(model: Any, x: jax.Array, *, target: Any,
                     batch_size: int | None = None) -> Explanation:
    """Gradient times input: equals integrated gradients with a zero baseline for
    linear models.

    References:
      Shrikumar et al. Not Just a Black Box (2016).
    """
    model, x, t = prepare_input(model, x, target)
    return saliency_program(model, x, t, absolute=False, times_input=True,
                     batch_size=V.check_batch_size(batch_size))


@functools.partial(jit, static_argnames=("absolute", "times_input", "batch_size"))
def saliency_program(model, x, target, *, absolute, times_input, batch_size):
    def chunk(start, size):
        rows = start + jnp.arange(size, dtype=jnp.int32)
        _, g, _ = value_and_grad(model, target.take(rows), jax.lax.dynamic_slice_in_dim(x, start, size))
        return g

    g = batching.chunked_map(chunk, x.shape[0], batch_size)
    if times_input:
        g = g * x
    if absolute:
        g = jnp.abs(g)
    return Explanation(g, n_evals=count(x.shape[0], 1))


# ---- integrated gradients -------------------------------------------------------------


@registry.method(
    "gradients",
    evals=lambda a: a["steps"] + 2,
    cheap={"steps": 2},
    demo={"label": "integrated gradients", "quick": {"steps": 16}, "full": {"steps": 64}},
)
def integrated_gradients(model: Any, x: jax.Array, *, target: Any, baseline: Any = 0.0,
                         steps: int = 50, rule: str = "gauss_legendre",
                         batch_size: int | None = None) -> Explanation:
    """Integrated gradients along the straight path from `baseline` to `x`.

    `attr = (x - b) * sum_i w_i grad f(b + a_i (x - b))` with quadrature nodes
    `a_i` and weights `w_i` of `rule`. Steps stream through chunks of
    `batch_size` model inputs, so memory does not grow with `steps`.

    Args:
      model, x, target: see `saliency`.
      baseline: a scalar, an array broadcastable to one example, or one baseline
        per example `(N, ...)`.
      steps: quadrature nodes (model evaluations per example).
      rule: `riemann_left`, `riemann_right`, `riemann_middle`,
        `riemann_trapezoid` or `gauss_legendre` (the default, as in Captum; it
        converges fastest on smooth models).
      batch_size: model inputs per chunk (default `batching.default_batch_size()`).

    Returns:
      `Explanation` with `values` shaped like `x` and `gap`, the completeness
      gap `sum(values) - (f(x) - f(baseline))` per example.

    Raises:
      ValueError / TypeError: bad `x`, `target`, `baseline`, `steps` or `rule`.

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks (2017).

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    >>> jx.integrated_gradients(m, jnp.array([[3.0, 1.0]]), target=0, steps=4).values
    Array([[ 3., -2.]], dtype=float32)
    """
    model, x, t = prepare_input(model, x, target)
    V.check_choice(rule, "rule", RULES)
    steps = V.check_budget(steps, "steps", x.shape[0], fixed=2,
                           minimum=2 if rule == "riemann_trapezoid" else 1)
    batch_size = V.check_batch_size(batch_size)
    b = V.check_baseline(baseline, x)  # last: it converts (the others only inspect)
    return _ig(model, x, t, b, steps=steps, rule=rule, batch_size=batch_size)


@functools.partial(jit, static_argnames=("steps", "rule", "batch_size"))
def _ig(model, x, target, baseline, *, steps, rule, batch_size):
    n = x.shape[0]
    baseline = V.full_baseline(baseline, x)
    # f(x) and f(baseline) in chunks too: memory stays bounded by batch_size for any n
    (f_x, f_b), target = batching.values_at(model, target, [x, baseline], batch_size)
    alphas, weights = (jnp.asarray(v, x.dtype) for v in quadrature(rule, steps))
    delta = x - baseline

    def weighted_grads(ex, s):
        inputs = baseline[ex] + bcast(alphas[s], x.ndim) * delta[ex]
        _, g, _ = value_and_grad(model, target.take(ex), inputs)
        return g * bcast(weights[s], x.ndim)

    attr = batching.per_example_sum(weighted_grads, n, steps, batch_size)
    attr = attr * delta.astype(attr.dtype)  # float32 at least (bfloat16 models)
    diff = f_x.astype(attr.dtype) - f_b.astype(attr.dtype)
    gap = attr.reshape(n, -1).sum(1) - diff
    return Explanation(attr, gap=gap, n_evals=count(n, steps + 2))


# ---- guided backpropagation and deconvnet ----------------------------------------------------


def with_relu_rule(model: Any, mode: str) -> Model:
    """The same model with every ReLU's backward pass replaced (`guided` or `deconvnet`).

    Forward values are unchanged; only gradients differ. Works on Linen, NNX and
    plain JAX models without editing them (the model's jaxpr is re-interpreted).
    """
    V.check_choice(mode, "mode", MODES)
    model = as_model(model)
    # the same wrapper for repeated calls: its architecture token is then computed once
    made = _RULE_MODELS.setdefault(model, {})
    ruled = made.get(mode)
    if ruled is None or ruled.params is not model.params or ruled.apply.inner is not model.apply:
        ruled = made[mode] = Model(ReluRuleApply(model.apply, mode), model.params)
    return ruled


_RULE_MODELS: "weakref.WeakKeyDictionary[Model, dict[str, Model]]" = weakref.WeakKeyDictionary()


@registry.method(
    "gradients",
    evals=lambda a: 1,
    demo={"label": "guided backprop", "quick": {}, "full": {}},
)
def guided_backprop(model: Any, x: jax.Array, *, target: Any,
                    batch_size: int | None = None) -> Explanation:
    """Guided backpropagation: gradients where each ReLU passes only positive
    gradients through positive inputs.

    References:
      Springenberg et al. Striving for Simplicity: The All Convolutional Net (2015).
    """
    return saliency(with_relu_rule(model, "guided"), x, target=target, batch_size=batch_size)


@registry.method("gradients", evals=lambda a: 1)
def deconvnet(model: Any, x: jax.Array, *, target: Any, batch_size: int | None = None) -> Explanation:
    """DeconvNet: gradients where each ReLU rectifies the gradient instead of the input.

    References:
      Zeiler & Fergus. Visualizing and Understanding Convolutional Networks (2014).
    """
    return saliency(with_relu_rule(model, "deconvnet"), x, target=target, batch_size=batch_size)
