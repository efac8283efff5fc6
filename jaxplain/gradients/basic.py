"""The gradient family: saliency, gradient x input, integrated gradients, noise
tunnels (SmoothGrad, VarGrad, SquareGrad, SmoothGrad-IG), expected gradients,
DeepLIFT / DeepLIFT-SHAP and guided backpropagation / DeconvNet.

Every method enumerates its model evaluations (examples x steps or samples) as one
flat range, builds the inputs on device from indices, and streams them through
`batching.per_example_sum`: one jitted program, at most `batch_size` inputs alive.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core import validate as V
from .._core import batching
from .._core.noise import gaussian
from .._core.quadrature import RULES, quadrature
from .._core import layers as _layers
from ._deeplift_rules import paired
from ._relu_rules import MODES, ReluRuleApply
from .._core.types import Explanation
from .cam import _prepare_site
from .._core.models import Model, as_model
from .._core.targets import Target, as_target, value_and_grad

NOISE_KINDS = ("smoothgrad", "squaregrad", "vargrad")


def _prepare(model, x, target):
    model = as_model(model)
    x = V.check_array(x, "x")
    return model, x, as_target(target, model, x)


def _bcast(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _count(n: int, evals: int) -> jax.Array:
    return jnp.full((n,), evals, jnp.int32)


# ---- saliency and gradient x input ----------------------------------------------------


def saliency(model: Any, x: jax.Array, *, target: Any, absolute: bool = False,
             batch_size: int | None = None) -> Explanation:
    """Gradient of the target with respect to the input (one forward + backward).

    Args:
      model: a `Model`, an NNX module or a callable `f(x_batch) -> outputs`.
      x: inputs `(N, ...)`.
      target: see `jaxplain.targets`.
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
    model, x, t = _prepare(model, x, target)
    return _saliency(model, x, t, absolute=bool(absolute), times_input=False,
                     batch_size=V.check_batch_size(batch_size))


def gradient_x_input(model: Any, x: jax.Array, *, target: Any,
                     batch_size: int | None = None) -> Explanation:
    """Gradient times input: equals integrated gradients with a zero baseline for
    linear models.

    References:
      Shrikumar et al. Not Just a Black Box (2016).
    """
    model, x, t = _prepare(model, x, target)
    return _saliency(model, x, t, absolute=False, times_input=True,
                     batch_size=V.check_batch_size(batch_size))


@functools.partial(jit, static_argnames=("absolute", "times_input", "batch_size"))
def _saliency(model, x, target, *, absolute, times_input, batch_size):
    def chunk(start, size):
        rows = start + jnp.arange(size, dtype=jnp.int32)
        _, g, _ = value_and_grad(model, target.take(rows), jax.lax.dynamic_slice_in_dim(x, start, size))
        return g

    g = batching.chunked_map(chunk, x.shape[0], batch_size)
    if times_input:
        g = g * x
    if absolute:
        g = jnp.abs(g)
    return Explanation(g, n_evals=_count(x.shape[0], 1))


# ---- integrated gradients -------------------------------------------------------------


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
    model, x, t = _prepare(model, x, target)
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
    ends = model(jnp.concatenate([x, baseline]))
    target = target.bind(ends[:n])
    alphas, weights = (jnp.asarray(v, x.dtype) for v in quadrature(rule, steps))
    delta = x - baseline

    def weighted_grads(ex, s):
        inputs = baseline[ex] + _bcast(alphas[s], x.ndim) * delta[ex]
        _, g, _ = value_and_grad(model, target.take(ex), inputs)
        return g * _bcast(weights[s], x.ndim)

    attr = batching.per_example_sum(weighted_grads, n, steps, batch_size) * delta
    diff = target.select(ends[:n]) - target.select(ends[n:])
    gap = attr.reshape(n, -1).sum(1) - diff
    return Explanation(attr, gap=gap, n_evals=_count(n, steps + 2))


# ---- noise tunnels ------------------------------------------------------------------------


