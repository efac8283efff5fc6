"""Evaluating explanations: faithfulness metrics built on the perturbation engine.

Deletion, insertion and monotonicity are coalition *schedules*: features are
removed (or added) in the order of their attributions, and every step of every
example is one coalition evaluated by `perturbation.coalition_values`, in chunks
of `batch_size` model inputs built on device.

Attributions are given as an array shaped like `x` (channels are summed per
pixel), an `(N, H, W)` pixel map, `(N, d)` per-feature values with `segments=`,
or an `Explanation`. With `segments=` and pixel-level attributions, a feature's
attribution is the sum over its pixels.

The other metric families live next to this module (`faithfulness.py`,
`road.py`, `robustness.py`, `localisation.py`, `sanity.py`, `evaluate.py`);
`jaxplain.metrics` re-exports every metric.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from . import base as B
from .base import Curve
from .._core import registry
from .._core import validate as V
from ..perturbation.engine import coalition_values


def _steps_schedule(steps: int, d: int) -> np.ndarray:
    """Number of features moved at each step: `round(s * d / steps)`, s = 0..steps."""
    return ((np.arange(steps + 1) * d + steps // 2) // steps).astype(np.int32)


def _curve_call(kind: str, call: dict):
    """Validates the public curve's arguments (`call`: its `locals()`), then runs it."""
    model, x, a, (fk, seg, d), t, (mode, arr, sigma) = B.prepare(
        call["model"], call["x"], call["attributions"], call["target"], call["baseline"],
        call["segments"], call["blur_sigma"]
    )
    steps = V.check_budget(call["steps"], "steps", x.shape[0], fixed=1)
    batch_size = V.check_batch_size(call["batch_size"])
    score = B.score_mode(call["softmax"], model, x, t)
    return _curve(
        model,
        x,
        t,
        a,
        seg,
        arr,
        kind=kind,
        features=(fk, d),
        steps=steps,
        mode=mode,
        sigma=sigma,
        softmax=score,
        batch_size=batch_size,
    )


@functools.partial(
    jit, static_argnames=("kind", "features", "steps", "mode", "sigma", "softmax", "batch_size")
)
def _curve(
    model,
    x,
    target,
    a,
    segments,
    baseline,
    *,
    kind,
    features,
    steps,
    mode,
    sigma,
    softmax,
    batch_size,
):
    (fk, d) = features
    f, x4, t, values, seg, base = B.setup(
        model, x, target, a, (fk, segments, d), (mode, baseline, sigma), softmax
    )
    ks = _steps_schedule(steps, d)
    rank = B.ranks_desc(values)
    k = jnp.asarray(ks)
    if kind == "deletion":  # keep the features not yet removed (most important go first)
        mask_fn = lambda ex, s: rank[ex] >= k[s][:, None]
    elif kind == "insertion":  # keep the most important k features
        mask_fn = lambda ex, s: rank[ex] < k[s][:, None]
    else:  # monotonicity: insert the least important features first
        mask_fn = lambda ex, s: rank[ex] >= d - k[s][:, None]
    curve = coalition_values(f, t, x4, base, seg, mask_fn, steps + 1, batch_size)
    frac = jnp.asarray(ks / d, curve.dtype)
    auc = B.trapezoid(curve, frac)
    return Curve(auc, curve, frac, B.SCALES[softmax])


_CURVE_ARGS = """
    Args:
      model: a `Model`, NNX module or callable `f(x_batch) -> outputs`.
      x: inputs `(N, H, W, C)`, `(N, H, W)` or `(N, D)`.
      attributions: an array shaped like `x`, an `(N, H, W)` pixel map, `(N, d)`
        per-feature values with `segments=`, or an `Explanation`.
      target: which output to follow (see `as_target`); "predicted" is the class
        predicted at `x`.
      steps: number of removal steps; step `s` moves `round(s * d / steps)` features.
      baseline: what removed pixels become: "zero", "mean" (per-image channel
        means), "blur" (Gaussian blur of `x`), a number or an array like `x`.
      segments: optional superpixels `(H, W)` or `(N, H, W)`; by default every pixel
        is a feature.
      blur_sigma: the Gaussian's standard deviation in pixels for "blur" (default
        `max(H, W) / 10`).
      softmax: the scale of the curve. "auto" (default): the probability of the
        target class for classifiers (outputs `(N, K)` with `K > 1` and a class
        target; the softmax of the outputs, or the outputs themselves when they
        already are probabilities at `x`), the raw output otherwise (one output
        per example, or a callable target). True: always the softmax; False:
        always the raw output (logits). The result's `scale` says which was used.
      batch_size: model inputs per chunk (`None`: `batching.default_batch_size()`).
"""


