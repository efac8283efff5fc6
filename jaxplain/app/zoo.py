"""Small Flax models for the demo and examples: definition, optax training, checkpoints.

The CNN is defined here, the vision transformer in `vit.py`; both train and cache
through `train_classifier` (`vit_classifier` picks the data and schedule of the ViT).

A checkpoint is one file: a JSON header line (architecture and input shape) followed
by the `flax.serialization` bytes of the variables, so `load` rebuilds the model
from the file alone (`jaxplain explain --model CHECKPOINT` relies on that).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from .._compile import jit
from .._core.models import Model, from_linen
from .vit import ViT


class SmallCNN(nn.Module):
    """Conv blocks (ReLU, 2x2 average pooling after the layers in `pool_after`), dense head.

    `head="flatten"` flattens the last feature map into the dense layer (learns fast on
    small images); `head="gap"` averages it first (global average pooling).

    Layers are named `conv0, conv1, ...` and `head`; Grad-CAM usually targets the
    last conv layer.
    """

    features: tuple[int, ...] = (16, 32, 32)
    n_classes: int = 10
    pool_after: tuple[int, ...] = (1,)
    head: str = "flatten"

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), name=f"conv{i}")(x))
            if i in self.pool_after:
                x = nn.avg_pool(x, (2, 2), (2, 2))
        x = jnp.mean(x, axis=(1, 2)) if self.head == "gap" else x.reshape(x.shape[0], -1)
        return nn.Dense(self.n_classes, name="head")(x)


class Trained(NamedTuple):
    """A trained classifier: the module, its variables, the `Model` and its test accuracy."""

    module: SmallCNN | ViT
    variables: Any
    model: Model
    accuracy: float
    seconds: float
    cached: bool

    @property
    def last_conv(self) -> str:
        return f"conv{len(self.module.features) - 1}"


def _config(module: SmallCNN | ViT, input_shape: Sequence[int]) -> dict:
    if isinstance(module, ViT):
        return {"arch": "ViT", "patch": module.patch, "dim": module.dim, "depth": module.depth,
                "heads": module.heads, "mlp": module.mlp, "n_classes": module.n_classes,
                "input_shape": list(input_shape)}
    return {
        "arch": "SmallCNN",
        "features": list(module.features),
        "n_classes": module.n_classes,
        "pool_after": list(module.pool_after),
        "head": module.head,
        "input_shape": list(input_shape),
    }


def save(
    path: str | Path,
    module: SmallCNN,
    variables: Any,
    input_shape: Sequence[int],
    meta: dict | None = None,
) -> Path:
    """Writes a self-describing checkpoint (JSON header line + flax bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(_config(module, input_shape), **(meta or {}))
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(serialization.to_bytes(jax.device_get(variables)))
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> tuple[SmallCNN | ViT, Any, dict]:
    """Reads a checkpoint written by `save`: `(module, variables, header)`."""
    path = Path(path)
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        blob = f.read()
    if header.get("arch") == "ViT":
        module = ViT(*(header[k] for k in ("patch", "dim", "depth", "heads", "mlp", "n_classes")))
    elif header.get("arch") == "SmallCNN":
        module = SmallCNN(
            tuple(header["features"]),
            header["n_classes"],
            tuple(header["pool_after"]),
            header.get("head", "flatten"),
        )
    else:
        raise ValueError(f"model: {path} is not a jaxplain SmallCNN or ViT checkpoint "
                         f"(header {header})")
    shape = (1,) + tuple(header["input_shape"])
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    variables = serialization.from_bytes(template, blob)
    return module, variables, header


def default_cache_dir() -> Path:
    """`$JAXPLAIN_CACHE` or `~/.cache/jaxplain`."""
    return Path(os.environ.get("JAXPLAIN_CACHE", Path.home() / ".cache" / "jaxplain"))


def train_classifier(
    module: SmallCNN,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    epochs: int = 10,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    augment: Callable | None = None,
    cache: str | Path | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> Trained:
    """Trains `module` with Adam on softmax cross-entropy, or loads it from `cache`.

    Args:
      module: a `SmallCNN` or a `ViT`.
      x_train, y_train, x_test, y_test: images `(N, H, W, C)` and int labels.
      epochs, batch, lr, seed: training schedule (cosine-decayed Adam).
      augment: optional jittable `augment(key, x_batch) -> x_batch`.
      cache: a folder; weights are saved under a name derived from the data and the
        schedule, and loaded instead of retraining when present. Processes sharing
        the folder train each model once (the others wait on a lock, then load it).
      progress: called as `progress(epoch, loss)` after every epoch.

    Returns:
      A `Trained` tuple.
    """
    t0 = time.perf_counter()
    input_shape = tuple(x_train.shape[1:])
    if cache is None:
        return _fit(module, x_train, y_train, x_test, y_test, epochs, batch, lr, seed, augment,
                    progress, t0, None)
    h = hashlib.sha1()
    h.update(json.dumps([_config(module, input_shape), epochs, batch, lr, seed]).encode())
    h.update(np.ascontiguousarray(x_train[:64]).tobytes())
    h.update(np.int64(len(x_train)).tobytes())
    arch = _config(module, input_shape)["arch"].lower()
    path = Path(cache) / f"{arch}-{h.hexdigest()[:12]}.ckpt"
    with _exclusive(path):  # processes sharing a cache train each model once
        if path.is_file():
            try:
                _, variables, header = load(path)
                return Trained(module, variables, from_linen(module, variables),
                               header.get("accuracy", float("nan")),
                               time.perf_counter() - t0, True)
            except Exception:  # noqa: BLE001 - a corrupt cache retrains
                pass
        return _fit(module, x_train, y_train, x_test, y_test, epochs, batch, lr, seed, augment,
                    progress, t0, path)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Holds an advisory lock on `path`'s lock file (POSIX; elsewhere no lock): a second
    process training the same model waits, then loads the first one's weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, at worst the model is trained twice
        yield
        return
    with open(path.with_suffix(".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fit(module, x_train, y_train, x_test, y_test, epochs, batch, lr, seed, augment, progress,
         t0, path) -> Trained:
    """The training loop of `train_classifier` (saving to `path` when given)."""
    input_shape = tuple(x_train.shape[1:])
    key = jax.random.key(seed)
    variables = module.init(key, jnp.asarray(x_train[:1]))
    n = len(x_train)
    steps_per_epoch = max(1, n // batch)
    schedule = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)
    opt = optax.adam(schedule)
    state = opt.init(variables)

    def loss_fn(v, xb, yb):
        logits = module.apply(v, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jit
    def step(v, s, k, xb, yb):
        if augment is not None:
            xb = augment(k, xb)
        loss, g = jax.value_and_grad(loss_fn)(v, xb, yb)
        upd, s = opt.update(g, s, v)
        return optax.apply_updates(v, upd), s, loss

    rng = np.random.default_rng(seed)
    for e in range(epochs):
        perm = rng.permutation(n)
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            key, sub = jax.random.split(key)
            variables, state, loss = step(variables, state, sub, x_train[idx], y_train[idx])
            losses.append(loss)
        if progress is not None:
            progress(e, float(jnp.mean(jnp.stack(losses))))
    model = from_linen(module, variables)
    acc = accuracy(model, x_test, y_test)
    if path is not None:
        save(path, module, variables, input_shape, {"accuracy": acc})
    return Trained(module, variables, model, acc, time.perf_counter() - t0, False)


def accuracy(model: Callable, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
    """Top-1 accuracy of `model` on `(x, y)`."""
    f = jit(lambda m, xb: jnp.argmax(m(xb), -1))
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((np.asarray(f(model, jnp.asarray(x[i : i + batch]))) == y[i : i + batch]).sum())
    return hits / max(1, len(x))


def shift_augment(max_shift: int = 1) -> Callable:
    """A jittable augmentation: random integer translations by up to `max_shift` pixels."""

    def aug(key, xb):
        k1, k2 = jax.random.split(key)
        dy = jax.random.randint(k1, (), -max_shift, max_shift + 1)
        dx = jax.random.randint(k2, (), -max_shift, max_shift + 1)
        return jnp.roll(xb, (dy, dx), axis=(1, 2))

    return aug


VIT_SETTINGS = {  # data set -> (patch, epochs, learning rate, batch): about 30 s of CPU each
    "digits": (2, 40, 2e-3, 32),
    "fashion-mnist": (7, 4, 2e-3, 64),
}


def vit_classifier(dataset: Any = None, *, limit: int = 10_000, epochs: int | None = None,
                   cache: str | Path | None = None) -> tuple[Trained, Any]:
    """The zoo's vision transformer, trained (or loaded from `cache`), and its data.

    The data are Fashion-MNIST when Debian's `dataset-fashion-mnist` is installed
    (the first `limit` images of each split, patches of 7x7: 16 patch tokens),
    otherwise scikit-learn's digits (patches of 2x2: 16 patch tokens), or the
    `dataset` given. Two pre-norm blocks of width 32 with 4 heads, a class token;
    Adam with cosine decay, `epochs` (default) and batch size from `VIT_SETTINGS`.

    Measured on a 2-core CPU machine shared with other jobs (so the wall times are
    upper bounds; the CPU seconds are the steadier figure):

    - Fashion-MNIST (10 000 training images, 4 epochs of 64): 80.9% test accuracy on
      10 000 test images, 26 s of CPU, 44 s wall at load average 6 (91 s at 11).
      6 epochs of 128 at 3e-3 gave 81.6% for 32 s of CPU: not worth the time.
    - digits (1 348 training images, 40 epochs of 32): 94.0% test accuracy on 449,
      32 s of CPU, 74 s wall at load average 11 (30 epochs of 64 gave 92%, and shift
      augmentation made it worse).

    Returns:
      `(Trained, Dataset)`.
    """
    from .data import load_throughput_dataset

    if dataset is None:
        dataset = load_throughput_dataset(limit=limit)
    patch, default_epochs, lr, batch = VIT_SETTINGS.get(dataset.name, VIT_SETTINGS["digits"])
    epochs = default_epochs if epochs is None else epochs
    h, w = dataset.x_train.shape[1:3]
    if h % patch or w % patch:
        patch = 1
    module = ViT(patch=patch, dim=32, depth=2, heads=4, mlp=64, n_classes=len(dataset.classes))
    trained = train_classifier(module, dataset.x_train, dataset.y_train, dataset.x_test,
                               dataset.y_test, epochs=epochs, lr=lr, batch=batch, cache=cache)
    return trained, dataset
