"""Counterfactuals: the smallest change to `x` that makes the model predict another class.

The whole search is one jitted program: examples are processed in chunks of
`batch_size` (`batching.chunked_map`); every chunk runs its search loop on device
(DeepFool-style linearised steps, or an optax optimiser) and a bisection that
pulls the point found back to the decision boundary along the segment from `x`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._compile import jit, tuned
from .._core import batching, features, registry
from .._core import validate as V
from .._core.models import as_model
from .._core.types import Array, ArrayLike
from ._common import check_bounds, check_target_class, n_classes
from ._solvers import Box, Goal, Metric, deepfool, optax_search, refine

SOLVERS = ("deepfool", "optax")
DISTANCES = ("l2", "l1", "segments")


class Counterfactual(NamedTuple):
    """What `counterfactual` returns (a pytree; passes through `jit` and `to_numpy`).

    A counterfactual is a point, not an attribution, hence its own type.

    Attributes:
      x: the counterfactual inputs `(N, ...)`; where the search failed, the last point
        it reached.
      distance: `(N,)` the distance from `x` to it in the chosen metric (L2, L1 or
        the sum over segments of the L2 norm of the change in each segment).
      success: `(N,)` bool, the model predicts the goal class at the counterfactual.
      target_class: `(N,)` the class predicted at the counterfactual where it
        succeeded (the requested class, or the class found for `"other"`), else the
        requested class (-1 for `"other"`).
      original_class: `(N,)` the class predicted at `x`.
      n_evals: `(N,)` model evaluations spent (a forward and backward pass counts one;
        a DeepFool step towards `"other"` counts one per class).
    """

    x: Array
    distance: Array
    success: Array
    target_class: Array
    original_class: Array
    n_evals: Array


@registry.method(
    "outputs",
    evals=lambda a: a["steps"] + a["refine_steps"] + 3,
    evals_bound=True,
    cheap={"steps": 4, "refine_steps": 4},
)
def counterfactual(
    model: Callable,
    x: ArrayLike,
    *,
    target_class: Any,
    solver: str = "deepfool",
    distance: str = "l2",
    segments: ArrayLike | None = None,
    bounds: tuple[Any, Any] | None = None,
    steps: int = 50,
    refine_steps: int = 12,
    overshoot: float = 0.02,
    learning_rate: float = 0.05,
    margin_weight: float = 4.0,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
) -> Counterfactual:
    """The smallest change to each example that makes the model predict `target_class`.

    `solver="deepfool"` takes linearised steps: at the current point the model is
    replaced by its first-order expansion and the point moves to where that
    expansion crosses the boundary, times `1 + overshoot` (Moosavi-Dezfooli et al.),
    with the step that is smallest in the chosen distance: along the gradient (L2),
    on one input coordinate (L1, sparse changes), or on one segment (segments). A
    linear model is solved in one step. `solver="optax"` minimises `distance +
    margin_weight * hinge(margin)` with an optax optimiser (Adam by default), the
    change measured in units of the linearised distance. Both keep the point inside
    `bounds` (steps are projected; coordinates at a bound stop moving outwards),
    then bisect the segment from `x` to the point found (`refine_steps` times), so
    the returned point sits just across the boundary.

    Args:
      model: a `Model`, NNX module or callable returning `(N, classes)` logits or
        probabilities.
      x: inputs `(N, ...)`.
      target_class: the class to reach: an int, one int per example `(N,)`, or
        `"other"` (any class but the one predicted at `x`; DeepFool then moves
        towards the class of smallest linearised distance, which needs one
        backward pass per class and step).
      solver: `"deepfool"` or `"optax"`.
      distance: `"l2"`, `"l1"` (sparse changes) or `"segments"` (the sum over
        segments of the L2 norm of the change inside each: few segments change).
      segments: labels `(H, W)` or `(N, H, W)` for `distance="segments"`.
      bounds: the valid input range `(lo, hi)`, numbers or arrays broadcastable to
        `x` (e.g. `(0.0, 1.0)` for images); None for no bounds.
      steps: the most search steps.
      refine_steps: bisection steps pulling the point back to the boundary.
      overshoot: how far past the linearised boundary each step aims (relative).
      learning_rate: step size of the default Adam (`solver="optax"`), in units of
        each example's linearised distance to the boundary.
      margin_weight: weight of the hinge on the margin (`solver="optax"`).
      optimizer: an optax `GradientTransformation` to use instead of Adam. It must
        act elementwise (Adam, SGD, RMSProp ...) for examples to stay independent;
        reuse one object across calls to reuse the compiled program.
      batch_size: examples per chunk (each searched with its own loop).

    Returns:
      A `Counterfactual(x, distance, success, target_class, original_class,
      n_evals)`.

    Raises:
      ValueError, TypeError: invalid arguments (before anything compiles).

    References:
      Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to
      fool deep neural networks", CVPR 2016. Wachter, Mittelstadt & Russell,
      "Counterfactual Explanations without Opening the Black Box", Harvard JOLT 2018.

    >>> import jax.numpy as jnp
    >>> from jaxplain.testing import linear_model
    >>> w = jnp.array([[1.0, -1.0], [0.0, 0.0]])  # class 0 - class 1 = 2 * x0
    >>> cf = counterfactual(linear_model(w), jnp.array([[0.5, 0.3]]), target_class=1)
    >>> round(float(cf.distance[0]), 3), bool(cf.success[0])  # |margin| / ||w0 - w1|| = 1 / 2
    (0.5, True)
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=2)
    n = x.shape[0]
    t = check_target_class(target_class, n, n_classes(model, x))
    V.check_choice(solver, "solver", SOLVERS)
    V.check_choice(distance, "distance", DISTANCES)
    seg, d = _check_segments(segments, distance, x)
    box = check_bounds(bounds, x)
    refine_steps = V.check_count(refine_steps, "refine_steps", minimum=0)
    steps = V.check_budget(steps, "steps", n, fixed=refine_steps + 3)
    overshoot = V.check_float(overshoot, "overshoot", minimum=0.0)
    learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0, open_min=True)
    margin_weight = V.check_float(margin_weight, "margin_weight", minimum=0.0, open_min=True)
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        V.fail("optimizer", "None or an optax.GradientTransformation", type(optimizer).__name__,
               TypeError)
    batch_size = V.check_batch_size(batch_size)
    lo, hi = box if box is not None else (None, None)
    return _counterfactual(model, x, None if t is None else V.to_device(t), lo, hi, seg,
                           overshoot, learning_rate, margin_weight, solver=solver,
                           distance=distance, d=d, steps=steps, refine_steps=refine_steps,
                           optimizer=optimizer, batch_size=batch_size)


