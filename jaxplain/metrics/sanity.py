"""Sanity checks: do explanations depend on the model's weights and on the explained class?

Model parameter randomisation re-runs an attribution method on copies of the
model whose layers are re-drawn at random, cascading from the output layer down.
A `Model` is a pytree, so every randomised copy is `model.replace(params)` and
reuses the compiled attribution program: the whole cascade compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from . import base as B
from .._core import registry
from .._core import validate as V
from .._core.models import Model, as_model
from .._core.targets import Target, as_target

SIMILARITIES = ("ssim", "spearman")
_STATS = {"batch_stats", "mean", "var", "running_mean", "running_var"}


class RandomisationResult(NamedTuple):
    """Similarity of attributions before and after randomising the model's layers.

    Attributes:
      layers: names of the randomised layers, top (output side) first; row `l`
        has layers `0..l` randomised (cascading) or only layer `l` (independent).
      spearman: Spearman rank correlation per stage and example, `(L, N)`.
      ssim: structural similarity per stage and example, `(L, N)`.

    A method passes the check when similarities fall towards 0 as more layers are
    randomised; values near 1 mean the explanation ignores the weights.
    """

    layers: tuple[str, ...]
    spearman: jax.Array
    ssim: jax.Array


# the layer names are static (a pytree's auxiliary data), so the result passes through
# jit and vmap like the other result types
jax.tree_util.register_pytree_node(
    RandomisationResult,
    lambda r: ((r.spearman, r.ssim), tuple(r.layers)),
    lambda layers, arrays: RandomisationResult(layers, *arrays),
)


@registry.method("metrics", cheap={"win_size": 3})
def ssim(a: Any, b: Any, *, data_range: float | None = None, win_size: int = 7) -> jax.Array:
    """Structural similarity of two batches of maps `(N, H, W)` (or `(N, H, W, C)`, channel mean).

    Uniform `win_size` windows, sample covariances, `K1 = 0.01`, `K2 = 0.03`, the
    mean over windows inside the image: the defaults of
    `skimage.metrics.structural_similarity`.

    Args:
      a, b: arrays of the same shape.
      data_range: the value range; default: per example, `max(a, b) - min(a, b)`.
      win_size: odd window size (reduced to fit images smaller than it).

    Returns:
      `(N,)` SSIM values in [-1, 1].

    References:
      Wang et al., "Image Quality Assessment: From Error Visibility to Structural
      Similarity", IEEE TIP 2004.
    """
    a = V.check_array(a, "a", min_ndim=3)
    b = V.check_array(b, "b", min_ndim=3)
    if a.shape != b.shape:
        V.fail("b", f"the shape of a {tuple(a.shape)}", f"shape {tuple(b.shape)}")
    if a.ndim > 4:
        V.fail("a", "maps (N, H, W) or (N, H, W, C)", f"shape {tuple(a.shape)}")
    win = _window(win_size, a.shape[1:3])
    if data_range is not None:
        data_range = V.check_float(data_range, "data_range", minimum=0.0, open_min=True)
    return _ssim(a, b, win=win, data_range=data_range)


def _window(win_size, hw):
    win_size = V.check_int(win_size, "win_size", minimum=3)
    if win_size % 2 == 0:
        V.fail("win_size", "an odd window size", win_size)
    win = min(win_size, *[s if s % 2 else s - 1 for s in hw])
    if win < 3:
        V.fail("a", "maps of at least 3x3 pixels for SSIM", f"spatial shape {tuple(hw)}")
    return win


@functools.partial(jit, static_argnames=("win", "data_range"))
def _ssim(a, b, *, win, data_range):
    if a.ndim == 4:  # channel mean
        return jnp.mean(
            jax.vmap(
                lambda u, v: _ssim(u, v, win=win, data_range=data_range), in_axes=3, out_axes=1
            )(a, b),
            axis=1,
        )
    if data_range is None:
        hi = jnp.maximum(a.max((1, 2)), b.max((1, 2)))
        lo = jnp.minimum(a.min((1, 2)), b.min((1, 2)))
        rng = jnp.where(hi > lo, hi - lo, 1.0)
    else:
        rng = jnp.full(a.shape[:1], data_range, a.dtype)
    k = jnp.full((win, win), 1.0 / (win * win), a.dtype)

    def one(u, v, r):
        f = lambda z: jax.scipy.signal.convolve2d(z, k, mode="valid")
        mu, mv = f(u), f(v)
        c = win * win / (win * win - 1.0)
        vu, vv, cuv = c * (f(u * u) - mu * mu), c * (f(v * v) - mv * mv), c * (f(u * v) - mu * mv)
        c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
        s = (2 * mu * mv + c1) * (2 * cuv + c2) / ((mu * mu + mv * mv + c1) * (vu + vv + c2))
        return s.mean()

    return jax.vmap(one)(a, b, rng)


def _maps(a: jax.Array, absolute: bool) -> jax.Array:
    """Attributions -> per-example maps `(N, H, W)`, min-max normalised to [0, 1]."""
    m = a.sum(-1) if a.ndim == 4 else a.reshape(a.shape[0], 1, -1) if a.ndim == 2 else a
    m = jnp.abs(m) if absolute else m
    lo = m.min((1, 2), keepdims=True)
    hi = m.max((1, 2), keepdims=True)
    return jnp.where(hi > lo, (m - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)


@functools.partial(jit, static_argnames=("absolute", "win"))
def _similarity(a, b, *, absolute, win):
    ma, mb = _maps(a, absolute), _maps(b, absolute)
    s = _ssim(ma, mb, win=win, data_range=1.0) if win else jnp.full(a.shape[:1], jnp.nan)
    return B.spearman(ma, mb), s


@functools.partial(jit, static_argnames=("explain",))
def _explain(model, x, target, *, explain):
    return B.run_explain(explain, model, x, target)


def _reference(model, x, t, explain, attributions, shape) -> jax.Array:
    """The attributions to compare against: given ones (checked against `shape`) or explain's."""
    ref = (
        _explain(model, x, t, explain=explain)
        if attributions is None
        else B.attribution_array(attributions)
    )
    if tuple(ref.shape) != shape:
        V.fail("attributions", f"the shape explain(model, x) returns, {shape}", tuple(ref.shape))
    return ref


