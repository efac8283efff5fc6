"""Shared plumbing for the metrics: attribution layouts, baselines, masks and statistics.

Metrics see inputs as images `(N, H, W, C)`; `(N, H, W)` and tabular `(N, D)` inputs
are viewed as `(N, H, W, 1)` and `(N, 1, D, 1)` internally, and the model is called
on the original layout. Pixel-level attributions are reduced to one value per
pixel by summing over channels; superpixel features (`segments=`) get the sum of
their pixels' values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._compile import numpy_rules
from .._core import validate as V
from .._core.types import Explanation
from .._core.features import check_segments, gaussian_blur, positions
from .._core.cache import eval_shape_cached
from .._core.models import as_model
from .._core.targets import as_target

LAYOUTS = "(N, H, W, C), (N, H, W) or (N, D)"
BASELINES = ("zero", "mean", "blur")


def view_shape(x_shape: tuple[int, ...], name: str = "x") -> tuple[int, int, int, int]:
    """The `(N, H, W, C)` view of inputs of shape `x_shape`."""
    if len(x_shape) == 4:
        return tuple(x_shape)
    if len(x_shape) == 3:
        return tuple(x_shape) + (1,)
    if len(x_shape) == 2:
        return (x_shape[0], 1, x_shape[1], 1)
    V.fail(name, f"inputs of shape {LAYOUTS}", f"shape {tuple(x_shape)}")


def as_view(x: jax.Array) -> jax.Array:
    return x.reshape(view_shape(x.shape))


def view_model(
    model: Callable, shape: tuple[int, ...], softmax: bool | str = False, at: Any = None
) -> Callable:
    """The model called on the `(B, H, W, C)` view (reshaped back to the user's layout).

    `softmax`: False / "raw" (the outputs), True / "softmax" (their softmax), or
    "auto" (from `score_mode`): the softmax, unless the outputs at the view `at`
    are already probabilities (non-negative rows summing to 1), then the outputs.
    """

    def raw(z):
        return model(z.reshape((z.shape[0],) + tuple(shape[1:])))

    if softmax in (False, "raw"):
        return raw
    if softmax == "auto":
        out = raw(at)
        done = jnp.all(out >= 0) & jnp.all(jnp.abs(jnp.sum(out, axis=-1) - 1) <= 1e-3)
        return lambda z: (lambda o: jnp.where(done, o, jax.nn.softmax(o, axis=-1)))(raw(z))
    return lambda z: jax.nn.softmax(raw(z), axis=-1)


def output_shape(model: Any, x: jax.Array) -> tuple[int, ...]:
    """The shape of `model(x)` for a `Model` (traced once per architecture and input shape)."""
    return tuple(eval_shape_cached(lambda m, z: m(z), model, x, "outputs").shape)


SCALES = {"raw": "raw", "softmax": "probability", "auto": "probability"}
"""The scale a `Curve` reports for each scoring mode of `score_mode`."""


def score_mode(softmax: Any, model: Any, x: jax.Array, target: Any) -> str:
    """The static scoring mode of `softmax=` (Python time): "raw", "softmax" or "auto".

    `softmax="auto"` follows probabilities for classifiers: outputs `(N, K)` with
    `K > 1` and a class target (an index, one per example, or "predicted"); the
    raw output otherwise (one output per example, or a callable target, which
    defines its own scale).
    """
    if softmax is True or softmax is False:
        return "softmax" if softmax else "raw"
    if not (isinstance(softmax, str) and softmax == "auto"):
        V.fail("softmax", "True, False or 'auto'", repr(softmax), TypeError)
    if callable(target.fn):
        return "raw"
    out = output_shape(model, x)
    return "auto" if len(out) == 2 and out[-1] > 1 else "raw"


def attribution_array(attributions: Any, name: str = "attributions") -> jax.Array:
    """The values of an `Explanation` or an array, validated as a finite float batch."""
    if isinstance(attributions, Explanation):
        attributions = attributions.values
    return V.check_array(attributions, name, min_ndim=2)


def check_pixel_map(
    a_shape: tuple[int, ...], x_shape: tuple[int, ...], name: str = "attributions"
) -> None:
    """Pixel-level attributions are shaped like `x`, or `(N, H, W)` for images `(N, H, W, C)`."""
    n, h, w, _ = view_shape(x_shape)
    if tuple(a_shape) == tuple(x_shape) or (len(x_shape) == 4 and tuple(a_shape) == (n, h, w)):
        return
    V.fail(
        name,
        f"an array shaped like x {tuple(x_shape)}"
        + (f", a pixel map {(n, h, w)}" if len(x_shape) == 4 else "")
        + ", or per-feature values (N, d) together with segments=",
        f"shape {tuple(a_shape)}",
    )


def pixel_map(a: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
    """Pixel-level attributions -> one value per pixel `(N, H, W)` (channels summed; traced)."""
    n, h, w, c = view_shape(x_shape)
    return a.reshape(n, h, w, c).sum(-1) if tuple(a.shape) == tuple(x_shape) else a


def check_features(
    a_shape: tuple[int, ...], x_shape: tuple[int, ...], segments: Any, name: str = "attributions"
) -> tuple[str, jax.Array | None, int]:
    """Validates how attributions map to features (Python time): `(kind, segments, d)`.

    `kind` is "pixels" (every pixel a feature, `segments` None), "values" (`(N, d)`
    values for the given segments) or "sums" (pixel-level attributions summed
    within each segment). `segments` is int32 `(N, H, W)` or None.
    """
    n, h, w, _ = view_shape(x_shape)
    if segments is None:
        if len(a_shape) == 2 and len(x_shape) != 2:
            V.fail(
                name,
                "pixel-level attributions; per-feature values (N, d) need segments=",
                f"shape {tuple(a_shape)}",
            )
        check_pixel_map(a_shape, x_shape, name)
        return "pixels", None, h * w
    seg, d = check_segments(segments, (n, h, w))
    if len(a_shape) == 2 and tuple(a_shape) != tuple(x_shape):
        if tuple(a_shape) != (n, d):
            V.fail(
                name,
                f"per-feature values of shape {(n, d)} for segments with {d} labels",
                f"shape {tuple(a_shape)}",
            )
        return "values", seg, d
    check_pixel_map(a_shape, x_shape, name)
    return "sums", seg, d


def to_features(
    a: jax.Array, x_shape: tuple[int, ...], kind: str, segments: jax.Array | None, d: int
) -> tuple[jax.Array, jax.Array]:
    """Attributions as `(values (N, d), segments (N, H, W))` for a `check_features` kind (traced)."""
    n, h, w, _ = view_shape(x_shape)
    if kind == "pixels":
        seg = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32).reshape(h, w), (n, h, w))
        return pixel_map(a, x_shape).reshape(n, h * w), seg
    if kind == "values":
        return a, segments
    pm = pixel_map(a, x_shape)
    return jax.vmap(lambda p, s: jax.ops.segment_sum(p.ravel(), s.ravel(), d))(
        pm, segments
    ), segments


# ---- shared validation and set-up of the perturbation metrics ----------------------------


def prepare(model, x, attributions, target, baseline, segments, blur_sigma):
    """Python-time validation shared by the perturbation metrics."""
    model = as_model(model)
    x = V.check_array(x)
    a = attribution_array(attributions)
    kind, seg, d = check_features(a.shape, x.shape, segments)
    t = as_target(target, model, x)
    mode, arr = check_baseline(baseline, x)
    sigma = check_sigma(blur_sigma, x.shape, mode)
    return model, x, a, (kind, seg, d), t, (mode, arr, sigma)


def setup(model, x, target, a, feats, base, softmax):
    """Traced: the model on the image view, the view, the bound target, features, baseline."""
    (kind, seg, d), (mode, arr, sigma) = feats, base
    x4 = as_view(x)
    f = view_model(model, x.shape, softmax, at=x4)
    values, seg = to_features(a, x.shape, kind, seg, d)
    return f, x4, target.resolve(f, x4), values, seg, make_baseline(x, mode, arr, sigma)


# ---- baselines ---------------------------------------------------------------------------


def check_baseline(
    baseline: Any, x: jax.Array, name: str = "baseline"
) -> tuple[str, jax.Array | None]:
    """`(mode, array)`: a named baseline ("zero", "mean", "blur"; array None) or an array like `x`."""
    if isinstance(baseline, str):
        V.check_choice(baseline, name, BASELINES)
        return baseline, None
    return "array", V.check_baseline(baseline, x, name)


def check_sigma(blur_sigma: Any, x_shape: tuple[int, ...], mode: str) -> float:
    """The blur width in pixels (default `max(H, W) / 10`, as `features.gaussian_blur` users)."""
    if mode != "blur":
        return 1.0
    s = blur_sigma if blur_sigma is not None else max(view_shape(x_shape)[1:3]) / 10.0
    return V.check_float(s, "blur_sigma", minimum=0.0, open_min=True)


def make_baseline(x: jax.Array, mode: str, array: jax.Array | None, sigma: float) -> jax.Array:
    """The baseline for `x` on the `(N, H, W, C)` view (traced).

    "zero": zeros; "mean": every pixel set to its image's channel means; "blur": a
    Gaussian blur of the image; "array": the given array (from `check_baseline`).
    """
    x4 = as_view(x)
    if mode == "zero":
        return jnp.zeros_like(x4)
    if mode == "mean":
        return jnp.broadcast_to(jnp.mean(x4, axis=(1, 2), keepdims=True), x4.shape)
    if mode == "blur":
        return gaussian_blur(x4, sigma)
    return V.full_baseline(array, x).reshape(x4.shape)


# ---- masks ---------------------------------------------------------------------------------


def trapezoid(curve: jax.Array, frac: jax.Array) -> jax.Array:
    """Area under each row of `curve` `(N, m)` over the points `frac` `(m,)`."""
    return jnp.sum((curve[:, 1:] + curve[:, :-1]) * jnp.diff(frac)[None] / 2, axis=1)


def pearson(a: jax.Array, b: jax.Array, axis: int = -1) -> jax.Array:
    """Pearson correlation along `axis`; 0 where either side is constant."""
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    den = jnp.sqrt((a * a).sum(axis) * (b * b).sum(axis))
    return jnp.where(den > 0, (a * b).sum(axis) / jnp.where(den > 0, den, 1.0), 0.0)


def average_ranks(v: jax.Array) -> jax.Array:
    """Ranks `0..n-1` of a vector, ties sharing their average rank (as `scipy.stats.rankdata` - 1)."""
    s = jnp.sort(v)
    lo = jnp.searchsorted(s, v, side="left")
    hi = jnp.searchsorted(s, v, side="right")
    return (lo + hi - 1).astype(jnp.float32) / 2


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of `(N, ...)` arrays per example -> `(N,)`."""
    ra = jax.vmap(average_ranks)(a.reshape(a.shape[0], -1))
    rb = jax.vmap(average_ranks)(b.reshape(b.shape[0], -1))
    return pearson(ra, rb)


def ranks_desc(values: jax.Array) -> jax.Array:
    """Position of each feature when sorted by decreasing value (stable), `(N, d)` int32."""
    return positions(jnp.argsort(-values, axis=1, stable=True))


def sample_keys(key: jax.Array, ex: jax.Array, s: jax.Array) -> jax.Array:
    """One key per (example, sample) pair, independent of how evaluations are chunked."""
    return jax.vmap(lambda e, i: jax.random.fold_in(jax.random.fold_in(key, e), i))(ex, s)


def random_subsets(keys: jax.Array, d: int, size: int) -> jax.Array:
    """`(b, d)` boolean masks with exactly `size` features drawn uniformly per key."""

    def one(k):
        # the `size` smallest of d uniforms, as the first `size` of their stable argsort
        # would be: `top_k` took 1.5 ms for 64 subsets of 1024 pixels, the sort 10.8 ms
        # (XLA:CPU, jax 0.10.2)
        chosen = jax.lax.top_k(-jax.random.uniform(k, (d,)), size)[1]
        return jnp.zeros((d,), bool).at[chosen].set(True)

    return jax.vmap(one)(keys)


def subset_size(v: Any, d: int, name: str = "subset_size") -> int:
    """An int count in [1, d] or a float fraction in (0, 1) of the `d` features."""
    if isinstance(v, float):
        V.check_float(v, name, minimum=0.0, maximum=1.0, open_min=True)
        return max(1, min(d, round(v * d)))
    return V.check_int(v, name, minimum=1, maximum=d)


# ---- attribution methods passed as callables ---------------------------------------------------


def accepts_target(fn: Callable) -> bool:
    """True when `fn` takes a `target` keyword (or `**kwargs`)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "target" and p.kind is not p.POSITIONAL_ONLY)
        for p in params
    )


def run_explain(explain: Callable, model: Any, x: jax.Array, target: Any) -> jax.Array:
    """Attributions of `explain(model, x[, target=...])` as an array (traced)."""
    with numpy_rules(False):  # the user's explanation code keeps JAX's defaults
        out = explain(model, x, target=target) if accepts_target(explain) else explain(model, x)
    if isinstance(out, Explanation):
        out = out.values
    return jnp.asarray(out)


def explain_shape(
    explain: Any, model: Any, x: jax.Array, target: Any, name: str = "explain"
) -> tuple[int, ...]:
    """Validates `explain` at Python time (one trace, no compile) and returns its output shape."""
    if not callable(explain):
        V.fail(
            name, "a callable explain(model, x) -> attributions", type(explain).__name__, TypeError
        )
    try:
        out = jax.eval_shape(lambda m, z, t: run_explain(explain, m, z, t), model, x, target)
    except Exception as e:
        raise ValueError(
            f"{name}: calling explain(model, x) failed: {type(e).__name__}: {e}"
        ) from e
    if not hasattr(out, "shape") or len(out.shape) < 1 or out.shape[0] != x.shape[0]:
        V.fail(
            name,
            f"attributions with the batch size {x.shape[0]} on axis 0",
            getattr(out, "shape", type(out).__name__),
        )
    return tuple(out.shape)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["auc", "values", "fractions"],
    meta_fields=["scale"],
)
@dataclasses.dataclass(frozen=True)
class Curve:
    """A deletion / insertion curve (a pytree; `scale` is static metadata).

    Attributes:
      auc: area under the curve per example, `(N,)` (trapezoid rule over the
        fraction of features removed or inserted, from 0 to 1).
      values: the target at every step, `(N, steps + 1)`.
      fractions: the fraction of features removed / inserted at each step, `(steps + 1,)`.
      scale: what `values` measure: "probability" (the softmax probability of the
        target class) or "raw" (the model's output as it is, e.g. logits or a
        regression value).
    """

    auc: jax.Array
    values: jax.Array
    fractions: jax.Array
    scale: str = "raw"
