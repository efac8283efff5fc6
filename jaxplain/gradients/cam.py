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

from .._compile import jit
from .._core import layers as _layers
from .._core import validate as V
from .._core.types import ArrayLike, Explanation
from ._shared import check_spatial, layer_vjp, n_evals, prepare_layer, upsample_size
from .basic import saliency_program, with_relu_rule


# ---- Grad-CAM family ---------------------------------------------------------------------


def grad_cam(model: Any, x: ArrayLike, *, target: Any, layer: Any, relu: bool = True,
             upsample: bool | tuple[int, ...] = True, at: str = "output") -> Explanation:
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
    return _cam_public(model, x, target, layer, relu, upsample, at, "grad_cam")


def grad_cam_plus_plus(model: Any, x: ArrayLike, *, target: Any, layer: Any, relu: bool = True,
                       upsample: bool | tuple[int, ...] = True,
                       at: str = "output") -> Explanation:
    """Grad-CAM++: channel weights from positive gradients with pixel-wise coefficients.

    `weights_c = sum_ij alpha_ijc relu(g_ijc)` with
    `alpha = g^2 / (2 g^2 + sum_ij(A_c) g^3)` (the closed form for an exponentiated
    class score, from first-order gradients only), then as `grad_cam`. Same cost
    and arguments as `grad_cam` (including `at="input"`).

    References:
      Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual
      Explanations for Deep Convolutional Networks", WACV 2018.
    """
    return _cam_public(model, x, target, layer, relu, upsample, at, "grad_cam_plus_plus")


def _cam_public(model, x, target, layer, relu, upsample, at, variant) -> Explanation:
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    shape = check_spatial(shape, layer, variant)
    if not isinstance(relu, bool):
        V.fail("relu", "a bool", repr(relu), TypeError)
    size = upsample_size(upsample, x, shape)
    return _cam(model, x, t, layer=parts, at=at, variant=variant, relu=relu, size=size)


@functools.partial(jit, static_argnames=("layer", "at", "variant", "relu", "size"))
def _cam(model, x, target, *, layer, at, variant, relu, size) -> Explanation:
    shape = _layers.activation_shape(model, x, layer, at)
    _, act, g, _ = layer_vjp(model, target, x, layer, at, shape)
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
    return Explanation(values=cam, n_evals=n_evals(x, 1))


def guided_grad_cam(model: Any, x: ArrayLike, *, target: Any, layer: Any, at: str = "output",
                    interpolation: str = "nearest") -> Explanation:
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map resized to the input.

    `values = guided_backprop(x) * resize(grad_cam(x))[..., None]`: pixel-level
    detail where the class-discriminative map is on. The map is resized with
    `interpolation` (`"nearest"`, as Captum's `GuidedGradCam`, or `"bilinear"`).
    Two forward passes and two backward passes (one down to the layer), in one
    jitted program.

    Args:
      model, x, target, layer, at: see `grad_cam`.
      interpolation: `"nearest"` or `"bilinear"`.

    Returns:
      `Explanation` with `values` shaped like `x`.

    References:
      Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
      Gradient-based Localization", ICCV 2017.
    """
    model, x, t, parts, shape = prepare_layer(model, x, target, layer, at)
    check_spatial(shape, layer, "guided_grad_cam")
    V.check_choice(interpolation, "interpolation", ("nearest", "bilinear"))
    if x.ndim != len(shape.shape):
        V.fail("layer", f"a layer with as many spatial dims as x {tuple(x.shape)}",
               f"activation shape {tuple(shape.shape)}")
    return _guided_grad_cam(model, x, t, layer=parts, at=at, interpolation=interpolation)


@functools.partial(jit, static_argnames=("layer", "at", "interpolation"))
def _guided_grad_cam(model, x, target, *, layer, at, interpolation) -> Explanation:

    cam = _cam(model, x, target, layer=layer, at=at, variant="grad_cam", relu=True, size=None)
    guided = saliency_program(with_relu_rule(model, "guided"), x, target, absolute=False,
                       times_input=False, batch_size=None)
    size = (x.shape[0],) + tuple(x.shape[1:-1])
    m = jax.image.resize(cam.values, size, method=interpolation)
    return Explanation(values=guided.values * m[..., None], n_evals=n_evals(x, 2))
