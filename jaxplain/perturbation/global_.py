"""Global views of a model: dataset-level importance and a global linear surrogate.

Local explanations answer "why this prediction"; these answer "what does the model
use overall":

- `global_importance` aggregates per-example attributions over a dataset (mean
  absolute attribution, overall and per class).
- `global_surrogate` fits one linear model to the model's outputs, either on
  tabular inputs directly or on random feature coalitions of images, and reports
  its fidelity (R^2 of the surrogate against the model).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core.types import HIGHEST
from .._core import validate as V
from .._core import batching, features
from .._core.types import Explanation
from .._core.models import as_model
from .engine import coalition_values
from .._core.targets import as_target


class GlobalImportance(NamedTuple):
    """Dataset-level importance (a pytree).

    Attributes:
      overall: mean `|attribution|` over all examples, shaped like one example.
      mean: mean signed attribution over all examples (the direction of the effect).
      per_class: `(K, ...)` mean `|attribution|` over the examples of each class,
        or `None` without labels (zeros for classes with no example).
      counts: `(K,)` examples per class, or `None`.
    """

    overall: jax.Array
    mean: jax.Array
    per_class: jax.Array | None = None
    counts: jax.Array | None = None


def global_importance(
    attributions: Any, labels: Any = None, *, n_classes: int | None = None
) -> GlobalImportance:
    """Aggregates per-example attributions `(N, ...)` into global importance.

    Args:
      attributions: `(N, ...)` attributions or an `Explanation`.
      labels: optional `(N,)` integer class per example (true or predicted class).
      n_classes: number of classes `K` (default: `max(labels) + 1`).

    Returns:
      A `GlobalImportance` with `overall`, `mean` and, with labels, `per_class`
      and `counts`.

    >>> import jax.numpy as jnp
    >>> g = global_importance(jnp.array([[1.0, -2.0], [3.0, 0.0]]), jnp.array([0, 1]))
    >>> g.overall.tolist(), g.per_class.tolist()
    ([2.0, 1.0], [[1.0, 2.0], [3.0, 0.0]])
    """
    if isinstance(attributions, Explanation):
        attributions = attributions.values
    a = V.check_array(attributions, "attributions", min_ndim=1)
    if labels is None:
        return GlobalImportance(*_overall(a))
    try:
        ldtype = jnp.result_type(labels)
    except TypeError:
        V.fail("labels", "an integer array (N,)", type(labels).__name__, TypeError)
    if not jnp.issubdtype(ldtype, jnp.integer):
        V.fail("labels", "integer class labels", f"dtype {ldtype}", TypeError)
    if tuple(np.shape(labels)) != (a.shape[0],):
        V.fail(
            "labels",
            f"one label per example, shape ({a.shape[0]},)",
            f"shape {tuple(np.shape(labels))}",
        )
    if n_classes is None:
        if not V.is_concrete(labels):
            raise ValueError("n_classes: required when labels are traced")
        n_classes = int(np.max(np.asarray(labels))) + 1
    n_classes = V.check_int(n_classes, "n_classes")
    if V.is_concrete(labels):
        arr = np.asarray(labels)
        if arr.min() < 0 or arr.max() >= n_classes:
            V.fail("labels", f"values in [0, {n_classes})", f"values in [{arr.min()}, {arr.max()}]")
    return _per_class(a, jnp.asarray(labels, jnp.int32), n_classes=n_classes)


@jit
def _overall(a):
    return jnp.mean(jnp.abs(a), axis=0), jnp.mean(a, axis=0)


@functools.partial(jit, static_argnames="n_classes")
def _per_class(a, labels, *, n_classes):
    overall, mean = _overall(a)
    sums = jax.ops.segment_sum(jnp.abs(a), labels, num_segments=n_classes)
    counts = jax.ops.segment_sum(jnp.ones_like(labels), labels, num_segments=n_classes)
    per = sums / jnp.maximum(counts, 1).reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype)
    return GlobalImportance(overall, mean, per, counts)


class Surrogate(NamedTuple):
    """A linear surrogate `g(z) = z @ coef + intercept` of a model (a pytree).

    Attributes:
      coef: `(d,)` one weight per input feature (tabular) or per segment (images).
      intercept: scalar.
      r2: fidelity, the R^2 of `g` against the model on the points it was fitted on.
      n_evals: model evaluations spent.
    """

    coef: jax.Array
    intercept: jax.Array
    r2: jax.Array
    n_evals: jax.Array

    def predict(self, z: Any) -> jax.Array:
        """Surrogate outputs for features `z` `(B, d)` (tabular: flattened inputs)."""
        z = jnp.asarray(z)
        return z.reshape(z.shape[0], -1) @ self.coef + self.intercept


def global_surrogate(
    model: Any,
    x: Any,
    *,
    target: Any = None,
    segments: Any = None,
    baseline: Any = 0.0,
    n_samples: int = 64,
    key: Any = None,
    ridge: float = 1e-6,
    batch_size: int | None = None,
) -> Surrogate:
    """Fits one linear model to a model's outputs over a dataset; returns it with its fidelity.

    Two modes:

    - **tabular** (`segments=None`): the surrogate maps the flattened inputs `x`
      `(N, d...)` to the target output, `f(x_i) ~ x_i @ coef + intercept`. Fit it on
      a neighbourhood of one point to get a local surrogate.
    - **coalitions** (`segments` given, images `(N, H, W, C)`): for every image,
      `n_samples` random coalitions `z` (each feature kept with probability 1/2,
      others set to `baseline`) are evaluated, and one surrogate over the `d`
      segments is fitted to all of them: `coef[j]` is the average effect of
      keeping segment `j`, across the dataset.

    The fit is ridge regression (unpenalised intercept) solved in closed form in
    JAX; `r2` is `1 - SS_res / SS_tot` on the fitted points.

    Args:
      model: a `Model`, NNX module or callable.
      x: the dataset.
      target: which output to fit (an int, per-example ints, a callable
        `outputs -> (B,)`, or `None` for scalar outputs). "predicted" fits each
        example's own arg-max class.
      segments: `(H, W)` or `(N, H, W)` labels for the coalition mode.
      baseline: replacement value(s) for removed features (coalition mode).
      n_samples: coalitions per example (coalition mode).
      key: `jax.random.key`, required in coalition mode.
      ridge: L2 penalty on `coef` (relative to the number of points).
      batch_size: model inputs per chunk.

    Returns:
      A `Surrogate`.

    >>> import jax.numpy as jnp
    >>> f = lambda x: 2.0 * x[:, 0] - x[:, 1] + 0.5
    >>> s = global_surrogate(f, jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 3.0]]))
    >>> [round(float(c), 3) for c in s.coef], round(float(s.intercept), 3), round(float(s.r2), 3)
    ([2.0, -1.0], 0.5, 1.0)
    """
    model = as_model(model)
    x = V.check_array(x)
    t = as_target(target, model, x)
    ridge = V.check_float(ridge, "ridge", minimum=0.0)
    batch_size = V.check_batch_size(batch_size)
    if segments is None:
        if x.shape[0] < 2:
            V.fail("x", "at least 2 examples to fit a surrogate", f"shape {tuple(x.shape)}")
        return _tabular(model, x, t, ridge=ridge, batch_size=batch_size)
    n_samples = V.check_int(n_samples, "n_samples", minimum=2)
    key = V.check_key(key)
    if x.ndim < 3:
        V.fail("x", "images (N, H, W[, C]) with segments", f"shape {tuple(x.shape)}")
    seg, d = features.check_segments(segments, x.shape)
    b = V.check_baseline(baseline, x)
    return _coalitions(
        model, x, t, b, seg, key, ridge=ridge, d=d, n_samples=n_samples, batch_size=batch_size
    )


def _fit(z, y, ridge):
    """Ridge regression with an unpenalised intercept: `(coef, intercept, r2)`."""
    zm, ym = jnp.mean(z, 0), jnp.mean(y)
    zc, yc = z - zm, y - ym
    d = z.shape[1]
    gram = jnp.matmul(zc.T, zc, precision=HIGHEST) + ridge * z.shape[0] * jnp.eye(d, dtype=z.dtype)
    # A tiny jitter keeps constant columns (never-varied features) solvable.
    gram = (
        gram
        + 1e-6 * jnp.trace(gram) / d * jnp.eye(d, dtype=z.dtype)
        + 1e-12 * jnp.eye(d, dtype=z.dtype)
    )
    coef = jnp.linalg.solve(gram, jnp.matmul(zc.T, yc, precision=HIGHEST))
    intercept = ym - jnp.matmul(zm, coef, precision=HIGHEST)
    res = yc - jnp.matmul(zc, coef, precision=HIGHEST)
    r2 = 1.0 - jnp.sum(res**2) / jnp.maximum(jnp.sum(yc**2), jnp.finfo(y.dtype).tiny)
    return coef, intercept, r2


@functools.partial(jit, static_argnames=("ridge", "batch_size"))
def _tabular(model, x, target, *, ridge, batch_size):
    n = x.shape[0]
    z = x.reshape(n, -1)

    def chunk(start, size):
        xb = jax.lax.dynamic_slice_in_dim(x, start, size)
        out = model(xb)
        t = target.bind(out) if target.needs_outputs else target.take(start + jnp.arange(size))
        return t.select(out)

    y = batching.chunked_map(chunk, n, batch_size)
    coef, intercept, r2 = _fit(z, y.astype(z.dtype), ridge)
    return Surrogate(coef, intercept, r2, jnp.asarray(n, jnp.int32))


@functools.partial(jit, static_argnames=("ridge", "d", "n_samples", "batch_size"))
def _coalitions(model, x, target, baseline, segments, key, *, ridge, d, n_samples, batch_size):
    n = x.shape[0]
    baseline = V.full_baseline(baseline, x)
    target = target.resolve(model, x)

    def mask_fn(ex, s):
        k = jax.vmap(lambda i: jax.random.fold_in(key, i))(ex * n_samples + s)
        return jax.vmap(lambda kk: jax.random.bernoulli(kk, 0.5, (d,)))(k)

    y = coalition_values(model, target, x, baseline, segments, mask_fn, n_samples, batch_size)
    ex, s = batching.flat_index(jnp.int32(0), n * n_samples, n_samples)
    z = mask_fn(ex, s).astype(x.dtype)
    coef, intercept, r2 = _fit(z, y.reshape(-1).astype(x.dtype), ridge)
    return Surrogate(coef, intercept, r2, jnp.asarray(n * n_samples, jnp.int32))
