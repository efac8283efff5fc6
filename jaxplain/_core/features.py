"""Feature sets (which pixels move together) and applying coalitions on device.

A feature set is an integer label map `segments` of shape `(H, W)` (shared by all
examples) or `(N, H, W)` (one per example) with labels `0..d-1` and no gaps. A
coalition is a mask over the `d` features: 1 keeps a feature's pixels from `x`,
0 replaces them with the baseline.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import validate as V
from .._compile import jit


def check_segments(segments: Any, x_shape: tuple[int, ...], name: str = "segments") -> tuple[jax.Array, int]:
    """Validates a label map against images `x_shape = (N, H, W[, C])`.

    Returns `(segments as int32 (N, H, W), d)` where `d` is the number of features
    (the largest count over examples). Labels must be `0..d_n-1` with no gaps in
    each example.
    """
    if segments is None:
        V.fail(name, "an integer label map (H, W) or (N, H, W)", None, TypeError)
    try:
        dtype = jnp.result_type(segments)
    except TypeError:
        V.fail(name, "an integer label map (H, W) or (N, H, W)", type(segments).__name__, TypeError)
    if not jnp.issubdtype(dtype, jnp.integer):
        V.fail(name, "integer labels", f"dtype {dtype}", TypeError)
    n, hw = x_shape[0], tuple(x_shape[1:3])
    shape = tuple(np.shape(segments))
    if shape not in (hw, (n,) + hw):
        V.fail(name, f"a label map of shape {hw} or {(n,) + hw}", f"shape {shape}")
    if not V.is_concrete(segments):
        raise ValueError(f"{name}: must be a concrete array (its number of labels sets shapes), got a tracer")
    # one read of a device array, remembered while it lives; none for host arrays
    counts, firsts, lasts = V.array_fact(segments, "labels", lambda: _labels(segments, hw))
    arr_ndim = len(shape)
    bad = np.flatnonzero(counts != lasts + 1) if firsts.min() == 0 else np.flatnonzero(firsts != 0)
    if bad.size:
        i = int(bad[0])
        labels = np.unique(_host_labels(segments, hw)[i])  # the error path may read
        missing = sorted(set(range(int(labels[-1]) + 1)) - set(labels.tolist()))[:5]
        where = f" (example {i})" if arr_ndim == 3 else ""
        V.fail(name, f"labels 0..d-1 with no gaps{where}",
               f"labels from {labels[0]} to {labels[-1]}"
               + (f", missing {missing}" if missing else ""))
    d = int(counts.max())
    if isinstance(segments, jax.Array):  # stays on the device
        if segments.dtype == jnp.int32 and arr_ndim == 3:
            return segments, d
        # converted on the host, once per array (one more read of it, on its first call):
        # an eager `astype` or broadcast would compile a program before the caller's
        # later checks
        return V.array_fact(segments, f"labels_as_int32_{n}", lambda: jax.device_put(
            _host_labels(segments, hw, n).astype(np.int32),
            segments.sharding if arr_ndim == 3 else None)), d
    # built on the host: an eager broadcast would be one more XLA dispatch per call
    return V.to_device(_host_labels(segments, hw, n), np.int32), d


def _host_labels(segments: Any, hw: tuple[int, ...], n: int | None = None) -> np.ndarray:
    """The label map on the host as `(N', H, W)`: its own examples, or broadcast to `n`."""
    arr = np.asarray(segments)
    arr = arr.reshape((-1,) + hw) if arr.ndim == 3 else arr[None]
    return arr if n is None else np.broadcast_to(arr, (n,) + hw)


def _labels(segments: Any, hw: tuple[int, ...]):
    """Per example: the number of distinct labels, the smallest and the largest (one
    pass over all examples, no Python loop)."""
    per = _host_labels(segments, hw).reshape(-1, int(np.prod(hw)))
    lo, hi = per.min(axis=1), per.max(axis=1)
    if lo.min() < 0:
        return np.zeros(len(per), int), lo, hi
    width = int(hi.max()) + 1
    present = np.zeros((len(per), width), bool)
    present[np.repeat(np.arange(len(per)), per.shape[1]), per.ravel()] = True
    return present.sum(axis=1), lo, hi


def pixel_segments(height: int, width: int) -> np.ndarray:
    """One feature per pixel: labels `0..H*W-1` in row-major order."""
    height = V.check_int(height, "height")
    width = V.check_int(width, "width")
    return np.arange(height * width, dtype=np.int32).reshape(height, width)


def grid_segments(height: int, width: int, grid: int | tuple[int, int] = 8) -> np.ndarray:
    """A `grid[0] x grid[1]` grid of rectangular cells (as equal as the size allows).

    >>> grid_segments(4, 4, 2)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 3, 3],
           [2, 2, 3, 3]], dtype=int32)
    """
    height = V.check_int(height, "height")
    width = V.check_int(width, "width")
    if isinstance(grid, (int, np.integer)) or not isinstance(grid, (tuple, list)) or len(grid) != 2:
        gh = gw = grid
    else:
        gh, gw = grid
    V.check_int(gh, "grid", maximum=height)
    V.check_int(gw, "grid", maximum=width)
    rows = (np.arange(height) * gh) // height
    cols = (np.arange(width) * gw) // width
    return (rows[:, None] * gw + cols[None, :]).astype(np.int32)


def apply_coalitions(x: jax.Array, baseline: jax.Array, segments: jax.Array, masks: jax.Array) -> jax.Array:
    """Builds perturbed inputs on device for one or several examples.

    Args:
      x: images `(B, H, W, C)` (or `(B, H, W)`).
      baseline: what replaces removed features, broadcastable to `x`.
      segments: int labels `(B, H, W)` (or `(H, W)`).
      masks: `(B, d)` coalitions. Boolean masks select (`where`), so kept pixels
        equal `x` exactly; floating masks blend `baseline + m * (x - baseline)`
        (soft masks, as in RISE).

    Returns:
      Inputs shaped like `x`.
    """
    if segments.ndim == 2:
        segments = jnp.broadcast_to(segments, x.shape[:1] + segments.shape)
    m = jnp.take_along_axis(masks, segments.reshape(segments.shape[0], -1), axis=1)
    m = m.reshape(segments.shape + (1,) * (x.ndim - 3))
    if masks.dtype == jnp.bool_:
        return jnp.where(m, x, baseline)
    m = m.astype(x.dtype)
    return baseline + m * (x - baseline)


# ---- superpixels, painting values back, baselines -------------------------------------

SUPERPIXEL_METHODS = ("slic", "quickshift", "felzenszwalb")
BASELINE_MODES = ("blur", "mean")


def superpixels(images: Any, method: str = "slic", **kwargs: Any) -> np.ndarray:
    """Superpixel label maps from scikit-image, relabelled to `0..d-1` without gaps.

    Runs on the host (scikit-image), once per image, before any explanation.

    Args:
      images: one image `(H, W, C)` or a batch `(N, H, W, C)` (C = 1 or 3).
      method: `"slic"`, `"quickshift"` or `"felzenszwalb"`.
      **kwargs: passed to the scikit-image function (e.g. `n_segments=50`,
        `compactness=10` for SLIC). `quickshift` defaults to lime's settings
        (`kernel_size=4, max_dist=200, ratio=0.2`).

    Returns:
      int32 labels `(H, W)` for one image or `(N, H, W)` for a batch, each map
      with labels `0..d_n-1` (valid `segments` for every feature method).

    References:
      Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel
      Methods", TPAMI 2012. Vedaldi & Soatto, "Quick Shift and Kernel Methods for
      Mode Seeking", ECCV 2008. Felzenszwalb & Huttenlocher, "Efficient
      Graph-Based Image Segmentation", IJCV 2004.

    >>> import numpy as np
    >>> imgs = np.random.default_rng(0).uniform(size=(2, 16, 16, 3))
    >>> labels = superpixels(imgs, "slic", n_segments=4)
    >>> labels.shape, np.array_equal(np.unique(labels[0]), np.arange(labels[0].max() + 1))
    ((2, 16, 16), True)
    """
    from skimage import segmentation as skseg

    V.check_choice(method, "method", SUPERPIXEL_METHODS)
    arr = np.asarray(images)
    if arr.dtype.kind not in "fiu":
        V.fail("images", "a numeric image array", f"dtype {arr.dtype}", TypeError)
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3):
        V.fail("images", "an image (H, W, C) or a batch (N, H, W, C) with C in (1, 3)", f"shape {arr.shape}")
    single = arr.ndim == 3
    batch = arr[None] if single else arr
    out = np.empty(batch.shape[:3], np.int32)
    for i, img in enumerate(batch.astype(np.float64)):
        if method == "quickshift":
            kw = dict(kernel_size=4, max_dist=200, ratio=0.2)
            kw.update(kwargs)
            rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
            labels = skseg.quickshift(rgb, **kw)
        else:
            fn = skseg.slic if method == "slic" else skseg.felzenszwalb
            gray = img.shape[-1] == 1
            labels = fn(img[..., 0] if gray else img, channel_axis=None if gray else -1, **kwargs)
        labels = np.asarray(labels, np.int64)
        labels = skseg.relabel_sequential(labels - labels.min() + 1)[0] - 1
        out[i] = labels
    return out[0] if single else out


def to_pixels(values: Any, segments: Any) -> jax.Array:
    """Paints per-feature values `(N, d)` back onto pixels: `(N, H, W)`.

    `segments` is `(H, W)` or `(N, H, W)`.

    >>> import jax.numpy as jnp
    >>> to_pixels(jnp.array([[1.0, 2.0]]), jnp.array([[0, 1], [1, 1]]))[0].tolist()
    [[1.0, 2.0], [2.0, 2.0]]
    """
    if isinstance(values, (str, bytes)) or values is None or isinstance(values, dict):
        V.fail("values", "per-feature values (N, d)", type(values).__name__, TypeError)
    if not hasattr(values, "shape"):
        values = np.asarray(values)
    if values.ndim != 2:
        V.fail("values", "per-feature values (N, d)", f"shape {values.shape}")
    shape = tuple(np.shape(segments)) if not isinstance(segments, (str, bytes)) else ()
    if len(shape) not in (2, 3):
        V.fail("segments", "an integer label map (H, W) or (N, H, W)",
               repr(segments) if isinstance(segments, (str, bytes)) or segments is None
               else f"shape {shape}", TypeError if not shape else ValueError)
    if V.is_concrete(segments):  # label checks need values; under jit only shapes are checked
        seg, d = check_segments(segments, (values.shape[0],) + shape[-2:])
        if d > values.shape[1]:
            V.fail("segments", f"at most {values.shape[1]} labels (values has {values.shape[1]} "
                   f"features per example)", f"{d} labels")
    else:
        if len(shape) == 3 and shape[0] != values.shape[0]:
            V.fail("segments", f"one label map per row of values ({values.shape[0]})",
                   f"shape {shape}")
        seg = jnp.broadcast_to(jnp.asarray(segments, jnp.int32),
                               values.shape[:1] + shape[-2:])
    return _to_pixels(values, seg)


@jit
def _to_pixels(values: jax.Array, seg: jax.Array) -> jax.Array:
    flat = seg.reshape(seg.shape[0], -1)
    return jnp.take_along_axis(values, flat, axis=1).reshape(seg.shape)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Gaussian blur of images `(N, H, W, C)` on device (separable, reflecting borders).

    Args:
      x: finite floating images `(N, H, W)` or `(N, H, W, C)`.
      sigma: the standard deviation in pixels (>= 0; 0 returns `x`).

    Raises:
      TypeError: `x` is not a floating array or `sigma` not a number.
      ValueError: `x` has fewer than 3 dims, an empty axis or NaN/inf; `sigma` < 0.
    """
    x = V.check_array(x, min_ndim=3)
    sigma = V.check_float(sigma, "sigma", minimum=0.0)
    return _gaussian_blur_program(x, sigma=float(sigma))


