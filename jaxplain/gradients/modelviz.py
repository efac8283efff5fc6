"""Looking inside a CNN: feature maps, filters, and feature visualisation.

Everything here returns arrays ready for `matplotlib.pyplot.imshow` (NumPy, in
[0, 1], tiled into one image where that helps); plotting itself lives in
`jaxplain.visualize`, the only module that imports matplotlib.

- `feature_maps(model, x, layer=...)`: a layer's activations.
- `filters(model, layer)`: a conv layer's kernels, tiled.
- `feature_visualization(model, layer=..., channel=..., key=...)`: inputs that
  maximise a channel (or a class), by gradient ascent with optax Adam, with the
  regularisers that make them legible (L2, total variation, jitter, a Fourier
  parameterisation with a 1/f spectrum, colours optimised in a decorrelated
  colour space), several channels at once with `vmap`.
- `tile`, `tile_maps`: arrange images / channel maps into one grid.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import layers as _layers
from .._compile import tuned
from .._core import validate as V
from .._core.models import as_model

NORMALIZE = ("each", "all", "none")
PARAMS = ("pixel", "fourier")

# The square root of the RGB colour covariance of natural images, for
# `feature_visualization(decorrelate=True)`. Computed once with NumPy (float64) from
# scikit-image 0.26's `data.astronaut()`, `data.coffee()` and `data.chelsea()`: every
# pixel of the three images pooled, scaled to [0, 1] (uint8 / 255);
# `C = np.cov(pixels, rowvar=False)`; `lam, V = np.linalg.eigh(C)`;
# `COLOR_SQRT = V @ diag(sqrt(lam)) @ V.T / sqrt(lam.max())`, i.e. the symmetric
# square root of C divided by its largest eigenvalue, so that it never lengthens a
# colour vector (eigenvalues of C: 0.00173, 0.0251, 0.172). `tests/test_modelviz.py`
# recomputes it.
COLOR_SQRT = np.array([
    [0.5568174519, 0.2654878940, 0.1561428915],
    [0.2654878940, 0.4322080566, 0.3362628234],
    [0.1561428915, 0.3362628234, 0.4930553667],
])


# ---- tiling -------------------------------------------------------------------------------


def _normalize(a: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return a
    axes = tuple(range(1, a.ndim)) if how == "each" else None
    lo = a.min(axis=axes, keepdims=True)
    hi = a.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1), 0.0)


def tile(images: Any, *, ncols: int | None = None, pad: int = 1, pad_value: float = 1.0,
         normalize: str = "each") -> np.ndarray:
    """Arranges `K` images into one grid image for `imshow`.

    Args:
      images: `(K, h, w)` grey or `(K, h, w, c)` with `c` in {1, 3, 4}.
      ncols: images per row (default: about square).
      pad: pixels between images.
      pad_value: value of the padding (after normalisation).
      normalize: `"each"` scales every image to [0, 1], `"all"` scales them
        jointly (comparable brightness), `"none"` keeps values.

    Returns:
      A NumPy float32 array `(H, W)` or `(H, W, c)`.

    >>> tile(np.zeros((5, 3, 3)), ncols=5).shape
    (3, 19)
    """
    if isinstance(images, (str, bytes)) or images is None or isinstance(images, dict):
        V.fail("images", "a numeric array (K, h, w) or (K, h, w, c)", repr(images), TypeError)
    try:
        a = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"images: expected a numeric array (K, h, w) or (K, h, w, c), "
                        f"got {type(images).__name__} ({e})") from e
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] not in (1, 3, 4)) or a.shape[0] < 1:
        V.fail("images", "(K, h, w) or (K, h, w, c) with c in {1, 3, 4}", f"shape {a.shape}")
    V.check_choice(normalize, "normalize", NORMALIZE)
    pad = V.check_int(pad, "pad", minimum=0)
    k, h, w = a.shape[:3]
    if ncols is None:
        ncols = int(math.ceil(math.sqrt(k)))
    ncols = min(V.check_int(ncols, "ncols", minimum=1), k)
    nrows = -(-k // ncols)
    a = _normalize(a, normalize)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad) + a.shape[3:], pad_value,
                  np.float32)
    for i in range(k):
        r, c = divmod(i, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = a[i]
    return out


def tile_maps(maps: Any, *, ncols: int | None = None, pad: int = 1,
              normalize: str = "each") -> np.ndarray:
    """Tiles one example's channel maps `(h, w, C)` into a grey grid `(H, W)` for `imshow`."""
    a = np.asarray(maps)
    if a.ndim != 3:
        V.fail("maps", "one example's channel maps (h, w, C); index the batch first",
               f"shape {a.shape}")
    return tile(np.moveaxis(a, -1, 0), ncols=ncols, pad=pad, normalize=normalize)


