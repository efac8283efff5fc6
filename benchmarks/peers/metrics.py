"""Quantus' PixelFlipping on the PyTorch twin, and tie-free attributions for it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .common import device, to_nchw


def distinct_ranks(pixel_map: np.ndarray) -> np.ndarray:
    """Attributions `(N, H, W)` -> tie-free values with the same order (stable: ties by pixel index).

    Quantus sorts with NumPy's default (unstable) `argsort`, so among equal
    attributions the removal order is arbitrary, while jaxplain breaks ties by
    pixel index. Comparing both on distinct values (`d - position`, exact in
    float32) removes the ambiguity without changing jaxplain's order.
    """
    pm = np.asarray(pixel_map, np.float64)
    n, d = pm.shape[0], int(np.prod(pm.shape[1:]))
    order = np.argsort(-pm.reshape(n, d), axis=1, kind="stable")
    pos = np.empty_like(order)
    pos[np.arange(n)[:, None], order] = np.arange(d)
    return (d - pos).astype(np.float32).reshape(pm.shape)


def quantus_pixel_flipping(
    tm, x: np.ndarray, target, pixel_attr: np.ndarray, *, pixels_per_step: int
) -> Callable:
    """Quantus `PixelFlipping` (Bach et al.'s deletion curve) on the twin, logits, zero baseline.

    Quantus broadcasts a `(N, 1, H, W)` map over the channels and flattens it to
    `C * H * W` features, each pixel appearing C times with the same value;
    `features_in_step = pixels_per_step * C` therefore removes whole pixels per
    step when the values of different pixels are distinct (see `distinct_ranks`).
    `perturb_baseline=0.0`, not "black": in Quantus 0.6 "black" is each image's
    minimum, not 0. No normalisation, no abs, no warnings, no plots, no progress
    bar; it evaluates after every step (`H * W / pixels_per_step` forwards per
    image), not the unperturbed image.
    """
    import quantus

    class PixelFlipping(quantus.PixelFlipping):
        # Quantus 0.6.0 asserts that `features_in_step` divides H * W, but then
        # steps over the C * H * W flattened features: for RGB no step of whole
        # pixels passes (48 does not divide 1024). Only that check is skipped;
        # the timed computation is Quantus' own.
        def custom_preprocess(self, x_batch, **kwargs):
            return None

    c = x.shape[-1]
    metric = PixelFlipping(
        features_in_step=pixels_per_step * c,
        perturb_baseline=0.0,
        abs=False,
        normalise=False,
        return_aggregate=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    xb = to_nchw(x, "cpu").numpy()  # Quantus takes NumPy batches and moves them itself
    ab = np.ascontiguousarray(np.asarray(pixel_attr, np.float32)[:, None])
    yb = np.asarray(target).astype(np.int64)
    return lambda: metric(
        model=tm,
        x_batch=xb,
        y_batch=yb,
        a_batch=ab,
        channel_first=True,
        softmax=False,
        device=device(),
        batch_size=max(64, len(xb)),
    )
