"""RISE: the target averaged over random smooth masks, weighted by each mask, streamed
through the perturbation engine (`engine.stream`); the masks are drawn independently,
in antithetic pairs or from a randomised lattice (`sampling=`).
"""

from __future__ import annotations

import functools

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import registry
from .._core import features
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from .._core.models import as_model
from .._core.noise import MAX_LATTICE, lattice_uniform
from .._core.targets import as_target
from .engine import (
    add_local,
    n_evals,
    stream,
    stream_evals,
    uniform_from_bits,
    unit_bits,
    unit_bytes,
)


@registry.method(
    "perturbation",
    evals=lambda a: stream_evals(a, 0, a["n_masks"], 4 * int(np.prod(np.shape(a["x"])[1:3]))),
    cheap={"n_masks": 4, "cells": 2},
    demo={"label": "RISE", "quick": None, "full": {"n_masks": 2000, "cells": 4}, "center": True},
)
def rise(
    model: Callable,
    x: ArrayLike,
    *,
    target: Any,
    key: Any,
    n_masks: int = 1000,
    p: float = 0.5,
    cells: int = 7,
    baseline: Any = 0.0,
    sampling: str = "mc",
    batch_size: int | None = None,
) -> Explanation:
    """RISE: the target averaged over random smooth masks, weighted by each mask.

    Each mask is a `cells x cells` grid of Bernoulli(`p`) cells, upsampled
    bilinearly to `(cells + 1)` cell sizes and cropped at a random shift, so the
    masks are smooth and not aligned to a grid. Masked inputs are
    `baseline + M * (x - baseline)`; the saliency is `sum_i f_i M_i / (n_masks p)`.
    Masks are shared by all examples and drawn from `fold_in(key, i)`.

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x: images `(N, H, W, C)`.
      target: see `jaxplain.as_target`.
      key: a `jax.random.key` (required).
      n_masks: number of masks (model evaluations per example).
      p: probability that a cell is kept.
      cells: grid size of the low-resolution masks.
      baseline: a number, an image, one image per example, or `"blur"`.
      sampling: how the cells are drawn (each mask is distributed as RISE's, so
        the estimate stays unbiased): `"mc"` independently; `"antithetic"` in
        pairs, the second mask keeping a cell where the first's uniform `u` has
        `1 - u < p` (the complement when `p = 0.5`; `n_masks` even), which cancels
        the term the target shares with every mask; `"lattice"` from a randomised
        rank-1 lattice (`jaxplain._core.noise.lattice_uniform`), so every cell is
        kept in nearly a fraction `p` of the masks.
      batch_size: model inputs per chunk.

    Returns:
      `Explanation(values (N, H, W), n_evals)`.

    References:
      Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
      Black-box Models", BMVC 2018.
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=4)
    t = as_target(target, model, x)
    key = V.check_key(key)
    n_masks = V.check_budget(n_masks, "n_masks", x.shape[0], fixed=1)
    p = V.check_float(p, "p", minimum=0.0, maximum=1.0, open_min=True)
    cells = V.check_int(cells, "cells", maximum=min(x.shape[1], x.shape[2]))
    V.check_choice(sampling, "sampling", RISE_SAMPLINGS)
    if sampling == "antithetic" and n_masks % 2:
        V.fail("n_masks", "an even number with sampling='antithetic' (pairs of masks)", n_masks)
    if sampling == "lattice" and n_masks >= MAX_LATTICE:
        V.fail("n_masks", f"fewer than {MAX_LATTICE} with sampling='lattice'", n_masks)
    mode, b = features.baseline_spec(baseline, x)
    if mode == "mean":
        V.fail(
            "baseline", "a number, an array or 'blur' (RISE has no segments for 'mean')", "'mean'"
        )
    batch_size = V.check_batch_size(batch_size)
    return _rise(
        model,
        x,
        t,
        b,
        key,
        p,
        mode=mode,
        n_masks=n_masks,
        cells=cells,
        sampling=sampling,
        batch_size=batch_size,
    )


RISE_SAMPLINGS = ("mc", "antithetic", "lattice")


def rise_masks(
    key: jax.Array, index: jax.Array, height: int, width: int, p: float, cells: int,
    sampling: str = "mc", n_masks: int = 0,
) -> jax.Array:
    """The RISE masks `(b, H, W)` with indices `index (b,)` (float in [0, 1]); `sampling`
    as in `rise` (`"lattice"` needs the call's `n_masks`, its lattice size)."""
    ch, cw = -(-height // cells), -(-width // cells)
    pair = index // 2 if sampling == "antithetic" else index
    bits = unit_bits(key, pair, cells * cells + 2)
    if sampling == "lattice":
        u = jax.vmap(lambda j: lattice_uniform(jax.random.fold_in(key, 0x7FFFFFFF), j, n_masks,
                                               (cells * cells,)))(index)
    else:
        u = uniform_from_bits(bits[:, 2:])
    if sampling == "antithetic":
        u = jnp.where((index % 2 == 1)[:, None], 1.0 - u, u)

    def one(bits, u):
        grid = (u < p).astype(jnp.float32).reshape(cells, cells)
        up = jax.image.resize(grid, ((cells + 1) * ch, (cells + 1) * cw), "linear")
        dx, dy = (bits[0] % ch).astype(jnp.int32), (bits[1] % cw).astype(jnp.int32)
        return jax.lax.dynamic_slice(up, (dx, dy), (height, width))

    return jax.vmap(one)(bits, u)


@functools.partial(jit, static_argnames=("mode", "n_masks", "cells", "sampling", "batch_size"))
def _rise(model, x, target, b, key, p, *, mode, n_masks, cells, sampling, batch_size):
    n, h, w = x.shape[:3]
    b = features.make_baseline(mode, b, x, None, 0)
    target = target.resolve(model, x)

    def units_fn(ex, u):
        return rise_masks(key, u, h, w, p, cells, sampling, n_masks)[:, None], None

    def inputs_fn(ex, masks):
        m = masks.reshape(masks.shape + (1,) * (x.ndim - 3)).astype(x.dtype)
        return b[ex] + m * (x[ex] - b[ex])

    def reduce_fn(acc, c):
        return add_local(
            acc, c.ex0, jnp.einsum("mk,m,mhw->khw", c.onehot, c.values[:, 0], c.aux[:, 0])
        )

    acc = stream(
        model,
        target,
        n,
        n_masks,
        units_fn,
        inputs_fn,
        reduce_fn,
        jnp.zeros((n, h, w), jnp.float32),
        batch_size,
    )
    evals = n_evals(n, 0, 1, n_masks, 1, batch_size, unit_bytes(units_fn))
    return Explanation(acc / (n_masks * p), n_evals=evals)
