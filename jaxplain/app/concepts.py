"""Concept example sets built from data that ships with installed packages (for TCAV).

- `stroke_width`: digits with thicker (grey dilation) or thinner (grey erosion) strokes;
- `oriented_bars`: bars at a chosen angle over faint noise;
- `texture_patches`: crops of scikit-image's brick, grass and gravel photographs;
- `digit_concepts`: the sets above, sized like the digits, and a pool of random digits.

Images are float32 in [0, 1], channels-last `(N, H, W, 1)` like `data.load_digits`.
"""

from __future__ import annotations

import numpy as np

TEXTURES = ("brick", "grass", "gravel")
"""scikit-image's texture photographs (`skimage.data`), shipped inside the package."""


def _grey_filter(images: np.ndarray, reduce) -> np.ndarray:
    """`reduce` (np.max or np.min) over each pixel's 3x3 neighbourhood (edge-padded)."""
    x = np.asarray(images, np.float32)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    shifted = [pad[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
    return reduce(np.stack(shifted), axis=0)


def stroke_width(images: np.ndarray, change: int) -> np.ndarray:
    """Digits with strokes `|change|` pixels thicker (`change > 0`: grey dilation by a
    3x3 square, repeated) or thinner (`change < 0`: grey erosion)."""
    if isinstance(change, bool) or not isinstance(change, (int, np.integer)):
        raise TypeError(f"change: expected an int, got {change!r}")
    x = np.asarray(images, np.float32)
    for _ in range(abs(int(change))):
        x = _grey_filter(x, np.max if change > 0 else np.min)
    return x


def oriented_bars(n: int, size: int, angle: float, *, width: float = 1.5, noise: float = 0.1,
                  seed: int = 0) -> np.ndarray:
    """`n` images `(n, size, size, 1)` of one bright bar at `angle` degrees (0: horizontal,
    90: vertical) through a random point near the centre, over uniform noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.deg2rad(angle)
    normal = (np.sin(t), np.cos(t))  # distance to a line of direction (cos t, -sin t)
    centre = (size - 1) / 2 + rng.uniform(-size / 4, size / 4, size=(n, 2))
    dist = np.abs((yy[None] - centre[:, 0, None, None]) * normal[1]
                  + (xx[None] - centre[:, 1, None, None]) * normal[0])
    bar = np.clip(1.0 - (dist - width / 2), 0.0, 1.0)
    out = np.maximum(bar, noise * rng.uniform(size=bar.shape))
    return out[..., None].astype(np.float32)


def texture_patches(name: str, n: int, size: int, *, scale: int = 4,
                    seed: int = 0) -> np.ndarray:
    """`n` random crops of scikit-image's `name` photograph (one of `TEXTURES`), each
    `size * scale` pixels wide, shrunk to `(size, size)` by averaging `scale x scale`
    blocks and scaled to [0, 1]: `(n, size, size, 1)`."""
    import skimage.data

    if name not in TEXTURES:
        raise ValueError(f"name: expected one of {TEXTURES}, got {name!r}")
    image = getattr(skimage.data, name)().astype(np.float32) / 255.0
    crop = size * scale
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, image.shape[0] - crop, n)
    cols = rng.integers(0, image.shape[1] - crop, n)
    crops = np.stack([image[r:r + crop, c:c + crop] for r, c in zip(rows, cols)])
    return crops.reshape(n, size, scale, size, scale).mean(axis=(2, 4))[..., None]


def digit_concepts(images: np.ndarray, n: int = 40, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Concept sets of `n` images sized like `images` (digits `(N, H, W, 1)`).

    Thick and thin strokes are drawn from `images` (any class), the bars and the
    textures are synthetic or photographs; every set has `n` examples.
    """
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 1 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images: expected square grey images (N, H, H, 1), got {x.shape}")
    rng = np.random.default_rng(seed)
    size = x.shape[1]
    pick = lambda: x[rng.choice(len(x), n, replace=False)]  # noqa: E731
    sets = {"thick strokes": stroke_width(pick(), 1), "thin strokes": stroke_width(pick(), -1)}
    for label, angle in (("horizontal bars", 0.0), ("vertical bars", 90.0),
                         ("diagonal bars", 45.0)):
        sets[label] = oriented_bars(n, size, angle, seed=int(rng.integers(1 << 30)))
    for name in TEXTURES:
        sets[name] = texture_patches(name, n, size, seed=int(rng.integers(1 << 30)))
    return sets