def _check_segments(segments: Any, distance: str, x: jax.Array):
    if distance != "segments":
        if segments is not None:
            V.fail("segments", "None unless distance='segments'", "a label map")
        return None, 0
    if len(x.shape) < 3:
        V.fail("x", "images (N, H, W[, C]) for distance='segments'", f"shape {tuple(x.shape)}")
    return features.check_segments(segments, x.shape)


@functools.partial(jit, static_argnames=("solver", "distance", "d", "steps", "refine_steps",
                                         "optimizer", "batch_size"))
def _counterfactual(model, x, t, lo, hi, seg, overshoot, lr, weight, *, solver, distance, d,
                    steps, refine_steps, optimizer, batch_size):
    f = tuned(model, "grad")
    full = lambda v: None if v is None else jnp.broadcast_to(v, x.shape)  # noqa: E731
    lo, hi = full(lo), full(hi)

    def chunk(start, size):
        take = lambda v: None if v is None else jax.lax.dynamic_slice_in_dim(v, start, size)  # noqa: E731
        x0 = take(x)
        a = jnp.argmax(f(x0), axis=-1)
        goal = Goal(a, take(t))
        metric, box = Metric(distance, take(seg), d), Box(take(lo), take(hi))
        if solver == "deepfool":
            z, ok, out, count = deepfool(f, x0, goal, metric, box, steps, overshoot)
        else:
            z, ok, out, count = optax_search(f, x0, goal, metric, box, steps, overshoot, lr,
                                             weight, optimizer)
            count = count + 1  # the forward pass `refine` runs at z
        cf, cls = refine(f, x0, z, ok, goal, out, refine_steps)
        missed = jnp.full_like(a, -1) if goal.t is None else goal.t
        return Counterfactual(
            cf, metric.norm(cf - x0), ok, jnp.where(ok, cls, missed).astype(jnp.int32),
            a.astype(jnp.int32), (1 + count + jnp.where(ok, refine_steps, 0)).astype(jnp.int32))

    return batching.chunked_map(chunk, x.shape[0], batch_size,
                                report=steps + refine_steps + 3)
