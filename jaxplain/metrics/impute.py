"""Linear imputation of removed pixels (ROAD's fill), solved by multigrid-preconditioned CG.

A removed pixel `i` becomes the weighted mean of its in-image neighbours
(direct neighbours weigh 1/6, diagonal ones 1/12), solved jointly for all
removed pixels since a removed neighbour is itself an unknown:

    (sum_{j in N(i)} w_ij) u_i - sum_{j in N(i), removed} w_ij u_j
        = sum_{j in N(i), kept} w_ij x_j.

Per image and channel this is a weighted graph Laplacian with the kept pixels as
boundary: symmetric, positive definite as soon as one pixel is kept. It is
solved matrix-free on device, for a whole batch of images at once, by
conjugate gradients preconditioned with one multigrid V-cycle:

- coarse levels aggregate 2x2 cells (a coarse cell is an unknown when any of
  its pixels is); their 9-point operators are the Galerkin products
  `P^T A P` of the level below, with `P` the piecewise-constant prolongation,
  so the kept pixels' boundary is honoured on every level;
- one damped-Jacobi sweep before and one after each coarse correction (the
  cycle is symmetric and so a valid CG preconditioner); the coarse correction
  is scaled by `ALPHA`, the usual remedy for the too-stiff coarse operators
  that piecewise-constant aggregation gives;
- once a level has at most `DENSE_MAX` cells, it is solved exactly with an
  inverse computed once per image.

Measured on 160 systems of 32x32x3 (ROAD's benchmark: 16 images x 10 removal
fractions, 2 CPU cores): Jacobi-preconditioned CG needed up to 81 iterations
and 125 ms; this needs at most 11 iterations and 34 ms. The iteration count
hardly grows with the image (64x64 and 128x128 at 99% removed: 13 and 15
iterations, against 202 and 271 with Jacobi).

One XLA detail matters for speed: each level's prolongation is written as a
small matrix product, not a `repeat`. XLA fuses elementwise producers into
their consumers, and with a `repeat` it recomputed every coarse level's
smoothing inside each finer level's stencil (5 ms per V-cycle instead of 2).
A dot is not fused, so each level is computed once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._core import batching
from .._core.types import HIGHEST
import numpy as np

STENCIL = (  # (row offset, column offset, weight)
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)
OMEGA = 0.8
"""Damping of the Jacobi sweeps."""
ALPHA = 1.6
"""Scale of the coarse-grid correction (in (0, 2) the cycle stays positive definite)."""
DENSE_MAX = 16
"""A level with at most this many cells is solved exactly (measured: 16 beat 4 and 64)."""

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_WEIGHT = {(dy, dx): wt for dy, dx, wt in STENCIL}
# _AGG[S + 1, s + 1, a] = 1 when a fine entry at offset s from a child of parity a
# (along one axis) lands at coarse offset S: floor((a + s) / 2) == S.
_AGG = np.zeros((3, 3, 2), np.float32)
for _s in (-1, 0, 1):
    for _a in (0, 1):
        _AGG[(_a + _s) // 2 + 1, _s + 1, _a] = 1.0


def shift(a: jax.Array, dy: int, dx: int) -> jax.Array:
    """`out[..., i, j] = a[..., i + dy, j + dx]`, zero where that falls outside the image."""
    h, w = a.shape[-2:]
    p = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def stencil(a: jax.Array) -> jax.Array:
    """Weighted sum of the 8 neighbours of every pixel (zero outside the image), last 2 axes."""
    return sum(wt * shift(a, dy, dx) for dy, dx, wt in STENCIL)


def neighbour_weight(h: int, w: int) -> np.ndarray:
    """Total weight of the in-image neighbours of each pixel, `(h, w)` (1 in the interior).

    NumPy, so it is a constant of the compiled program.
    """
    p = np.pad(np.ones((h, w)), 1)
    return sum(wt * p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx, wt in STENCIL)


def impute(
    x: jax.Array,
    removed: jax.Array,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
) -> jax.Array:
    """Linear imputation of the removed pixels of a batch of images (no noise; traceable).

    Args:
      x: images `(N, H, W, C)`.
      removed: `(N, H, W)` booleans, True where the pixel is replaced.
      tol: relative residual at which CG stops, per image and channel
        (`||r|| <= tol * ||b||`).
      max_iter: iteration cap (default `H * W`, the exact-arithmetic bound of
        CG; the preconditioned solve needs about 10-20).

    Returns:
      `x` with every removed pixel replaced by the solution of the neighbour-mean
      system (kept pixels unchanged), in `x`'s dtype (half-precision images are
      solved in float32). An image with every pixel removed has no
      boundary to impute from and becomes 0.
    """
    n, h, w, _ = x.shape
    dtype = batching.accumulator(x.dtype)  # bfloat16 / float16 images solve in float32
    wsum = jnp.asarray(neighbour_weight(h, w), dtype)[None, None]  # (1, 1, H, W)
    m = removed.astype(dtype)
    mc = m[:, None]  # (N, 1, H, W), broadcast over channels
    xc = jnp.moveaxis(x, -1, 1).astype(dtype)  # (N, C, H, W): the stencil acts on the last two axes
    rhs = mc * stencil((1 - mc) * xc)

    def matvec(v):  # v is zero on kept pixels, and so is the result
        return mc * (wsum * v - stencil(v))

    hierarchy = _hierarchy(m)
    cap = h * w if max_iter is None else max_iter
    u = _pcg(matvec, rhs, lambda r: _vcycle(hierarchy, matvec, r), tol, cap)
    return jnp.moveaxis(jnp.where(mc > 0, u, xc), 1, -1).astype(x.dtype)


# ---- the multigrid hierarchy ------------------------------------------------------------


def _pad_even(a: jax.Array) -> jax.Array:
    """Pads the last two axes with zeros (cells that are not unknowns) to even sizes."""
    h, w = a.shape[-2:]
    return jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)])


def _fine_coefficients(m: jax.Array) -> jax.Array:
    """The fine operator as 9 coefficient maps `(N, 9, H, W)`: row i's entries at i + offset.

    Rows and columns of kept pixels are zero (the operator acts on the unknowns only).
    """
    h, w = m.shape[-2:]
    wsum = jnp.asarray(neighbour_weight(h, w), m.dtype)
    maps = [wsum[None] * m if o == (0, 0) else -_WEIGHT[o] * m * shift(m, *o) for o in _OFFSETS]
    return jnp.stack(maps, axis=1)


def _coarsen(coef: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Galerkin product `P^T A P` for 2x2 aggregation, and the coarse unknowns' mask."""
    coef, m = _pad_even(coef), _pad_even(m)
    n, _, h, w = coef.shape
    c = coef.reshape(n, 3, 3, h // 2, 2, w // 2, 2)
    agg = jnp.asarray(_AGG, coef.dtype)
    coarse = jnp.einsum("Ysa,Xtb,nstiajb->nYXij", agg, agg, c, precision=HIGHEST)
    coarse = coarse.reshape(n, 9, h // 2, w // 2)
    return coarse, m.reshape(n, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def _dense_inverse(coef: jax.Array, m: jax.Array) -> jax.Array:
    """Inverse of the operator on the unknowns, `(N, h*w, h*w)` (zero elsewhere).

    Cells that are not unknowns get identity rows before inverting, so the
    matrix is invertible, and zero rows and columns in the result.
    """
    n, _, h, w = coef.shape
    place = jnp.asarray(_placement(h, w), coef.dtype)
    a = jnp.einsum("nki,kij->nij", coef.reshape(n, 9, h * w), place, precision=HIGHEST)
    unknown = m.reshape(n, -1) > 0
    both = unknown[:, :, None] & unknown[:, None, :]
    eye = jnp.eye(h * w, dtype=coef.dtype)
    a = jnp.where(both, a, 0.0) + jnp.where(unknown[:, None, :], 0.0, eye)
    return jnp.where(both, jnp.linalg.inv(a), 0.0)


def _placement(h: int, w: int) -> np.ndarray:
    """`(9, h*w, h*w)` 0/1: offset k of cell i is matrix column i + offset (inside the grid)."""
    out = np.zeros((9, h * w, h * w), np.float32)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for k, (dy, dx) in enumerate(_OFFSETS):
        ok = (ii + dy >= 0) & (ii + dy < h) & (jj + dx >= 0) & (jj + dx < w)
        out[k, (ii * w + jj)[ok], ((ii + dy) * w + jj + dx)[ok]] = 1.0
    return out


def _hierarchy(m: jax.Array):
    """`(levels, inverse)`: the levels a V-cycle smooths, and the coarsest one's inverse.

    Each level is `(coef, mask, diag)`: coefficient maps `(N, 9, h, w)` (None for
    the fine level, which applies the constant stencil), the unknowns `(N, 1, h,
    w)` and the Jacobi diagonal. When the fine level is small enough to invert,
    there are no levels. Images with no kept pixel get empty coarse masks, so
    their singular operators are never inverted; their right-hand side is zero,
    so nothing else changes.
    """
    h, w = m.shape[-2:]
    boundary = jnp.any(m == 0, axis=(-2, -1))[:, None, None]
    mask = jnp.where(boundary, m, 0.0)
    coef = _fine_coefficients(mask)
    coarse = []
    while mask[0].size > DENSE_MAX:
        coef, mask = _coarsen(coef, mask)
        coarse.append((coef, mask))
    inverse = _dense_inverse(coef, mask)
    if not coarse:
        return [], inverse
    wsum = neighbour_weight(h, w)
    fine = (None, m[:, None], jnp.asarray(np.where(wsum > 0, wsum, 1.0), m.dtype)[None, None])
    smoothed = [(c, k[:, None], jnp.where(k > 0, c[:, 4], 1.0)[:, None]) for c, k in coarse[:-1]]
    return [fine] + smoothed, inverse


def _apply(coef: jax.Array, v: jax.Array) -> jax.Array:
    """`A v` for a level given by coefficient maps `(N, 9, h, w)`; `v` is `(N, C, h, w)`."""
    return sum(coef[:, k, None] * shift(v, *o) for k, o in enumerate(_OFFSETS))


def _restrict(r: jax.Array) -> jax.Array:
    """`P^T r`: the sum over each 2x2 cell."""
    r = _pad_even(r)
    h, w = r.shape[-2:]
    return r.reshape(r.shape[:-2] + (h // 2, 2, w // 2, 2)).sum(axis=(-3, -1))


def _prolong(e: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """`P e`: each coarse value copied to its 2x2 cell, cropped to `shape`.

    Columns go through a 0/1 matrix product so XLA materialises every level
    (see the module docstring); rows by `repeat`.
    """
    cols = np.zeros((shape[1], e.shape[-1]), np.float32)
    cols[np.arange(shape[1]), np.arange(shape[1]) // 2] = 1
    e = jnp.einsum("...hw,jw->...hj", e, jnp.asarray(cols, e.dtype), precision=HIGHEST)
    return jnp.repeat(e, 2, axis=-2)[..., : shape[0], :]


def _dense_solve(inverse: jax.Array, r: jax.Array) -> jax.Array:
    """`inverse @ r` for every image and channel of `r` `(N, C, h, w)`."""
    n, c = r.shape[:2]
    out = jnp.einsum("nij,ncj->nci", inverse, r.reshape(n, c, -1), precision=HIGHEST)
    return out.reshape(r.shape)


def _vcycle(hierarchy, matvec, r: jax.Array) -> jax.Array:
    """One symmetric V-cycle for `A z = r`; `r` is zero off the unknowns, and so is `z`."""
    levels, inverse = hierarchy
    if not levels:  # the fine level is the coarsest: solve exactly
        return _dense_solve(inverse, r)
    return _cycle(levels, inverse, 0, matvec, r)


def _cycle(levels, inverse, level, matvec, r):
    """Jacobi sweep, coarse correction (recursively), Jacobi sweep."""
    _, mask, diag = levels[level]
    x = OMEGA * r / diag
    rc = _restrict(r - matvec(x))
    if level + 1 == len(levels):
        ec = _dense_solve(inverse, rc)
    else:
        coef = levels[level + 1][0]
        ec = _cycle(levels, inverse, level + 1, lambda v: _apply(coef, v), rc)
    x = x + ALPHA * mask * _prolong(ec, r.shape[-2:])
    return x + OMEGA * (r - matvec(x)) / diag


# ---- conjugate gradients over a batch ---------------------------------------------------


def _pcg(matvec, b: jax.Array, precondition, tol: float, max_iter: int) -> jax.Array:
    """Preconditioned CG for every `(image, channel)` system of `b` `(N, C, H, W)` at once.

    One `while_loop` runs until every system meets `||r|| <= tol * ||b||` (or
    `max_iter`); a system that has converged is frozen, so each result depends
    on its own system only, not on what else is in the batch (up to the
    rounding of XLA's reductions, which may vary with the batch's shape).
    """

    def dot(a, c):
        return jnp.sum(a * c, axis=(-2, -1), keepdims=True)

    bb = dot(b, b)
    threshold = (tol * tol) * bb

    def active(state):
        return state[5] > threshold

    def cond(state):
        return jnp.any(active(state)) & (state[4] < max_iter)

    def body(state):
        x, r, p, rz, k, rr = state
        act = active(state)
        ap = matvec(p)
        step = jnp.where(act, rz / jnp.where(act, dot(p, ap), 1.0), 0.0)
        x = x + step * p
        r = r - step * ap
        z = precondition(r)
        rz_new = dot(r, z)
        beta = jnp.where(act, rz_new / jnp.where(act, rz, 1.0), 0.0)
        p = jnp.where(act, z + beta * p, p)
        return x, r, p, jnp.where(act, rz_new, rz), k + 1, dot(r, r)

    z = precondition(b)
    state = (jnp.zeros_like(b), b, z, dot(b, z), jnp.int32(0), bb)
    return jax.lax.while_loop(cond, body, state)[0]