def _gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """`gaussian_blur` without validation (traceable; for internal use)."""
    h, w = x.shape[1], x.shape[2]
    kh = jnp.asarray(_blur_matrix(h, float(sigma)), x.dtype)
    kw = jnp.asarray(_blur_matrix(w, float(sigma)), x.dtype)
    y = jnp.einsum("ik,nkw...->niw...", kh, x)
    return jnp.einsum("jk,nik...->nij...", kw, y)


_gaussian_blur_program = jit(_gaussian_blur, static_argnames=("sigma",))
"""`_gaussian_blur` as one compiled program (per shape and `sigma`): no eager ops per call."""


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """`(n, n)` matrix applying a 1-D Gaussian with symmetric (reflecting) borders."""
    if sigma <= 0:
        return np.eye(n, dtype=np.float32)
    r = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for t, k in zip(taps, range(i - r, i + r + 1)):
            # reflect ("symmetric") until inside [0, n)
            while k < 0 or k >= n:
                k = -k - 1 if k < 0 else 2 * n - k - 1
            m[i, k] += t
    return m.astype(np.float32)


def n_features(segments: Any) -> int:
    """The number of features of a label map (its largest label + 1), read on the host.

    A device map `(H, W)` or `(N, H, W)` shares `check_segments`' one remembered read."""
    if isinstance(segments, jax.Array) and V.is_concrete(segments) and segments.ndim in (2, 3):
        hw = tuple(segments.shape[-2:])
        return int(V.array_fact(segments, "labels", lambda: _labels(segments, hw))[2].max()) + 1
    return int(np.max(np.asarray(segments))) + 1