@registry.method("metrics", evals=lambda a: a["steps"] + 1, cheap={"steps": 4})
def deletion(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    steps: int = 64,
    baseline: Any = "zero",
    segments: Any = None,
    blur_sigma: float | None = None,
    softmax: bool | str = "auto",
    batch_size: int | None = None,
) -> Curve:
    """Deletion curve: the target as features are removed, most important first.

    A faithful explanation makes the target fall quickly, so a *lower* AUC is
    better. Costs `N * (steps + 1)` forward passes.
    {args}

    Returns:
      A `Curve` with `auc (N,)`, `values (N, steps + 1)`, `fractions (steps + 1,)`
      and `scale` ("probability" or "raw").

    Raises:
      ValueError, TypeError: bad shapes, segments, baseline or configuration.

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
      Black-box Models", BMVC 2018.

    >>> import jax.numpy as jnp
    >>> f = lambda x: x.sum(axis=(1, 2, 3))
    >>> x = jnp.arange(8.0).reshape(1, 2, 4, 1)
    >>> float(deletion(f, x, x, target=None, steps=8).auc[0])
    8.75
    """
    return _curve_call("deletion", locals())


@registry.method("metrics", evals=lambda a: a["steps"] + 1, cheap={"steps": 4})
def insertion(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    steps: int = 64,
    baseline: Any = "blur",
    segments: Any = None,
    blur_sigma: float | None = None,
    softmax: bool | str = "auto",
    batch_size: int | None = None,
) -> Curve:
    """Insertion curve: the target as features of `x` are put back into the baseline.

    Features are inserted most important first, starting from the baseline (a
    blurred copy of `x` by default); a *higher* AUC is better. Costs
    `N * (steps + 1)` forward passes.
    {args}

    Returns:
      A `Curve` with `auc (N,)`, `values (N, steps + 1)`, `fractions (steps + 1,)`
      and `scale` ("probability" or "raw").

    Raises:
      ValueError, TypeError: bad shapes, segments, baseline or configuration.

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
      Black-box Models", BMVC 2018.
    """
    return _curve_call("insertion", locals())


for _f in (deletion, insertion):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("    {args}", _CURVE_ARGS.rstrip("\n"))


@registry.method("metrics", evals=lambda a: a["steps"] + 1, cheap={"steps": 4})
def monotonicity(
    model: Any,
    x: Any,
    attributions: Any,
    *,
    target: Any,
    steps: int = 64,
    baseline: Any = "zero",
    segments: Any = None,
    blur_sigma: float | None = None,
    softmax: bool | str = False,
    atol: float = 0.0,
    batch_size: int | None = None,
) -> jax.Array:
    """Monotonicity: does the target grow as features are added, least important first?

    Starting from the baseline, features are inserted in *increasing* order of
    attribution; each step should increase the target. Arguments as in `deletion`,
    except that `softmax` defaults to False (the raw output); "auto" is accepted.

    Returns:
      `(N,)` fraction of the `steps` increments that do not decrease the target by
      more than `atol` (1.0: monotonic, as in Arya et al.'s boolean metric).

    References:
      Arya et al., "One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI
      Explainability Techniques", 2019.
    """
    atol = V.check_float(atol, "atol", minimum=0.0)
    c = _curve_call("monotonicity", locals())
    return jnp.mean(jnp.diff(c.values, axis=1) >= -atol, axis=1).astype(c.values.dtype)


# ---- the other families, re-exported so `jaxplain.metrics` lists every metric ----------------
