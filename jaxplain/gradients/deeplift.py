"""DeepLIFT (rescale rule) and DeepLIFT-SHAP, read from the model's jaxpr
(`_deeplift_rules.paired`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core import registry
from .._core import validate as V
from .._core import batching
from .._core import layers as _layers
from ._deeplift_rules import paired
from .._core.types import Explanation
from ._shared import prepare_site
from ._shared import count


# ---- DeepLIFT ---------------------------------------------------------------------------------


@registry.method(
    "gradients",
    evals=lambda a: 2,
    demo={"label": "DeepLIFT", "quick": {}, "full": {}},
)
def deeplift(model: Any, x: jax.Array, *, target: Any, baseline: Any = 0.0,
             layer: Any = None, at: str = "output", batch_size: int | None = None) -> Explanation:
    """DeepLIFT (rescale rule): `(x - baseline) *` multipliers backpropagated from the target.

    The model runs on `x` and on `baseline` in lockstep; in the backward pass each
    elementwise nonlinearity (ReLU, tanh, sigmoid, and `jax.nn`/Flax activations
    such as leaky ReLU, ELU, GELU taken whole) has the slope of its secant
    between the two inputs instead of its derivative, products of two activations
    split their change exactly, and max pooling with tiling windows routes the
    change of each window's maximum to the arg-max of the input and of the
    baseline (the values of shap's `DeepExplainer`; Captum's `DeepLift` agrees on
    models without max pooling). Every other equation keeps its gradient.
    The model is read from its jaxpr: Linen, NNX and plain JAX models need no
    changes. Cost per example: a forward at `x` and at the baseline and one
    backward (plus a forward at `x` for `target="predicted"`).

    For models made of affine layers, those nonlinearities and tiling pools, the
    attributions sum to `f(x) - f(baseline)` (summation to delta); `gap` reports
    the difference, and is nonzero when other nonlinear equations (an inline
    `jnp.where` on activations, overlapping max pools, softmax, loops) lie on the way.

    Args:
      model, x, target: see `saliency`.
      baseline: the reference input: a scalar, an array broadcastable to one
        example, or one per example `(N, ...)`.
      layer: `None` to attribute to the input; a layer name (Linen / NNX models,
        as in `grad_cam`) to attribute to that layer's output (`at="output"`) or
        input (`at="input"`): `(a(x) - a(baseline)) *` the multipliers there, as
        Captum's `LayerDeepLift`. Only the rules above the layer matter.
      batch_size: (input, baseline) pairs per chunk.

    Returns:
      `Explanation` with `values` shaped like `x` (or the layer's activation) and
      `gap` `sum(values) - (f(x) - f(baseline))` per example.

    References:
      Shrikumar, Greenside, Kundaje. Learning Important Features Through
      Propagating Activation Differences (ICML 2017).

    >>> import jax.numpy as jnp, jaxplain as jx
    >>> relu_net = lambda z: jnp.maximum(z @ jnp.array([[1.0], [-2.0]]), 0.0)
    >>> e = jx.deeplift(relu_net, jnp.array([[3.0, 1.0]]), target=0)
    >>> e.values, e.gap
    (Array([[ 3., -2.]], dtype=float32), Array([0.], dtype=float32))
    """
    model, x, t, parts = prepare_site(model, x, target, layer, at, "deeplift")
    batch_size = V.check_batch_size(batch_size)
    b = V.check_baseline(baseline, x)
    return _deeplift(model, x, t, b, shared=False, layer=parts, at=at, batch_size=batch_size)


@registry.method(
    "gradients",
    evals=lambda a: 2 * len(a["references"]),
    demo={"label": "DeepLIFT-SHAP", "quick": None, "full": {}},
)
def deeplift_shap(model: Any, x: jax.Array, *, target: Any, references: jax.Array,
                  layer: Any = None, at: str = "output",
                  batch_size: int | None = None) -> Explanation:
    """DeepLIFT averaged over a set of references (DeepSHAP; Captum's `DeepLiftShap`,
    shap's `DeepExplainer`).

    Each example is explained against every reference; the attributions are
    averaged and sum to `f(x) - mean_r f(r)` under the conditions of `deeplift`
    (`gap` reports the difference). Cost grows with `N * M` pairs, streamed in
    chunks of `batch_size`.

    Args:
      model, x, target: see `saliency`.
      references: a reference batch `(M, ...)` with the per-example shape of `x`
        (e.g. a sample of training images).
      layer, at: attribute to a layer's output or input instead of `x`, as in
        `deeplift` (Captum's `LayerDeepLiftShap`).
      batch_size: (input, reference) pairs per chunk.

    Returns:
      `Explanation` with `values` shaped like `x` (or the layer's activation) and `gap`.

    References:
      Lundberg & Lee. A Unified Approach to Interpreting Model Predictions (2017).
    """
    model, x, t, parts = prepare_site(model, x, target, layer, at, "deeplift_shap")
    refs = V.check_array(references, "references")
    if refs.shape[1:] != x.shape[1:]:
        V.fail("references", f"a batch of examples shaped {tuple(x.shape[1:])}", f"shape {refs.shape}")
    batch_size = V.check_batch_size(batch_size)
    return _deeplift(model, x, t, refs.astype(x.dtype), shared=True, layer=parts, at=at,
                     batch_size=batch_size)


@functools.partial(jit, static_argnames=("shared", "layer", "at", "batch_size"))
def _deeplift(model, x, target, refs, *, shared, layer, at, batch_size):
    n = x.shape[0]
    m = refs.shape[0] if shared else 1
    refs = refs if shared else V.full_baseline(refs, x)
    # f(x) itself comes from the pairs; the extra forward only fixes a "predicted" target
    target = target.resolve(lambda z: batching.chunked_apply(model, z, batch_size), x)
    if layer is None:
        pair = paired(model)
    else:  # a zero added at the layer: its multiplier is the gradient there
        shape = _layers.activation_shape(model, x, layer, at)
        pair = paired(lambda z, d: _layers.probe(model, z, layer, d, at=at))

    def contributions(ex, s):
        xi, r = x[ex], refs[s] if shared else refs[ex]
        t = target.take(ex)
        if layer is None:

            def value(z):
                fz, fr = pair((z,), (r,))
                return jnp.sum(t.select(fz)), t.select(fz) - t.select(fr)

            mult, delta = jax.grad(value, has_aux=True)(xi)
            return mult * (xi - r), delta
        zero = jnp.zeros((xi.shape[0],) + tuple(shape.shape[1:]), shape.dtype)

        def value(d):
            (fz, az), (fr, ar) = pair((xi, d), (r, zero))
            return jnp.sum(t.select(fz)), (t.select(fz) - t.select(fr), az - ar)

        mult, (delta, change) = jax.grad(value, has_aux=True)(zero)
        return mult * change, delta

    attr, delta = batching.per_example_sum(contributions, n, m, batch_size)
    attr = attr / m
    gap = attr.reshape(n, -1).sum(1) - delta / m
    evals = 2 * m + (1 if target.needs_outputs else 0)
    return Explanation(attr, gap=gap, n_evals=count(n, evals))