def noise_tunnel(method: Callable[..., Explanation], model: Any, x: jax.Array, *, target: Any,
                 key: Any, n_samples: int = 16, noise_level: float = 0.15,
                 kind: str = "smoothgrad", batch_size: int | None = None,
                 **method_kwargs: Any) -> Explanation:
    """Averages any attribution `method` over noisy copies of the input.

    Each example gets Gaussian noise with standard deviation
    `noise_level * (max(x_n) - min(x_n))`. With `kind="smoothgrad"` the result is
    the mean attribution, `"squaregrad"` the mean of squares, `"vargrad"` the
    variance. A "predicted" target is fixed at the clean input. Noise sample `j`
    uses `jax.random.fold_in(key, j)`, so results do not depend on `batch_size`.

    Args:
      method: a jaxplain attribution function, e.g. `saliency` or
        `integrated_gradients` (SmoothGrad-IG).
      model, x, target: as for `method`.
      key: a `jax.random.key`.
      n_samples: noisy copies per example.
      noise_level: noise standard deviation relative to each input's range.
      kind: `smoothgrad`, `squaregrad` or `vargrad`.
      batch_size: bound on model inputs alive at once (shared with `method`).
      **method_kwargs: static keyword arguments for `method` (e.g. `steps=16`).
        If `method` takes a `key`, noise sample `j` passes it a key folded from
        `key` as well.

    Returns:
      `Explanation` with the aggregated `values`, `stderr` of the mean (for
      `smoothgrad`) and `n_evals`.

    References:
      Smilkov et al. SmoothGrad (2017); Adebayo et al. Local Explanation Methods
      for Deep Neural Networks Lack Sensitivity to Parameter Values (2018);
      Hooker et al. A Benchmark for Interpretability Methods (2019).
    """
    if not callable(method):
        raise TypeError(f"method: expected an attribution function, got {type(method).__name__}")
    model, x, t = _prepare(model, x, target)
    key = V.check_key(key)
    inner = method_kwargs.get("steps", 1)  # evaluations of `method` per example and sample
    inner = inner + 2 if isinstance(inner, int) and not isinstance(inner, bool) and inner > 0 else 1
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], per_unit=inner)
    noise_level = V.check_float(noise_level, "noise_level", minimum=0.0)
    V.check_choice(kind, "kind", NOISE_KINDS)
    batch_size = V.check_batch_size(batch_size)
    for k, v in method_kwargs.items():
        try:
            hash(v)
        except TypeError:
            raise TypeError(f"{k}: noise_tunnel passes method arguments as static; expected a "
                            f"hashable value, got {type(v).__name__}") from None
    try:
        takes_key = "key" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        takes_key = False
    return _noise_tunnel(model, x, t, key, V.to_device(noise_level, x.dtype), method=method,
                         n_samples=n_samples, kind=kind, batch_size=batch_size,
                         takes_key=takes_key, kwargs=tuple(sorted(method_kwargs.items())))


@functools.partial(jit, static_argnames=("method", "n_samples", "kind", "batch_size",
                                             "takes_key", "kwargs"))
def _noise_tunnel(model, x, target, key, noise_level, *, method, n_samples, kind, batch_size,
                  takes_key, kwargs):
    n = x.shape[0]
    target = target.resolve(model, x)
    flat = x.reshape(n, -1)
    sigma = _bcast(noise_level * (flat.max(1) - flat.min(1)), x.ndim)
    kw = dict(kwargs)
    evals = int(kw.get("steps", 1)) * n
    noise_key, method_key = jax.random.split(key)

    def one(j):
        eps = gaussian(jax.random.fold_in(noise_key, j), x.shape, x.dtype) * sigma
        extra = {"key": jax.random.fold_in(method_key, j)} if takes_key else {}
        e = method(model, x + eps, target=target, batch_size=batch_size, **kw, **extra)
        return e.values, e.values * e.values, e.n_evals

    def chunk(start, size):
        return jax.vmap(one)(start + jnp.arange(size, dtype=jnp.int32))

    per_chunk = max(1, batching.chunk_size(batch_size, n_samples * evals) // evals)
    s1, s2, ne = batching.chunked_sum(chunk, n_samples, per_chunk)
    mean, sq = s1 / n_samples, s2 / n_samples
    var = jnp.maximum(sq - mean * mean, 0.0)
    if kind == "smoothgrad":
        stderr = jnp.sqrt(var / max(n_samples - 1, 1))
        return Explanation(mean, stderr=stderr, n_evals=ne)
    return Explanation(sq if kind == "squaregrad" else var, n_evals=ne)


def _noise_method(kind):
    def method(model: Any, x: jax.Array, *, target: Any, key: Any, n_samples: int = 16,
               noise_level: float = 0.15, batch_size: int | None = None) -> Explanation:
        return noise_tunnel(saliency, model, x, target=target, key=key, n_samples=n_samples,
                            noise_level=noise_level, kind=kind, batch_size=batch_size)

    method.__name__ = method.__qualname__ = kind
    return method


smoothgrad = _noise_method("smoothgrad")
smoothgrad.__doc__ = """SmoothGrad: the mean gradient over `n_samples` noisy copies of `x`.

A shortcut for `noise_tunnel(saliency, ..., kind="smoothgrad")`; use
`noise_tunnel(integrated_gradients, ..., steps=...)` for SmoothGrad-IG.

References:
  Smilkov et al. SmoothGrad: removing noise by adding noise (2017).
"""
vargrad = _noise_method("vargrad")
vargrad.__doc__ = """VarGrad: the variance of the gradient over noisy copies of `x`.

References:
  Adebayo et al. Local Explanation Methods for Deep Neural Networks Lack
  Sensitivity to Parameter Values (2018).
"""
squaregrad = _noise_method("squaregrad")
squaregrad.__doc__ = """SquareGrad: the mean squared gradient over noisy copies of `x`.

References:
  Hooker et al. A Benchmark for Interpretability Methods in Deep Neural Networks (2019).
"""


# ---- expected gradients ---------------------------------------------------------------------


def expected_gradients(model: Any, x: jax.Array, *, target: Any, references: jax.Array,
                       key: Any, n_samples: int = 32, batch_size: int | None = None) -> Explanation:
    """Expected gradients (GradientSHAP): IG averaged over baselines from a reference set.

    Each sample draws a reference `r` uniformly from `references` and a point
    `a ~ U(0, 1)` on the path, and accumulates `grad f(r + a (x - r)) * (x - r)`.
    In expectation the attributions sum to `f(x) - E_r f(r)`; `gap` reports
    `sum(values) - (f(x) - mean_r f(r))`.

    Args:
      model, x, target: see `saliency`.
      references: a reference batch `(M, ...)` with the per-example shape of `x`.
      key: a `jax.random.key`.
      n_samples: (reference, point) samples per example.
      batch_size: model inputs per chunk.

    References:
      Erion et al. Improving performance of deep learning models with axiomatic
      attribution priors and expected gradients (2021); Lundberg & Lee (2017).
    """
    model, x, t = _prepare(model, x, target)
    refs = V.check_array(references, "references")
    if refs.shape[1:] != x.shape[1:]:
        V.fail("references", f"a batch of examples shaped {tuple(x.shape[1:])}", f"shape {refs.shape}")
    key = V.check_key(key)
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=1)
    return _eg(model, x, t, refs.astype(x.dtype), key, n_samples=n_samples,
               batch_size=V.check_batch_size(batch_size))


