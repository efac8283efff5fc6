"""Tokens as image patches: the patch grid, Grad-CAM on it, and patches as features.

A vision transformer's sequence is `prefix` tokens (the class token) followed by
one token per patch, row by row over a `gh x gw` grid of the image. These
helpers map a value per patch token back to the image, and give the patch grid
as a segmentation, so LIME, KernelSHAP, Shapley, occlusion and the metrics
(every method taking `segments=`) treat patches as features.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from .._core import layers as _layers
from .._core import registry
from .._core import validate as V
from .._core.features import grid_segments
from .._core.models import as_model
from .._core.targets import as_target
from .._core.types import ArrayLike, Explanation
from ..gradients.cam import cam_program, resize_map


def patch_segments(height: int, width: int, patch: int | tuple[int, int]) -> np.ndarray:
    """The patch grid of a vision transformer as a segmentation `(height, width)`.

    Patch `(i, j)` (row-major, the order of the patch tokens) is feature
    `i * (width // pw) + j`. Pass it as `segments=` to `lime`, `kernel_shap`,
    `shapley_values`, `occlusion` or a metric to use patches as features.

    >>> patch_segments(4, 4, 2)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 3, 3],
           [2, 2, 3, 3]], dtype=int32)

    Raises:
      ValueError: the patch size does not divide the image size.
    """
    height = V.check_int(height, "height")
    width = V.check_int(width, "width")
    ph, pw = (patch, patch) if not isinstance(patch, (tuple, list)) else tuple(patch)
    V.check_int(ph, "patch", maximum=height)
    V.check_int(pw, "patch", maximum=width)
    if height % ph or width % pw:
        V.fail("patch", f"a patch size dividing the image size ({height}, {width})",
               (ph, pw))
    return grid_segments(height, width, (height // ph, width // pw))


def patch_grid(x: jax.Array, n_patches: int, grid: Any) -> tuple[int, int]:
    """`(gh, gw)` with `gh * gw == n_patches`: `grid` checked, or inferred from `x`'s
    aspect ratio (images `(N, H, W, C)`) when None."""
    if grid is not None:
        if (not isinstance(grid, (tuple, list)) or len(grid) != 2
                or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1
                       for g in grid)):
            V.fail("grid", "(rows, cols) of positive ints", repr(grid))
        gh, gw = int(grid[0]), int(grid[1])
    else:
        if x.ndim < 3:
            V.fail("grid", f"(rows, cols) of the {n_patches} patch tokens (x {tuple(x.shape)} "
                   f"is not an image to infer it from)", None)
        h, w = int(x.shape[1]), int(x.shape[2])
        gh = max(1, round(math.sqrt(n_patches * h / w)))
        gw = n_patches // gh
    if gh * gw != n_patches:
        V.fail("grid", f"(rows, cols) whose product is the {n_patches} patch tokens "
               f"(tokens after `prefix`)", (gh, gw))
    return gh, gw


def check_prefix(prefix: Any, n_tokens: int) -> int:
    return V.check_int(prefix, "prefix", minimum=0, maximum=n_tokens - 1)


def to_image(values: jax.Array, grid: tuple[int, int], size: tuple[int, int] | None) -> jax.Array:
    """Per-patch values `(N, gh * gw)` as maps `(N, gh, gw)`, or `(N,) + size` where every
    pixel takes its patch's value (nearest neighbour)."""
    maps = values.reshape((values.shape[0],) + tuple(grid))
    if size is None or tuple(size) == tuple(grid):
        return maps
    return resize_map(maps, tuple(size), "nearest")


def image_size(upsample: Any, x: jax.Array) -> tuple[int, int] | None:
    if upsample is False:
        return None
    if upsample is True:
        if x.ndim < 3:
            V.fail("upsample", f"False (x {tuple(x.shape)} is not an image)", True)
        return int(x.shape[1]), int(x.shape[2])
    if (isinstance(upsample, (tuple, list)) and len(upsample) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                    for s in upsample)):
        return int(upsample[0]), int(upsample[1])
    V.fail("upsample", "True, False or a size (H, W) of positive ints", repr(upsample))


@registry.method("attention", evals=lambda a: 1)
def token_grad_cam(model: Any, x: ArrayLike, *, target: Any, layer: Any, prefix: int = 1,
                   grid: tuple[int, int] | None = None, relu: bool = True,
                   upsample: bool | tuple[int, int] = True, at: str = "output",
                   batch_size: int | None = None) -> Explanation:
    """Grad-CAM on a transformer's token grid: `grad_cam` with patch tokens as positions.

    The layer's activation is the token sequence `A` `(N, prefix + gh * gw, C)` (a
    block's output); its patch tokens are laid out as the grid `(N, gh, gw, C)`
    and Grad-CAM runs on it: `relu(sum_c mean_patches(dy/dA[..., c]) * A[..., c])`.
    One forward and one backward pass (to the layer), jitted; the CAM code is
    `jaxplain.grad_cam`'s.

    Args:
      model: a Linen (`from_linen`) or NNX model.
      x: images `(N, H, W, C)`.
      target: which output to explain (int, per-example ints, "predicted", callable).
      layer: a layer whose output (or input, `at="input"`) is the token sequence.
        Take the tokens the last attention reads (`"block1/norm1"` for the zoo's
        two-block ViT): after the last attention, patch tokens no longer reach a
        class-token head, and their gradients are zero.
      prefix: tokens before the patch tokens (1: the class token).
      grid: `(gh, gw)`, the patch grid; None infers it from `x`'s aspect ratio.
      relu: keep only positive evidence; upsample: `True` resizes the grid
        bilinearly to the input's `(H, W)` (as `grad_cam` does), `False` keeps the
        grid `(N, gh, gw)`, `(H, W)` resizes to that size.
      at, batch_size: see `grad_cam`.

    Returns:
      `Explanation` with `values` `(N, H, W)` (or `(N, gh, gw)`).

    Raises:
      ValueError: unknown layer, a layer that is not a token sequence, or a grid
        that does not match its tokens.

    References:
      Selvaraju et al., "Grad-CAM", ICCV 2017; Dosovitskiy et al., "An Image is
      Worth 16x16 Words", ICLR 2021 (the patch tokens).
    """
    _layers.check_site(at)
    model = as_model(model)
    x = V.check_array(x)
    parts = _layers.layer_parts(layer)
    shape = _layers.activation_shape(model, x, parts, at)
    if not isinstance(shape, jax.ShapeDtypeStruct) or len(shape.shape) != 3:
        V.fail("layer", "a layer whose activation is a token sequence (N, tokens, C)",
               f"{layer!r} with activation {jax.tree.map(lambda s: s.shape, shape)}")
    n = int(shape.shape[1])
    prefix = check_prefix(prefix, n)
    gh, gw = patch_grid(x, n - prefix, grid)
    if not isinstance(relu, bool):
        V.fail("relu", "a bool", repr(relu), TypeError)
    size = image_size(upsample, x)
    return cam_program(model, x, as_target(target, model, x), layer=parts, at=at, relu=relu,
                       size=size, batch_size=V.check_batch_size(batch_size),
                       tokens=(prefix, gh, gw))