# ---- feature maps and filters --------------------------------------------------------------


def feature_maps(model: Any, x: Any, *, layer: Any, at: str = "output") -> np.ndarray:
    """The activations of `layer` on `x` as NumPy, e.g. `(N, h, w, C)`.

    `at="output"` (default) gives the layer's output, `at="input"` the first
    positional argument of its `__call__` (what the layer sees). Pass `maps[i]`
    to `tile_maps` for one grid image per example.
    """
    from .layer import layer_activations

    return np.asarray(layer_activations(model, x, layer=layer, at=at).values)


def filters(model: Any, layer: Any, *, ncols: int | None = None, pad: int = 1,
            normalize: str = "each") -> np.ndarray:
    """A conv layer's kernels tiled into one image for `imshow`.

    For a layer on 1 or 3 input channels (the first layer of an image model)
    every output filter is one grey or RGB tile; otherwise the grid has one row
    per output filter and one grey tile per input channel.

    Args:
      model: a Linen or NNX model.
      layer: a 2-D convolution (its `kernel` is `(kh, kw, C_in, C_out)`).
      ncols: tiles per row (colour/grey filters only).
      pad: pixels between tiles.
      normalize: `"each"`, `"all"` or `"none"` (see `tile`).

    Returns:
      NumPy float32 `(H, W, 3)` for RGB filters, `(H, W)` otherwise.
    """
    model = as_model(model)
    kernel = np.asarray(model.kernel(layer), np.float32)
    if kernel.ndim != 4:
        V.fail("layer", "a 2-D convolution with kernel (kh, kw, C_in, C_out)",
               f"{layer!r} with kernel shape {kernel.shape}")
    kh, kw, cin, cout = kernel.shape
    if cin in (1, 3):
        tiles = np.moveaxis(kernel, -1, 0)  # (cout, kh, kw, cin)
        if cin == 1:
            tiles = tiles[..., 0]
        return tile(tiles, ncols=ncols, pad=pad, normalize=normalize)
    tiles = np.transpose(kernel, (3, 2, 0, 1)).reshape(cout * cin, kh, kw)
    return tile(tiles, ncols=cin, pad=pad, normalize=normalize)


# ---- feature visualisation ----------------------------------------------------------------


def decorrelated_to_rgb(z: Any) -> jax.Array:
    """Maps decorrelated colour coordinates `(..., 3)` to RGB: `COLOR_SQRT @ z` per pixel.

    Independent unit-variance coordinates become colours with (a scaled copy of)
    the covariance of natural images. The result is unbounded; a squashing
    function maps it to the valid range.
    """
    return jnp.asarray(z) @ jnp.asarray(COLOR_SQRT.T, jnp.float32)


def rgb_to_decorrelated(rgb: Any) -> jax.Array:
    """The inverse of `decorrelated_to_rgb` (`COLOR_SQRT` is positive definite)."""
    return jnp.asarray(rgb) @ jnp.asarray(np.linalg.inv(COLOR_SQRT).T, jnp.float32)


class FeatureVisualization(NamedTuple):
    """Result of `feature_visualization` (a pytree).

    Attributes:
      images: `(K, H, W, C)` optimised inputs in `value_range`, one per channel/class.
      objective: `(K, steps)` the maximised activation (or logit) at every step.
    """

    images: jax.Array
    objective: jax.Array


