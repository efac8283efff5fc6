"""Datasets that ship inside installed packages (no downloads at run time).

- `load_digits`: scikit-learn's 8x8 handwritten digits (1 797 images, 10 classes).
- `load_faces`: scikit-image's `lfw_subset` (100 faces and 100 non-faces, 25x25).
- `load_natural_images`: scikit-image's astronaut, coffee and chelsea photographs.
- `load_fashion_mnist`: Fashion-MNIST (70 000 images, 28x28, 10 classes) from the files
  of Debian's `dataset-fashion-mnist` package, when it is installed.
- `load_throughput_dataset`: Fashion-MNIST when present, else digits.

Images are float32 in [0, 1], batched and channels-last `(N, H, W, C)`.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Debian's `dataset-fashion-mnist` package puts its files (searched in order)."""

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class Dataset(NamedTuple):
    """A train/test split of images `(N, H, W, C)` float32 in [0, 1] and int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    name: str


def resize(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a batch `(N, H, W, C)` to `size` (antialiased when shrinking)."""
    import jax
    import jax.numpy as jnp

    hw = (size, size) if isinstance(size, int) else tuple(size)
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == hw:
        return images
    out = jax.image.resize(jnp.asarray(images), images.shape[:1] + hw + images.shape[3:], "linear")
    return np.clip(np.asarray(out), 0.0, 1.0)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def load_digits(size: int | None = None, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's digits as `(N, 8, 8, 1)` images (or resized to `size`).

    Args:
      size: optional side length to resize to (bilinear), e.g. 16.
      test_fraction: share of the 1 797 images held out for testing.
      seed: seed of the shuffled split.
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    if size is not None:
        x = resize(x, size)
    y = d.target.astype(np.int32)
    return Dataset(*_split(x, y, test_fraction, seed), tuple(str(i) for i in range(10)), "digits")


def load_faces(size: int | None = None, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-image's `lfw_subset`: 100 faces (label 1) and 100 non-faces (label 0), 25x25 gray."""
    from skimage import data

    x = data.lfw_subset().astype(np.float32)[..., None]
    if size is not None:
        x = resize(x, size)
    y = np.r_[np.ones(100), np.zeros(100)].astype(np.int32)
    return Dataset(*_split(x, y, test_fraction, seed), ("non-face", "face"), "lfw_subset")


NATURAL_IMAGES = ("astronaut", "coffee", "chelsea")


def load_natural_images(
    size: int | tuple[int, int] | None = 128, names: Sequence[str] = NATURAL_IMAGES
) -> dict[str, np.ndarray]:
    """scikit-image photographs as `{name: (H, W, 3) float32}`, center-cropped square.

    Args:
      size: side length after cropping to a square and resizing; `None` keeps the
        original images (not cropped).
      names: which of scikit-image's RGB images to load.
    """
    from skimage import data

    out = {}
    for name in names:
        img = np.asarray(getattr(data, name)(), np.float32) / 255.0
        if size is not None:
            h, w = img.shape[:2]
            s = min(h, w)
            img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            img = resize(img[None], size)[0]
        out[name] = img
    return out


def fashion_mnist_dir() -> Path | None:
    """The folder holding Fashion-MNIST's idx files, or `None` when not installed.

    `JAXPLAIN_FASHION_MNIST` overrides the search path; Debian's
    `dataset-fashion-mnist` package installs them under `/usr/share/datasets`.
    """
    env = os.environ.get("JAXPLAIN_FASHION_MNIST")
    for d in ((env,) if env else ()) + FASHION_MNIST_DIRS:
        p = Path(d)
        if all((p / f"{s}-images-idx3-ubyte.gz").is_file() for s in ("train", "t10k")):
            return p
    return None


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(root: str | Path | None = None, limit: int | None = None) -> Dataset:
    """Fashion-MNIST (60 000 train + 10 000 test, 28x28 gray) from the installed idx files.

    Args:
      root: folder with the four `*-idx?-ubyte.gz` files; defaults to `fashion_mnist_dir()`.
      limit: keep only the first `limit` images of each split.

    Raises:
      FileNotFoundError: the files are not installed (`apt-get install dataset-fashion-mnist`).
    """
    root = Path(root) if root is not None else fashion_mnist_dir()
    if root is None or not root.is_dir():
        raise FileNotFoundError(
            "Fashion-MNIST is not installed; `apt-get install dataset-fashion-mnist` provides it "
            f"under {FASHION_MNIST_DIRS[0]} (or set JAXPLAIN_FASHION_MNIST)"
        )
    parts = []
    for split in ("train", "t10k"):
        x = _read_idx(root / f"{split}-images-idx3-ubyte.gz")[:limit]
        y = _read_idx(root / f"{split}-labels-idx1-ubyte.gz")[:limit]
        parts += [(x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32)]
    return Dataset(*parts, FASHION_CLASSES, "fashion-mnist")


def load_throughput_dataset(limit: int | None = None) -> Dataset:
    """Fashion-MNIST when its files are installed, otherwise digits (a clean fallback)."""
    if fashion_mnist_dir() is not None:
        try:
            return load_fashion_mnist(limit=limit)
        except (OSError, ValueError):
            pass
    d = load_digits()
    if limit is not None:
        d = d._replace(
            x_train=d.x_train[:limit],
            y_train=d.y_train[:limit],
            x_test=d.x_test[:limit],
            y_test=d.y_test[:limit],
        )
    return d