@jit
def _randomise(params, key, flags):
    """Leaves with `flags[i]` re-drawn from `N(0, std(leaf)^2)`; the others kept."""
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for i, p in enumerate(leaves):
        if jnp.issubdtype(p.dtype, jnp.floating):
            r = jax.random.normal(jax.random.fold_in(key, i), p.shape, p.dtype) * jnp.std(p)
            p = jnp.where(flags[i], r, p)
        out.append(p)
    return treedef.unflatten(out)


def _key_name(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def layer_groups(model: Model, x: jax.Array) -> list[tuple[str, list[int]]]:
    """The model's layers as `(name, leaf indices)`, output side first.

    Leaves are grouped by their path without the last key (Linen's "params/"
    prefix and NNX's ".value" dropped); layers are ordered by where the forward
    pass first reads them. Non-float leaves, normalisation statistics and unused
    leaves are left out.
    """
    flat = jax.tree_util.tree_flatten_with_path(model.params)[0]
    jaxpr = jax.make_jaxpr(lambda p, z: model.replace(p)(z))(model.params, x[:1]).jaxpr
    pos = {id(v): i for i, v in enumerate(jaxpr.invars[: len(flat)])}
    first = [np.inf] * len(flat)
    for j, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            i = pos.get(id(v))
            if i is not None and first[i] == np.inf:
                first[i] = j
    groups: dict[str, list[int]] = {}
    for i, (path, leaf) in enumerate(flat):
        names = [_key_name(k) for k in path]
        if names and names[-1] in ("value", "raw_value"):
            names = names[:-1]
        if names and names[0] == "params" and len(names) > 1:
            names = names[1:]
        if (
            first[i] == np.inf
            or not jnp.issubdtype(leaf.dtype, jnp.floating)
            or _STATS & set(names)
        ):
            continue
        groups.setdefault("/".join(names[:-1]) or names[-1], []).append(i)
    order = sorted(groups.items(), key=lambda kv: -min(first[i] for i in kv[1]))
    return order


@registry.method("metrics")
def model_parameter_randomisation(
    model: Any,
    x: Any,
    attributions: Any = None,
    *,
    explain: Callable,
    target: Any,
    key: Any,
    layers: Any = None,
    cascade: bool = True,
    absolute: bool = True,
) -> RandomisationResult:
    """Model parameter randomisation test, cascading from the output layer down.

    For each stage the weights of one more layer are replaced by Gaussian noise
    with the same standard deviation, and `explain` is re-run; the attributions
    are compared with those of the original model (Spearman rank correlation and
    SSIM of min-max normalised maps).

    Args:
      model: a `Model` or NNX module (a plain function's weights are the arrays it reads, see
        `from_callable`).
      x: inputs `(N, H, W, C)`, `(N, H, W)` or `(N, D)`.
      attributions: the attributions of the original model by `explain`, or None.
      explain: `explain(model, x) -> array or Explanation`, optionally taking `target=`.
      target: the target (see `as_target`); a "predicted" target stays the class
        the original model predicts.
      key: a `jax.random.key` for the new weights.
      layers: names of the layers to randomise, in order (default: every layer,
        output side first; see `layer_groups`).
      cascade: randomise layers cumulatively (True) or one at a time.
      absolute: compare absolute attributions (as Adebayo et al. do).

    Returns:
      A `RandomisationResult` with `(L, N)` similarities.

    References:
      Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    model = as_model(model)
    x = V.check_array(x)
    t = as_target(target, model, x)
    shape = B.explain_shape(explain, model, x, t)
    key = V.check_key(key)
    groups = layer_groups(model, x)
    if not groups:
        V.fail("model", "a model with weights (a Model or an NNX module)", repr(model), TypeError)
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        known = dict(groups)
        unknown = [name for name in layers if name not in known]
        if unknown or not layers:
            V.fail("layers", f"names among {list(known)}", list(layers))
        groups = [(name, known[name]) for name in layers]
    t = t.resolve(model, x)
    ref = _reference(model, x, t, explain, attributions, shape)
    win = _sim_window(shape)
    n_leaves = len(jax.tree.leaves(model.params))
    flags = np.zeros(n_leaves, bool)
    sp, ss = [], []
    for _, idx in groups:
        if not cascade:
            flags[:] = False
        flags[idx] = True
        # a fresh host buffer per stage: device arrays may alias NumPy memory on CPU
        params = _randomise(model.params, key, jnp.array(flags.copy()))
        a = _explain(model.replace(params), x, t, explain=explain)
        s1, s2 = _similarity(ref, a, absolute=bool(absolute), win=win)
        sp.append(s1)
        ss.append(s2)
    return RandomisationResult(tuple(name for name, _ in groups), jnp.stack(sp), jnp.stack(ss))


def _sim_window(shape: tuple[int, ...]) -> int:
    """SSIM window for attribution maps of `shape` (0 when the maps are too small)."""
    hw = shape[1:3] if len(shape) >= 3 else (1, shape[1])
    win = min(7, *[s if s % 2 else s - 1 for s in hw])
    return win if win >= 3 else 0


@registry.method("metrics")
def random_logit(
    model: Any,
    x: Any,
    attributions: Any = None,
    *,
    explain: Callable,
    target: Any,
    key: Any,
    similarity: str = "ssim",
    absolute: bool = True,
) -> jax.Array:
    """Random logit test: attributions for the target versus for a random other class.

    Args:
      model: a `Model`, NNX module or callable with outputs `(N, classes)`.
      x: inputs.
      attributions: the attributions for `target` by `explain`, or None.
      explain: `explain(model, x, target=...) -> array or Explanation` (it must
        take `target`).
      target: class indices or "predicted".
      key: a `jax.random.key`; the other class is uniform among the rest.
      similarity: "ssim" or "spearman" (of min-max normalised maps).
      absolute: compare absolute attributions.

    Returns:
      `(N,)` similarities; lower means the explanation is class-sensitive.

    References:
      Sixt, Granz and Landgraf, "When Explanations Lie: Why Many Modified BP
      Attributions Fail", ICML 2020.
    """
    model = as_model(model)
    x = V.check_array(x)
    V.check_choice(similarity, "similarity", SIMILARITIES)
    if callable(explain) and not B.accepts_target(explain):
        V.fail(
            "explain",
            "a callable taking target= (the test explains another class)",
            "a callable without a target parameter",
            TypeError,
        )
    t = as_target(target, model, x)
    if callable(t.fn) or (t.index is None and not t.needs_outputs):
        V.fail("target", "class indices or 'predicted' (the test swaps the class)", repr(target))
    shape = B.explain_shape(explain, model, x, t)
    key = V.check_key(key)
    k = jax.eval_shape(model, x).shape[-1]
    if k < 2:
        V.fail("model", "outputs with at least 2 classes", k)
    t = t.resolve(model, x)
    ref = _reference(model, x, t, explain, attributions, shape)
    shift = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 1, k))(
        jnp.arange(x.shape[0])
    )
    other = Target((t.index + shift) % k, None)
    a = _explain(model, x, other, explain=explain)
    win = _sim_window(shape)
    if similarity == "ssim" and not win:
        V.fail("similarity", "'spearman' for maps smaller than 3x3 pixels", repr(similarity))
    s1, s2 = _similarity(ref, a, absolute=bool(absolute), win=win)
    return s2 if similarity == "ssim" else s1
