"""Gradient methods averaged over random draws: noise tunnels (SmoothGrad, VarGrad,
SquareGrad, SmoothGrad-IG) and expected gradients (GradientSHAP).

Draws come from `jax.random.fold_in(key, sample index)`, never from the chunk, so
results do not depend on `batch_size`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .._compile import jit
from .._core import registry
from .._core import validate as V
from .._core import batching
from .._core.noise import LATTICE_REPLICATES, MAX_LATTICE, gaussian, lattice_gaussian
from .._core.types import Explanation
from .._core.targets import value_and_grad
from ._shared import bcast, count, prepare_input
from .basic import saliency


NOISE_KINDS = ("smoothgrad", "squaregrad", "vargrad")
SAMPLINGS = ("mc", "antithetic", "lattice")


# ---- noise tunnels ------------------------------------------------------------------------


@registry.method(
    "gradients",
    evals=lambda a: a["n_samples"] * (a["method_kwargs"].get("steps", -1) + 2),
    cheap={"n_samples": 4},
)
def noise_tunnel(model: Any, x: jax.Array, *, target: Any, key: Any,
                 method: Callable[..., Explanation] = saliency, n_samples: int = 16,
                 noise_level: float = 0.15, kind: str = "smoothgrad", sampling: str = "mc",
                 batch_size: int | None = None, **method_kwargs: Any) -> Explanation:
    """Averages any attribution `method` over noisy copies of the input.

    Each example gets Gaussian noise with standard deviation
    `noise_level * (max(x_n) - min(x_n))`. With `kind="smoothgrad"` the result is
    the mean attribution, `"squaregrad"` the mean of squares, `"vargrad"` the
    variance. A "predicted" target is fixed at the clean input. Noise sample `j`
    uses `jax.random.fold_in(key, j)`, so results do not depend on `batch_size`.

    Args:
      model, x, target: as for `method`.
      key: a `jax.random.key`.
      method: a jaxplain attribution function, e.g. `saliency` (the default) or
        `integrated_gradients` (SmoothGrad-IG).
      n_samples: noisy copies per example.
      noise_level: noise standard deviation relative to each input's range.
      kind: `smoothgrad`, `squaregrad` or `vargrad`.
      sampling: how the noise is drawn: `"mc"` independent draws; `"antithetic"`
        pairs `+eps, -eps` (even `n_samples`; exact for a quadratic model, whose
        gradient is linear); `"lattice"` randomised quasi-Monte Carlo
        (`_core.noise.lattice_gaussian`: every pixel's noise stratified over the
        samples; `n_samples` a multiple of 8, in 4 independent randomisations).
        The standard error is over pairs, or over the 4 randomisations.
      batch_size: bound on model inputs alive at once (shared with `method`).
      **method_kwargs: static keyword arguments for `method` (e.g. `steps=16`).
        If `method` takes a `key`, noise sample `j` passes it a key folded from
        `key` as well.

    Returns:
      `Explanation` with the aggregated `values`, `stderr` of the mean and its
      degrees of freedom `stderr_df` (the pairs or randomisations less one; for
      `smoothgrad`) and `n_evals`.

    References:
      Smilkov et al. SmoothGrad (2017); Adebayo et al. Local Explanation Methods
      for Deep Neural Networks Lack Sensitivity to Parameter Values (2018);
      Hooker et al. A Benchmark for Interpretability Methods (2019).

    >>> import jax, jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    >>> e = jx.noise_tunnel(m, jnp.ones((1, 2)), target=0, key=jax.random.key(0),
    ...                     method=jx.integrated_gradients, steps=4, n_samples=8)
    >>> e.values.shape, bool(jnp.all(e.stderr >= 0))
    ((1, 2), True)
    """
    if not callable(method):
        raise TypeError(f"method: expected an attribution function, got {type(method).__name__}")
    model, x, t = prepare_input(model, x, target)
    key = V.check_key(key)
    inner = method_kwargs.get("steps", 1)  # evaluations of `method` per example and sample
    inner = inner + 2 if isinstance(inner, int) and not isinstance(inner, bool) and inner > 0 else 1
    n_samples = V.check_budget(n_samples, "n_samples", x.shape[0], per_unit=inner)
    noise_level = V.check_float(noise_level, "noise_level", minimum=0.0)
    V.check_choice(kind, "kind", NOISE_KINDS)
    V.check_choice(sampling, "sampling", SAMPLINGS)
    if n_samples % {"mc": 1, "antithetic": 2, "lattice": 2 * LATTICE_REPLICATES}[sampling]:
        V.fail("n_samples", f"a multiple of {2 if sampling == 'antithetic' else 2 * LATTICE_REPLICATES} with "
               f"sampling={sampling!r}", n_samples)
    if sampling == "lattice" and n_samples // LATTICE_REPLICATES >= MAX_LATTICE:
        V.fail("n_samples", f"fewer than {LATTICE_REPLICATES * MAX_LATTICE} with sampling='lattice'",
               n_samples)
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
                         n_samples=n_samples, kind=kind, sampling=sampling, batch_size=batch_size,
                         takes_key=takes_key, kwargs=tuple(sorted(method_kwargs.items())))


@functools.partial(jit, static_argnames=("method", "n_samples", "kind", "sampling", "batch_size",
                                             "takes_key", "kwargs"))
def _noise_tunnel(model, x, target, key, noise_level, *, method, n_samples, kind, batch_size,
                  takes_key, kwargs, sampling="mc"):
    n = x.shape[0]
    target = target.resolve(model, x)
    flat = x.reshape(n, -1)
    sigma = bcast(noise_level * (flat.max(1) - flat.min(1)), x.ndim)
    kw = dict(kwargs)
    evals = int(kw.get("steps", 1)) * n
    noise_key, method_key = jax.random.split(key)

    noise, per_unit = _noise_fn(noise_key, x, n_samples, sampling)
    units = n_samples // per_unit  # antithetic: a unit is a pair +eps, -eps
    groups = LATTICE_REPLICATES if sampling == "lattice" else units

    def draw(j):
        eps = noise(j) * sigma
        extra = {"key": jax.random.fold_in(method_key, j)} if takes_key else {}
        e = method(model, x + eps, target=target, batch_size=batch_size, **kw, **extra)
        return e.values, e.n_evals

    def one(u):
        vs, ne = jax.vmap(draw)(u * per_unit + jnp.arange(per_unit, dtype=jnp.int32))
        v = vs.mean(0)
        if sampling == "lattice":  # per-randomisation sums, for the standard error
            hot = jax.nn.one_hot(u // (units // groups), groups, dtype=v.dtype)
            spread = bcast(hot, v.ndim + 1) * v[None]
        else:
            spread = v * v
        return v, jnp.square(vs).sum(0), ne.sum(0), spread

    def chunk(start, size):
        return jax.vmap(one)(start + jnp.arange(size, dtype=jnp.int32))

    per_chunk = max(1, batching.chunk_size(batch_size, n_samples * evals) // (evals * per_unit))
    s1, s2, ne, sg = batching.chunked_sum(chunk, units, per_chunk, report=0)  # inner loops report
    mean, sq = s1 / units, s2 / n_samples
    var = jnp.maximum(sq - mean * mean, 0.0)
    if kind == "smoothgrad":
        if sampling == "lattice":
            gm = sg / (units // groups)
            gvar = jnp.sum(jnp.square(gm - mean[None]), 0) / (groups - 1)
        else:  # the variance of the unit means
            gvar = jnp.maximum(sg / units - mean * mean, 0.0) * units / max(units - 1, 1)
        stderr = jnp.sqrt(gvar / groups)
        return Explanation(mean, stderr=stderr, n_evals=ne,
                           stderr_df=jnp.full(mean.shape[:1], float(max(groups - 1, 1))))
    return Explanation(sq if kind == "squaregrad" else var, n_evals=ne)


def _noise_fn(key, x, n_samples, sampling):
    """`(noise(j), per_unit)`: sample `j`'s standard normal noise shaped like `x`, and the
    samples per independent unit (2: an antithetic pair)."""
    if sampling == "antithetic":
        return (lambda j: gaussian(jax.random.fold_in(key, j // 2), x.shape, x.dtype)
                * (1 - 2 * (j % 2)).astype(x.dtype)), 2
    if sampling == "lattice":
        m = n_samples // LATTICE_REPLICATES
        return (lambda j: lattice_gaussian(jax.random.fold_in(key, j // m), j % m, m, x.shape,
                                           x.dtype)), 1
    return lambda j: gaussian(jax.random.fold_in(key, j), x.shape, x.dtype), 1


_NOISE_ARGS = """
    Args:
      model: a `Model`, an NNX module or a callable `f(x_batch) -> outputs`.
      x: inputs `(N, ...)`.
      target: see `jaxplain.as_target`.
      key: a `jax.random.key`; noise sample `j` uses `fold_in(key, j)`.
      n_samples: noisy copies per example (model evaluations per example).
      noise_level: noise standard deviation relative to each input's range.
      sampling: `"mc"`, `"antithetic"` (pairs `+eps, -eps`) or `"lattice"`
        (randomised quasi-Monte Carlo), see `noise_tunnel`.
      batch_size: model inputs per chunk (`None`: the backend's default).

    Returns:
      `Explanation(values, n_evals)` with `values` shaped like `x`{extra}.
"""


@registry.method(
    "gradients",
    evals=lambda a: a["n_samples"],
    cheap={"n_samples": 4},
    demo={"label": "SmoothGrad", "quick": {"n_samples": 16}, "full": {"n_samples": 50}},
)
def smoothgrad(model: Any, x: jax.Array, *, target: Any, key: Any, n_samples: int = 16,
               noise_level: float = 0.15, sampling: str = "mc",
               batch_size: int | None = None) -> Explanation:
    """SmoothGrad: the mean gradient over `n_samples` noisy copies of `x`.

    `noise_tunnel(..., method=saliency, kind="smoothgrad")`; use
    `noise_tunnel(..., method=integrated_gradients, steps=...)` for SmoothGrad-IG.
{args}
    References:
      Smilkov et al. SmoothGrad: removing noise by adding noise (2017).

    >>> import jax, jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    >>> jx.smoothgrad(m, jnp.ones((1, 2)), target=0, key=jax.random.key(0)).values
    Array([[ 1., -2.]], dtype=float32)
    """
    return noise_tunnel(model, x, target=target, key=key, n_samples=n_samples,
                        noise_level=noise_level, kind="smoothgrad", sampling=sampling,
                        batch_size=batch_size)


@registry.method(
    "gradients",
    evals=lambda a: a["n_samples"],
    cheap={"n_samples": 4},
    demo={"label": "VarGrad", "quick": None, "full": {"n_samples": 50}},
)
def vargrad(model: Any, x: jax.Array, *, target: Any, key: Any, n_samples: int = 16,
            noise_level: float = 0.15, sampling: str = "mc",
            batch_size: int | None = None) -> Explanation:
    """VarGrad: the variance of the gradient over `n_samples` noisy copies of `x`.
{args}
    References:
      Adebayo et al. Local Explanation Methods for Deep Neural Networks Lack
      Sensitivity to Parameter Values (2018).

    >>> import jax, jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))  # constant gradient
    >>> jx.vargrad(m, jnp.ones((1, 2)), target=0, key=jax.random.key(0)).values
    Array([[0., 0.]], dtype=float32)
    """
    return noise_tunnel(model, x, target=target, key=key, n_samples=n_samples,
                        noise_level=noise_level, kind="vargrad", sampling=sampling,
                        batch_size=batch_size)


@registry.method("gradients", evals=lambda a: a["n_samples"], cheap={"n_samples": 4})
def squaregrad(model: Any, x: jax.Array, *, target: Any, key: Any, n_samples: int = 16,
               noise_level: float = 0.15, sampling: str = "mc",
               batch_size: int | None = None) -> Explanation:
    """SquareGrad: the mean squared gradient over `n_samples` noisy copies of `x`.
{args}
    References:
      Hooker et al. A Benchmark for Interpretability Methods in Deep Neural Networks (2019).

    >>> import jax, jax.numpy as jnp, jaxplain as jx
    >>> m = jx.testing.linear_model(jnp.array([[1.0], [-2.0]]))
    >>> jx.squaregrad(m, jnp.ones((1, 2)), target=0, key=jax.random.key(0)).values
    Array([[1., 4.]], dtype=float32)
    """
    return noise_tunnel(model, x, target=target, key=key, n_samples=n_samples,
                        noise_level=noise_level, kind="squaregrad", sampling=sampling, batch_size=batch_size)


for _f, _extra in ((smoothgrad, " and `stderr`, the standard error of the mean"),
                   (vargrad, ""), (squaregrad, "")):
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("{args}", _NOISE_ARGS.replace("{extra}", _extra))


# ---- expected gradients ---------------------------------------------------------------------


@registry.method(
    "gradients",
    evals=lambda a: a["n_samples"] + 1,
    cheap={"n_samples": 4},
    demo={"label": "expected gradients", "quick": None, "full": {"n_samples": 64}},
)
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
    model, x, t = prepare_input(model, x, target)
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
        _, g, _ = value_and_grad(model, target.take(ex), refs[r] + bcast(a, x.ndim) * delta)
        return g * delta

    attr = batching.per_example_sum(sample, n, n_samples, batch_size) / n_samples

    def ref_scalars(start, size):  # (size, n): f(reference) for each example's target
        out = model(jax.lax.dynamic_slice_in_dim(refs, start, size))
        if target.index is None:
            return jnp.broadcast_to(target.select(out)[:, None], (size, n))
        return out[:, target.index]

    f_refs = batching.chunked_map(ref_scalars, m, batch_size).T  # (n, m)
    gap = attr.reshape(n, -1).sum(1) - (target.select(out_x) - f_refs.mean(1))
    return Explanation(attr, gap=gap, n_evals=count(n, n_samples + 1))
