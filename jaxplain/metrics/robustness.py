"""Robustness of explanations: sensitivity to small input perturbations, local Lipschitz.

The attribution method is passed as a callable `explain(model, x) -> attributions`
(an array or an `Explanation`); when it accepts a `target` keyword it receives
the target of the explained example (a "predicted" target stays the class
predicted at the *unperturbed* input). It is re-run on `N * n_samples` perturbed
inputs, `batch_size` at a time, inside one compiled program; passing the same
function object again reuses that program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import base as B
from .._core import registry
from .._core import validate as V
from .._core import batching
from .._core.noise import gaussian
from .._compile import jit
from .._core.models import as_model
from .._core.targets import as_target

NOISES = ("uniform", "gaussian")


def _norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1))


def _run(call: dict, score: str):
    """Validates the public metric's arguments (`call`: its `locals()`), then returns the
    per-example `score` (see `_score`) in one program."""
    model, x, attributions, target, explain = (call[k] for k in (
        "model", "x", "attributions", "target", "explain"))
    key, radius, n_samples, noise, batch_size = (call[k] for k in (
        "key", "radius", "n_samples", "noise", "batch_size"))
    model = as_model(model)
    x = V.check_array(x)
    t = as_target(target, model, x)
    shape = B.explain_shape(explain, model, x, t)
    if attributions is not None:
        a = B.attribution_array(attributions)
        if tuple(a.shape) != shape:
            V.fail(
                "attributions",
                f"the shape explain(model, x) returns, {shape}",
                f"shape {tuple(a.shape)}",
            )
    else:
        a = None
    key = V.check_key(key)
    radius = V.check_float(radius, "radius", minimum=0.0, open_min=True)
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], fixed=1)
    V.check_choice(noise, "noise", NOISES)
    return _sensitivity(
        model,
        x,
        t,
        a,
        key,
        explain=explain,
        radius=radius,
        n_samples=n_samples,
        noise=noise,
        batch_size=V.check_batch_size(batch_size),
        score=score,
    )


@functools.partial(
    jit, static_argnames=("explain", "radius", "n_samples", "noise", "batch_size", "score")
)
def _sensitivity(model, x, target, a0, key, *, explain, radius, n_samples, noise, batch_size,
                 score):
    t = target.resolve(model, x)
    if a0 is None:
        a0 = B.run_explain(explain, model, x, t)
    n = x.shape[0]

    def draw(k):
        if noise == "uniform":
            return jax.random.uniform(k, x.shape[1:], x.dtype, -radius, radius)
        return radius * gaussian(k, x.shape[1:], x.dtype)

    def chunk(start, size):
        ex, s = batching.flat_index(start, size, n_samples)
        eps = jax.vmap(draw)(B.sample_keys(key, ex, s))
        a = B.run_explain(explain, model, x[ex] + eps, t.take(ex))
        if a.shape != (size,) + a0.shape[1:]:
            raise ValueError(
                f"explain: expected attributions of shape {(size,) + a0.shape[1:]} "
                f"on perturbed inputs, got {a.shape}"
            )
        return _norm(a - a0[ex]), _norm(eps)

    da, dx = batching.chunked_map(chunk, n * n_samples, batch_size)
    return _score(score, da.reshape(n, n_samples), dx.reshape(n, n_samples), _norm(a0))


def _score(score, da, dx, na):
    """Per-example score from `||a(x') - a(x)||`, `||x' - x||` (N, n_samples) and `||a(x)||`.

    `score` is `"max"`/`"mean"` (of `da`), `"max_relative"`/`"mean_relative"` (of
    `da / ||a(x)||`, left as `da` where `||a(x)|| = 0`) or `"lipschitz"`.
    """
    if score == "lipschitz":
        return jnp.max(da / jnp.maximum(dx, jnp.finfo(dx.dtype).tiny), axis=1)
    if score.endswith("_relative"):
        da = jnp.where(na[:, None] > 0, da / jnp.where(na > 0, na, 1.0)[:, None], da)
    return (jnp.max if score.startswith("max") else jnp.mean)(da, axis=1)


_ARGS = """
    Args:
      model: a `Model`, NNX module or callable `f(x_batch) -> outputs`.
      x: inputs `(N, ...)`.
      attributions: the attributions of `x` by `explain` (shaped as it returns
        them), or `None` to compute them.
      explain: the attribution method, `explain(model, x) -> array or Explanation`,
        optionally taking `target=`; e.g. `lambda m, x, target: jx.saliency(m, x, target=target)`.
      target: the target (see `as_target`), passed on to `explain` if it takes one.
      key: a `jax.random.key`; one perturbation per (example, sample) is drawn from it.
      radius: perturbation size: the half-width of the uniform noise, or the
        standard deviation of the Gaussian noise.
      n_samples: perturbations per example (the method runs `N * n_samples` times).
      noise: "uniform" (in the L-infinity ball of `radius`) or "gaussian".
      batch_size: perturbed inputs explained per chunk (`None`: the default).
"""


@registry.method("metrics", cheap={"n_samples": 4})
def max_sensitivity(
    model: Any,
    x: Any,
    attributions: Any = None,
    *,
    explain: Callable,
    target: Any,
    key: Any,
    radius: float = 0.05,
    n_samples: int = 16,
    noise: str = "uniform",
    relative: bool = True,
    batch_size: int | None = None,
) -> jax.Array:
    """Max-sensitivity: the largest change of the attributions under small input noise.

    `max_j ||a(x + eps_j) - a(x)|| / ||a(x)||` over Monte Carlo draws `eps_j`
    (without the denominator when `relative=False`). Lower is better.
    {args}
      relative: divide by `||a(x)||` (Frobenius norms), as Quantus does.

    Returns:
      `(N,)` max-sensitivity per example.

    References:
      Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019.
    """
    score = "max_relative" if relative else "max"
    return _run(locals(), score)


@registry.method("metrics", cheap={"n_samples": 4})
def avg_sensitivity(
    model: Any,
    x: Any,
    attributions: Any = None,
    *,
    explain: Callable,
    target: Any,
    key: Any,
    radius: float = 0.05,
    n_samples: int = 16,
    noise: str = "uniform",
    relative: bool = True,
    batch_size: int | None = None,
) -> jax.Array:
    """Average sensitivity: the mean change of the attributions under small input noise.

    As `max_sensitivity`, averaging over the draws instead of taking the maximum.
    {args}
      relative: divide by `||a(x)||` (Frobenius norms), as Quantus does.

    Returns:
      `(N,)` average sensitivity per example.

    References:
      Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019.
    """
    score = "mean_relative" if relative else "mean"
    return _run(locals(), score)


@registry.method("metrics", cheap={"n_samples": 4})
def local_lipschitz_estimate(
    model: Any,
    x: Any,
    attributions: Any = None,
    *,
    explain: Callable,
    target: Any,
    key: Any,
    radius: float = 0.1,
    n_samples: int = 16,
    noise: str = "gaussian",
    batch_size: int | None = None,
) -> jax.Array:
    """Local Lipschitz estimate: `max_j ||a(x + eps_j) - a(x)|| / ||eps_j||`.

    A Monte Carlo lower bound on the explanation's local Lipschitz constant around
    each input. Lower is better.
    {args}

    Returns:
      `(N,)` estimate per example.

    References:
      Alvarez-Melis and Jaakkola, "On the Robustness of Interpretability Methods",
      ICML Workshop on Human Interpretability 2018.
    """
    return _run(locals(), "lipschitz")


for _f in (max_sensitivity, avg_sensitivity, local_lipschitz_estimate):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("    {args}", _ARGS.rstrip("\n"))