def feature_visualization(model: Any, *, layer: Any = None, channel: Any = None, target: Any = None,
                          key: Any, image_shape: Sequence[int], steps: int = 256, lr: float = 0.05,
                          l2: float = 1e-3, tv: float = 1e-2, jitter: int = 1,
                          param: str = "fourier", decorrelate: bool | None = None,
                          decay: float = 1.0, value_range: tuple[float, float] = (0.0, 1.0)
                          ) -> FeatureVisualization:
    """Activation maximisation: the input that most excites a channel or a class.

    Gradient ascent with optax Adam on a parameterised image
    `lo + (hi - lo) * sigmoid(M z)` (`M` the colour transform, or the identity
    without `decorrelate`), maximising the spatial mean of
    `layer[..., channel]` (or the logit `target`) minus
    `l2 * mean((img - mid)^2) + tv * total_variation(img)`, on a randomly shifted
    copy of the image each step (jitter). Several channels are optimised at once
    with `vmap`; each channel's randomness is `fold_in(key, channel)`, so a
    channel's image does not depend on which other channels are requested.

    Args:
      model: a Linen or NNX model (any model with `target=`).
      layer: layer whose channel is maximised (with `channel`).
      channel: a channel index or a sequence of them.
      target: instead of `layer`/`channel`, a class index or a sequence of them.
      key: a `jax.random.key` (initialisation and jitter).
      image_shape: `(H, W, C)` of one input.
      steps: Adam steps.
      lr: Adam learning rate.
      l2: weight of the L2 penalty around the middle of `value_range`.
      tv: weight of the total-variation penalty (mean absolute neighbour difference).
      jitter: maximal random shift in pixels per step (0 disables).
      param: `"pixel"` (optimise pixels) or `"fourier"` (optimise a spectrum scaled
        by `1 / f**decay`, which favours smooth, natural-looking images).
      decorrelate: optimise colours in a decorrelated colour space, mapped to RGB
        by `COLOR_SQRT` (the square root of natural images' colour covariance)
        before the sigmoid, so that steps change brightness and hue rather than
        single channels. Works with either `param`. `None` (default) turns it on
        for `image_shape` with 3 channels last and off otherwise; `True` for
        another channel count is an error.
      decay: spectrum decay exponent for `"fourier"`.
      value_range: the model's input range `(lo, hi)`.

    Returns:
      `FeatureVisualization(images (K, H, W, C), objective (K, steps))`; plot with
      `tile(result.images)`.

    Raises:
      ValueError: unknown layer, channel or class out of range, bad configuration
        (e.g. `decorrelate=True` for an image that is not RGB).

    References:
      Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009;
      Olah et al., "Feature Visualization", Distill 2017 (Fourier and decorrelated
      colour parameterisations).
    """
    model = as_model(model)
    key = V.check_key(key)
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
    if shape is None or len(shape) < 2 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        V.fail("image_shape", "one input's shape, e.g. (H, W, C), with positive ints",
               repr(image_shape))
    shape = tuple(int(s) for s in shape)
    rgb = len(shape) >= 3 and shape[-1] == 3
    if decorrelate is None:
        decorrelate = rgb
    elif not isinstance(decorrelate, (bool, np.bool_)):
        V.fail("decorrelate", "True, False or None (on for 3-channel images)", repr(decorrelate),
               TypeError)
    elif decorrelate and not rgb:
        V.fail("decorrelate", "False for an image_shape without 3 colour channels last "
               "(colour decorrelation maps 3 channels to RGB)", f"True with image_shape {shape}")
    decorrelate = bool(decorrelate)
    x0 = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
    if (channel is None) == (target is None):
        V.fail("channel", "exactly one of channel= (with layer=) or target=",
               f"channel={channel!r}, target={target!r}")
    if channel is not None:
        if layer is None:
            V.fail("layer", "a layer name together with channel=", None)
        parts = _layers.layer_parts(layer)
        act = jax.eval_shape(lambda m, x: m.probe(x, parts)[1], model, x0)
        if not isinstance(act, jax.ShapeDtypeStruct) or len(act.shape) < 2:
            V.fail("layer", "a layer returning one array (N, ..., C)", f"{layer!r}")
        ids = _indices(channel, "channel", act.shape[-1], f"channels of {layer!r}")
        mode = parts
    else:
        if layer is not None:
            V.fail("layer", "None with target= (target maximises a model output)", repr(layer))
        out = jax.eval_shape(model, x0)
        if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) != 2:
            V.fail("target", "a model with outputs (N, classes)", getattr(out, "shape", out))
        ids = _indices(target, "target", out.shape[-1], "classes")
        mode = None
    steps = V.check_int(steps, "steps", minimum=1)
    lr = V.check_float(lr, "lr", minimum=0.0, open_min=True)
    l2 = V.check_float(l2, "l2", minimum=0.0)
    tv = V.check_float(tv, "tv", minimum=0.0)
    jitter = V.check_int(jitter, "jitter", minimum=0)
    V.check_choice(param, "param", PARAMS)
    decay = V.check_float(decay, "decay", minimum=0.0)
    if not (isinstance(value_range, (tuple, list)) and len(value_range) == 2):
        V.fail("value_range", "(lo, hi)", repr(value_range))
    lo, hi = (V.check_float(v, "value_range") for v in value_range)
    if not lo < hi:
        V.fail("value_range", "lo < hi", value_range)
    return _feature_vis(model, jnp.asarray(ids, jnp.int32), key, jnp.float32(lr), jnp.float32(l2),
                        jnp.float32(tv), mode=mode, steps=steps, shape=shape, jitter=jitter,
                        param=param, decorrelate=decorrelate, decay=decay, value_range=(lo, hi))