def feature_counts(segments: jax.Array, d: int) -> jax.Array:
    """Pixels per feature `(N, d)` for labels `(N, H, W)` (0 for labels an example lacks)."""
    flat = segments.reshape(segments.shape[0], -1)
    return jax.vmap(lambda s: jnp.zeros((d,), jnp.float32).at[s].add(1.0))(flat)


def positions(order: jax.Array) -> jax.Array:
    """The inverse of an ordering `(n, d)`: where each feature stands in its row's
    order (`positions(argsort(v))` ranks `v`), by one scatter instead of a second
    sort (XLA:CPU sorts with a comparator loop: ranks of 64 rows of 256 took 2.0 ms
    this way, 3.8 ms by two argsorts)."""
    n, d = order.shape
    pos = jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32), (n, d))
    return jnp.zeros((n, d), jnp.int32).at[jnp.arange(n)[:, None], order].set(pos)


def baseline_spec(baseline: Any, x: jax.Array, name: str = "baseline") -> tuple[str | None, jax.Array | None]:
    """Validates a baseline at Python time: `(mode, array)`.

    `mode` is `"blur"` or `"mean"` (computed on device later, `array` None) or
    None with `array` broadcast to `x.shape`.
    """
    if isinstance(baseline, str):
        V.check_choice(baseline, name, BASELINE_MODES)
        return baseline, None
    return None, V.check_baseline(baseline, x, name)


