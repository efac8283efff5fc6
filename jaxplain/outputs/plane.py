"""Decision planes: the model's outputs on a 2-D grid through `x`.

`x + a * u + b * v` for a grid of `(a, b)`: the points are built on device from
their flat index and evaluated in chunks of `batch_size` (`batching.chunked_map`),
one jitted program for every example and grid point.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import batching, registry
from .._core import validate as V
from .._core.models import as_model
from .._core.types import Array, ArrayLike
from ._common import n_classes


class Plane(NamedTuple):
    """What `decision_plane` returns: outputs on a grid `x + alpha[i] * u + beta[j] * v`.

    Attributes:
      outputs: `(N, A, B, classes)` model outputs at the grid points.
      classes: `(N, A, B)` the predicted class (arg-max) at each point.
      alpha: `(A,)` grid coordinates along the first direction `u`.
      beta: `(B,)` grid coordinates along the second direction `v`.
      directions: `(N, 2, ...)` the directions `u, v` used (after orthogonalisation).
      origin: `(N, ...)` the inputs `x` (the point `alpha = beta = 0`).
    """

    outputs: Array
    classes: Array
    alpha: Array
    beta: Array
    directions: Array
    origin: Array

    def locate(self, points: ArrayLike) -> Array:
        """Plane coordinates `(N, 2)` of points `(N, ...)` (e.g. counterfactuals): the
        `(a, b)` whose `x + a u + b v` is closest to each point (least squares)."""
        n = self.origin.shape[0]
        p = jnp.asarray(points).reshape(n, -1) - self.origin.reshape(n, -1)
        m = self.directions.reshape(n, 2, -1)
        gram = jnp.einsum("nik,njk->nij", m, m, precision=jax.lax.Precision.HIGHEST)
        rhs = jnp.einsum("nik,nk->ni", m, p, precision=jax.lax.Precision.HIGHEST)
        return jnp.linalg.solve(gram, rhs[..., None])[..., 0]


def _n_points(a: dict) -> int:
    r = a["resolution"]
    return int(r) * int(r) if isinstance(r, numbers.Integral) else int(r[0]) * int(r[1])


@registry.method("outputs", evals=_n_points, cheap={"resolution": 4})
def decision_plane(
    model: Callable,
    x: ArrayLike,
    *,
    directions: ArrayLike,
    limits: Any = (-1.0, 2.0),
    resolution: int | tuple[int, int] = 64,
    orthogonalize: bool = True,
    batch_size: int | None = None,
) -> Plane:
    """The model's outputs on the plane through `x` spanned by two directions.

    Point `(i, j)` of the grid is `x + alpha[i] * u + beta[j] * v`. With `u` the
    step to a counterfactual (`cf.x - x`) the counterfactual sits at `alpha = 1`;
    `v` can be an attribution, the step to another image, or a random direction.
    `orthogonalize=True` makes `v` orthogonal to `u` with the same length, so
    distances in the picture are Euclidean distances in input space (in units of
    `||u||`); the plane itself does not change.

    Args:
      model: a `Model`, NNX module or callable returning `(N, classes)` outputs.
      x: inputs `(N, ...)`.
      directions: `(2, ...)` shared by all examples, or `(N, 2, ...)`, each
        direction shaped like one example.
      limits: the grid range `(lo, hi)` of both coordinates, or `((lo_a, hi_a),
        (lo_b, hi_b))`.
      resolution: grid points per axis, an int or `(A, B)` (`A * B` evaluations per
        example: 256 gives 65 536).
      orthogonalize: Gram-Schmidt `v` against `u`, keeping the length of `u`.
      batch_size: model inputs per chunk.

    Returns:
      A `Plane(outputs, classes, alpha, beta, directions, origin)`; `locate(points)`
      gives the plane coordinates of other points.

    Raises:
      ValueError, TypeError: invalid arguments (before anything compiles).

    >>> import jax.numpy as jnp
    >>> from jaxplain.testing import linear_model
    >>> w = jnp.array([[1.0, -1.0], [0.0, 0.0]])  # class 0 where x0 > 0
    >>> p = decision_plane(linear_model(w), jnp.zeros((1, 2)), directions=jnp.eye(2),
    ...                    limits=(-1.0, 1.0), resolution=3)
    >>> p.classes[0].tolist()  # rows: alpha = -1, 0, 1 along x0
    [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    """
    model = as_model(model)
    x = V.check_array(x, min_ndim=2)
    dirs = _check_directions(directions, x)
    (la, lb) = _check_limits(limits)
    ra, rb = _check_resolution(resolution)
    if not isinstance(orthogonalize, bool):
        V.fail("orthogonalize", "a bool", repr(orthogonalize), TypeError)
    V.check_n_evals(x.shape[0], ra * rb, "resolution")
    n_classes(model, x)
    batch_size = V.check_batch_size(batch_size)
    limits_arr = V.to_device(np.array([la, lb], np.float32))
    return _plane(model, x, dirs, limits_arr, ra=ra, rb=rb, orthogonalize=orthogonalize,
                  batch_size=batch_size)


def _check_directions(directions: Any, x: jax.Array) -> jax.Array:
    one = tuple(x.shape[1:])
    if isinstance(directions, (str, bytes)) or directions is None:
        V.fail("directions", f"an array (2, *{one}) or (N, 2, *{one})", repr(directions), TypeError)
    arr = V.check_array(directions, "directions", min_ndim=1)
    shape = tuple(arr.shape)
    if shape not in ((2,) + one, (x.shape[0], 2) + one):
        V.fail("directions", f"shape {(2,) + one} or {(x.shape[0], 2) + one}", f"shape {shape}")
    if isinstance(directions, jax.Array):  # checked with the call's other device checks
        if V.is_concrete(directions):
            V.check_on_device(arr, "directions", "degenerate pairs",
                              _degenerate_pairs(int(np.prod(one))), 1, _report_degenerate)
    else:  # a host array, where it is
        m = np.asarray(directions, np.float64).reshape(-1, 2, int(np.prod(one)))
        _report_degenerate([int(_degenerate_pairs(m.shape[-1], np)(m)[0])])
    return arr


@functools.lru_cache(maxsize=None)
def _degenerate_pairs(size: int, xp: Any = jnp) -> Callable[[Any], Any]:
    """Counts the direction pairs (each `2 x size`) that are zero or parallel."""

    def count(d):
        m = d.reshape(-1, 2, size)
        uu = (m[:, 0] * m[:, 0]).sum(-1)
        coef = (m[:, 0] * m[:, 1]).sum(-1) / xp.where(uu > 0, uu, 1.0)
        perp = xp.sqrt(((m[:, 1] - coef[:, None] * m[:, 0]) ** 2).sum(-1))
        bad = (uu == 0) | (perp <= 1e-6 * xp.sqrt((m[:, 1] ** 2).sum(-1)))
        return bad.sum()[None]

    return count


def _report_degenerate(numbers: Any) -> None:
    if int(numbers[0]):
        V.fail("directions", "two non-zero, linearly independent directions",
               "a zero or parallel pair")


def _check_limits(limits: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    if isinstance(limits, (tuple, list)) and len(limits) == 2 and all(
            isinstance(v, (tuple, list)) for v in limits):
        pairs = limits
    elif isinstance(limits, (tuple, list)) and len(limits) == 2:
        pairs = (limits, limits)
    else:
        V.fail("limits", "(lo, hi) or ((lo_a, hi_a), (lo_b, hi_b))", repr(limits), TypeError)
    out = []
    for p in pairs:
        if len(p) != 2:
            V.fail("limits", "pairs (lo, hi)", repr(limits), TypeError)
        lo, hi = V.check_float(p[0], "limits"), V.check_float(p[1], "limits")
        if not lo < hi:
            V.fail("limits", "lo < hi", f"({lo}, {hi})")
        out.append((lo, hi))
    return out[0], out[1]


def _check_resolution(resolution: Any) -> tuple[int, int]:
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2:
            V.fail("resolution", "an int or a pair (A, B)", repr(resolution), TypeError)
        return (V.check_int(resolution[0], "resolution", minimum=2),
                V.check_int(resolution[1], "resolution", minimum=2))
    r = V.check_int(resolution, "resolution", minimum=2)
    return r, r


def orthogonal(u: jax.Array, v: jax.Array) -> jax.Array:
    """`v` minus its projection on `u`, rescaled to the length of `u` (per row)."""
    n = u.shape[0]
    uf, vf = u.reshape(n, -1), v.reshape(n, -1)
    uu = jnp.sum(uf * uf, axis=1, keepdims=True)
    w = vf - (jnp.sum(uf * vf, axis=1, keepdims=True) / uu) * uf
    w = w * jnp.sqrt(uu / jnp.sum(w * w, axis=1, keepdims=True))
    return w.reshape(v.shape)


@functools.partial(jit, static_argnames=("ra", "rb", "orthogonalize", "batch_size"))
def _plane(model, x, dirs, limits, *, ra, rb, orthogonalize, batch_size):
    n = x.shape[0]
    dirs = jnp.broadcast_to(dirs, (n, 2) + x.shape[1:]).astype(x.dtype)
    if orthogonalize:
        dirs = jnp.stack([dirs[:, 0], orthogonal(dirs[:, 0], dirs[:, 1])], axis=1)
    alpha = jnp.linspace(limits[0, 0], limits[0, 1], ra, dtype=x.dtype)
    beta = jnp.linspace(limits[1, 0], limits[1, 1], rb, dtype=x.dtype)
    per = ra * rb

    def chunk(start, size):
        ex, r = batching.flat_index(start, size, per)
        shape = (size,) + (1,) * (x.ndim - 1)
        a, b = alpha[r // rb].reshape(shape), beta[r % rb].reshape(shape)
        return model(x[ex] + a * dirs[ex, 0] + b * dirs[ex, 1])

    out = batching.chunked_map(chunk, n * per, batch_size)
    out = out.reshape((n, ra, rb) + out.shape[1:])
    return Plane(out, jnp.argmax(out, axis=-1).astype(jnp.int32), alpha, beta, dirs, x)