def _indices(v: Any, name: str, n: int, what: str) -> np.ndarray:
    vals = np.atleast_1d(np.asarray(v))
    if vals.ndim != 1 or vals.size == 0 or not np.issubdtype(vals.dtype, np.integer):
        V.fail(name, "an int or a non-empty sequence of ints", repr(v), TypeError)
    if vals.min() < 0 or vals.max() >= n:
        V.fail(name, f"indices in [0, {n}) ({n} {what})", vals.tolist())
    return vals


def _spectrum_scale(h: int, w: int, decay: float) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.maximum(np.sqrt(fy * fy + fx * fx), 1.0 / max(h, w))
    scale = f ** (-decay)
    return (scale / np.sqrt(np.mean(scale * scale))).astype(np.float32)


@functools.partial(jit, static_argnames=("mode", "steps", "shape", "jitter", "param",
                                             "decorrelate", "decay", "value_range"))
def _feature_vis(model, ids, key, lr, l2, tv, *, mode, steps, shape, jitter, param, decorrelate,
                 decay, value_range):
    import optax

    lo, hi = value_range
    h, w = shape[0], shape[1]
    spatial = len(shape) >= 3
    scale = _spectrum_scale(h, w, decay) if param == "fourier" else None

    def to_image(p):
        if param == "pixel":
            z = p
        else:
            s = scale.reshape(scale.shape + (1,) * (len(shape) - 2))
            spec = jax.lax.complex(p[0], p[1]) * s
            z = jnp.fft.irfft2(spec, s=(h, w), axes=(0, 1), norm="ortho")
        if decorrelate:
            z = decorrelated_to_rgb(z)
        return lo + (hi - lo) * jax.nn.sigmoid(z)

    def objective(img, idx):
        if mode is None:
            return model(img[None])[0, idx]
        _, act = model.probe(img[None], mode)
        return jnp.mean(act[0, ..., idx])

    def loss(p, idx, k):
        img = to_image(p)
        if jitter and spatial:
            dy, dx = jax.random.randint(k, (2,), -jitter, jitter + 1)
            img_in = jnp.roll(img, (dy, dx), axis=(0, 1))
        else:
            img_in = img
        obj = objective(img_in, idx)
        u = (img - lo) / (hi - lo) - 0.5
        reg = l2 * jnp.mean(u * u)
        if spatial:
            reg = reg + tv * (jnp.mean(jnp.abs(jnp.diff(u, axis=0)))
                              + jnp.mean(jnp.abs(jnp.diff(u, axis=1))))
        return reg - obj, obj

    opt = optax.adam(lr)

    def one(idx):
        k_init, k_steps = jax.random.split(jax.random.fold_in(key, idx))
        pshape = shape if param == "pixel" else (2, h, w // 2 + 1) + shape[2:]
        p0 = 0.01 * jax.random.normal(k_init, pshape, jnp.float32)

        def step(carry, i):
            p, s = carry
            k = jax.random.fold_in(k_steps, i)
            (_, obj), g = jax.value_and_grad(loss, has_aux=True)(p, idx, k)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), obj

        (p, _), hist = jax.lax.scan(tuned(step, "loop"), (p0, opt.init(p0)), jnp.arange(steps))
        return to_image(p), hist

    images, hist = jax.vmap(one)(ids)
    return FeatureVisualization(images, hist)
