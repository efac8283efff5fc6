"""Grad-CAM, Grad-CAM++ and Guided Grad-CAM.

The model runs once with a zero `delta` added to the chosen layer's output
(`_core.layers.probe`), and the gradient with respect to `delta` is the gradient
with respect to the layer's activations. Grad-CAM therefore costs exactly one
forward pass plus one backward pass down to the layer, in a single jitted
program; activations and gradients come from the same forward pass. With
`at="input"` the map is built from the layer's input instead.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from .._core import registry
from .._core import layers as _layers
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from ._shared import check_spatial, layer_vjp, n_evals, over_examples, prepare_layer, upsample_size
from .basic import saliency_program, with_relu_rule


# ---- Grad-CAM family ---------------------------------------------------------------------


@registry.method("cam", evals=lambda a: 1, demo={"label": "Grad-CAM", "quick": {}, "full": {}})
def grad_cam(model: Any, x: ArrayLike, *, target: Any, layer: Any, relu: bool = True,
             upsample: bool | tuple[int, ...] = True, at: str = "output",
             batch_size: int | None = None) -> Explanation:
    """Grad-CAM: layer activations weighted by their spatially averaged gradients.

    `cam = relu(sum_c mean_ij(dy/dA[..., c]) * A[..., c])` for the layer output `A`
    `(N, h, w, C)` (or its input, with `at="input"`). One forward and one
    backward pass (to the layer), jitted.

    Args:
      model: a Linen (`from_linen`) or NNX model.
      x: inputs `(N, H, W, C)`.
      target: which output to explain (int, per-example ints, "predicted", callable).
      layer: the convolutional layer (submodule path), usually the last conv block.
      relu: keep only positive evidence (the published method); `False` returns
        the signed map.
      upsample: `True` resizes the map bilinearly to the input's spatial size,
        `False` keeps the layer's size, `(H, W)` resizes to that size.
      at: `"output"` uses the layer's output as `A`; `"input"` the first
        positional argument of the layer's `__call__`.
      batch_size: examples per chunk (`None`: the backend's default).

    Returns:
      `Explanation` with `values` `(N, H, W)` (or the layer's `(N, h, w)`).

    Raises:
      ValueError: unknown layer (the message lists the available ones), a
        layer without spatial dims, or `at` not `"output"`/`"input"`.

    References:
      Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
      Gradient-based Localization", ICCV 2017.

    >>> import jax, jaxplain as jx
    >>> net = jx.testing.tiny_cnn(); x = jx.testing.random_images(0, n=2)
    >>> model = jx.from_linen(net, net.init(jax.random.key(0), x))
    >>> jx.grad_cam(model, x, target=0, layer="conv1").values.shape
    (2, 8, 8)
    """
    return _cam_public(model, x, target, layer, relu, upsample, at, batch_size, "grad_cam")


@registry.method("cam", evals=lambda a: 1, demo={"label": "Grad-CAM++", "quick": None, "full": {}})
def grad_cam_plus_plus(model: Any, x: ArrayLike, *, target: Any, layer: Any, relu: bool = True,
                       upsample: bool | tuple[int, ...] = True, at: str = "output",
                       batch_size: int | None = None) -> Explanation:
    """Grad-CAM++: channel weights from positive gradients with pixel-wise coefficients.

    `weights_c = sum_ij alpha_ijc relu(g_ijc)` with
    `alpha = g^2 / (2 g^2 + sum_ij(A_c) g^3)` (the closed form for an exponentiated
    class score, from first-order gradients only), then as `grad_cam`. Same cost
    and arguments as `grad_cam` (including `at="input"`).

    References:
      Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual
      Explanations for Deep Convolutional Networks", WACV 2018.
    """
    return _cam_public(model, x, target, layer, relu, upsample, at, batch_size,
                       "grad_cam_plus_plus")


def _cam_public(model, x, target, layer, relu, upsample, at, batch_size, variant) -> Explanation:
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    shape = check_spatial(shape, layer, variant)
    if not isinstance(relu, bool):
        V.fail("relu", "a bool", repr(relu), TypeError)
    size = upsample_size(upsample, x, shape)
    batch_size = V.check_batch_size(batch_size)
    return _cam(model, x, t, layer=parts, at=at, variant=variant, relu=relu, size=size,
                batch_size=batch_size)


def cam_program(model, x, target, *, layer: tuple[str, ...], at: str = "output",
                variant: str = "grad_cam", relu: bool = True, size: tuple[int, ...] | None = None,
                batch_size: int | None = None,
                tokens: tuple[int, int, int] | None = None) -> Explanation:
    """The jitted Grad-CAM (`variant="grad_cam"`) or Grad-CAM++ program on validated
    arguments (a `Model`, an array, a `Target`, a layer key), for other families.

    `tokens=(prefix, gh, gw)` reads a token sequence `(N, prefix + gh * gw, C)` (a
    transformer block's output) as the grid `(N, gh, gw, C)` of its patch tokens,
    dropping the `prefix` tokens (the class token) first.
    """
    return _cam(model, x, target, layer=layer, at=at, variant=variant, relu=relu, size=size,
                batch_size=batch_size, tokens=tokens)


@functools.partial(jit, static_argnames=("layer", "at", "variant", "relu", "size", "batch_size",
                                         "tokens"))
def _cam(model, x, target, *, layer, at, variant, relu, size, batch_size,
         tokens=None) -> Explanation:
    def maps(xs, t):
        return _cam_maps(model, xs, t, layer, at, variant, relu, size, tokens)

    return Explanation(values=over_examples(maps, x, target, batch_size), n_evals=n_evals(x, 1))


def _token_grid(a: jax.Array, tokens: tuple[int, int, int]) -> jax.Array:
    prefix, gh, gw = tokens
    return a[:, prefix:].reshape(a.shape[0], gh, gw, a.shape[-1])


def _cam_maps(model, x, target, layer, at, variant, relu, size, tokens=None):
    shape = _layers.activation_shape(model, x, layer, at)
    _, act, g, _ = layer_vjp(model, target, x, layer, at, shape)
    if tokens is not None:
        act, g = _token_grid(act, tokens), _token_grid(g, tokens)
    spatial = tuple(range(1, act.ndim - 1))
    if variant == "grad_cam":
        weights = jnp.mean(g, axis=spatial, keepdims=True)
    else:
        g2 = g * g
        denom = 2.0 * g2 + jnp.sum(act, axis=spatial, keepdims=True) * g2 * g
        alpha = jnp.where(denom != 0, g2 / jnp.where(denom != 0, denom, 1.0), 0.0)
        weights = jnp.sum(alpha * jax.nn.relu(g), axis=spatial, keepdims=True)
    cam = jnp.sum(weights * act, axis=-1)
    if relu:
        cam = jax.nn.relu(cam)
    if size is not None and tuple(cam.shape[1:]) != tuple(size):
        cam = jax.image.resize(cam, (cam.shape[0],) + tuple(size), method="bilinear")
    return cam


@registry.method("cam", evals=lambda a: 2)
def guided_grad_cam(model: Any, x: ArrayLike, *, target: Any, layer: Any, at: str = "output",
                    interpolation: str = "nearest",
                    batch_size: int | None = None) -> Explanation:
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map resized to the input.

    `values = guided_backprop(x) * resize(grad_cam(x))[..., None]`: pixel-level
    detail where the class-discriminative map is on. The map is resized with
    `interpolation`: `"nearest"` takes source pixel `floor(i * h / H)` (PyTorch's
    `nearest`, which Captum's `GuidedGradCam` uses), `"nearest-exact"` the pixel
    whose centre is nearest, `floor((i + 0.5) * h / H)` (PyTorch's
    `nearest-exact`, `jax.image.resize`'s `nearest`), `"bilinear"` interpolates.
    The three agree when the input size is a whole multiple of the layer's.
    Two forward passes and two backward passes (one down to the layer), in one
    jitted program.

    Args:
      model, x, target, layer, at, batch_size: see `grad_cam`.
      interpolation: `"nearest"`, `"nearest-exact"` or `"bilinear"`.

    Returns:
      `Explanation` with `values` shaped like `x`.

    References:
      Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
      Gradient-based Localization", ICCV 2017.
    """
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    check_spatial(shape, layer, "guided_grad_cam")
    V.check_choice(interpolation, "interpolation", INTERPOLATIONS)
    if x.ndim != len(shape.shape):
        V.fail("layer", f"a layer with as many spatial dims as x {tuple(x.shape)}",
               f"activation shape {tuple(shape.shape)}")
    return _guided_grad_cam(model, x, t, layer=parts, at=at, interpolation=interpolation,
                            batch_size=V.check_batch_size(batch_size))


INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear")


def resize_map(m: jax.Array, size: tuple[int, ...], interpolation: str) -> jax.Array:
    """Resizes maps `(N, h, w)` to `(N,) + size` (see `guided_grad_cam`)."""
    if interpolation == "bilinear":
        return jax.image.resize(m, (m.shape[0],) + tuple(size), method="bilinear")
    if interpolation == "nearest-exact":
        return jax.image.resize(m, (m.shape[0],) + tuple(size), method="nearest")
    for axis, out in enumerate(size, start=1):  # PyTorch's "nearest": floor(i * in / out)
        src = (np.arange(out) * m.shape[axis]) // out
        m = jnp.take(m, src, axis=axis)
    return m


@functools.partial(jit, static_argnames=("layer", "at", "interpolation", "batch_size"))
def _guided_grad_cam(model, x, target, *, layer, at, interpolation, batch_size) -> Explanation:
    guided_model = with_relu_rule(model, "guided")

    def maps(xs, t):
        cam = _cam_maps(model, xs, t, layer, at, "grad_cam", True, None)
        guided = saliency_program(guided_model, xs, t, absolute=False, times_input=False,
                                  batch_size=None)
        return guided.values * resize_map(cam, tuple(xs.shape[1:-1]), interpolation)[..., None]

    return Explanation(values=over_examples(maps, x, target, batch_size), n_evals=n_evals(x, 2))