@functools.partial(jit, static_argnames=("n_samples", "batch_size"))
def _eg(model, x, target, refs, key, *, n_samples, batch_size):
    n, m = x.shape[0], refs.shape[0]
    out_x = model(x)
    target = target.bind(out_x)

    def sample(ex, s):
        keys = jax.vmap(lambda e, j: jax.random.fold_in(jax.random.fold_in(key, e), j))(ex, s)
        r = jax.vmap(lambda k: jax.random.randint(k, (), 0, m))(keys)
        a = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), (), x.dtype))(keys)
        delta = x[ex] - refs[r]
        _, g, _ = value_and_grad(model, target.take(ex), refs[r] + _bcast(a, x.ndim) * delta)
        return g * delta

    attr = batching.per_example_sum(sample, n, n_samples, batch_size) / n_samples

    def ref_scalars(start, size):  # (size, n): f(reference) for each example's target
        out = model(jax.lax.dynamic_slice_in_dim(refs, start, size))
        if target.index is None:
            return jnp.broadcast_to(target.select(out)[:, None], (size, n))
        return out[:, target.index]

    f_refs = batching.chunked_map(ref_scalars, m, batch_size).T  # (n, m)
    gap = attr.reshape(n, -1).sum(1) - (target.select(out_x) - f_refs.mean(1))
    return Explanation(attr, gap=gap, n_evals=_count(n, n_samples + 1))


# ---- DeepLIFT ---------------------------------------------------------------------------------


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
    model, x, t, parts = _prepare_site(model, x, target, layer, at, "deeplift")
    batch_size = V.check_batch_size(batch_size)
    b = V.check_baseline(baseline, x)
    return _deeplift(model, x, t, b, shared=False, layer=parts, at=at, batch_size=batch_size)


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
    model, x, t, parts = _prepare_site(model, x, target, layer, at, "deeplift_shap")
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
    return Explanation(attr, gap=gap, n_evals=_count(n, evals))


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


def guided_backprop(model: Any, x: jax.Array, *, target: Any,
                    batch_size: int | None = None) -> Explanation:
    """Guided backpropagation: gradients where each ReLU passes only positive
    gradients through positive inputs.

    References:
      Springenberg et al. Striving for Simplicity: The All Convolutional Net (2015).
    """
    return saliency(with_relu_rule(model, "guided"), x, target=target, batch_size=batch_size)


def deconvnet(model: Any, x: jax.Array, *, target: Any, batch_size: int | None = None) -> Explanation:
    """DeconvNet: gradients where each ReLU rectifies the gradient instead of the input.

    References:
      Zeiler & Fergus. Visualizing and Understanding Convolutional Networks (2014).
    """
    return saliency(with_relu_rule(model, "deconvnet"), x, target=target, batch_size=batch_size)