def make_baseline(mode: str | None, array: jax.Array | None, x: jax.Array, segments: jax.Array, d: int) -> jax.Array:
    """The baseline images `(N, H, W, C)` for a spec from `baseline_spec` (traceable)."""
    if mode is None:
        return V.full_baseline(array, x)
    if mode == "blur":
        return _gaussian_blur(x, max(x.shape[1], x.shape[2]) / 10.0)
    flat = segments.reshape(segments.shape[0], -1)
    xs = x.reshape(x.shape[0], flat.shape[1], -1)
    sums = jax.vmap(lambda s, v: jnp.zeros((d, v.shape[-1]), x.dtype).at[s].add(v))(flat, xs)
    counts = feature_counts(segments, d).astype(x.dtype)
    means = sums / jnp.maximum(counts, 1.0)[..., None]
    return jnp.take_along_axis(means, flat[..., None], axis=1).reshape(x.shape)


def resolve_baseline(baseline: Any, x: Any, segments: Any) -> jax.Array:
    """The replacement images `(N, H, W, C)` that removed features take.

    Args:
      baseline: a number; an image `(H, W, C)` (or anything broadcastable to one
        example); one image per example `(N, H, W, C)`; `"blur"` (a Gaussian blur
        of `x` with sigma = max(H, W) / 10, computed on device; use
        `gaussian_blur` for another width); or `"mean"` (each feature filled with
        its mean colour, as lime does with `hide_color=None`).
      x: images `(N, H, W, C)`.
      segments: labels `(H, W)` or `(N, H, W)` (used by `"mean"`).

    Returns:
      A `jax.Array` shaped like `x`.
    """
    x = V.check_array(x, min_ndim=3)
    seg, d = check_segments(segments, x.shape)
    mode, arr = baseline_spec(baseline, x)
    return make_baseline(mode, arr, x, seg, d)
