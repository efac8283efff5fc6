"""Benchmark CNNs in Flax Linen and their PyTorch twins with identical weights.

`small`: 3 conv layers (32/64/128) with 2x2 pooling between them, global average
pool, dense 10, on 32x32x3 inputs. `large`: 5 conv layers (32/32/64/128/256) on
64x64x3. Each comes with average- or max-pool between the conv layers.

The PyTorch twin is built by copying the Flax weights (kernels HWIO -> OIHW,
inputs NHWC -> NCHW). `check_twins` compares their logits on the benchmark inputs
and raises `TwinMismatch` when they disagree: the harness refuses to time peers
on a model that is not the same function.

PyTorch is optional: only the torch functions import it. The twin and its inputs
live on `torch_device()`: CUDA when torch sees a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ARCHS = {
    "small": dict(features=(32, 64, 128), size=32),
    "large": dict(features=(32, 32, 64, 128, 256), size=64),
}
N_CLASSES = 10


class TwinMismatch(RuntimeError):
    """The Flax model and its PyTorch twin do not compute the same function."""


class BenchCNN(nn.Module):
    """Conv(3x3, SAME)-ReLU blocks with 2x2 pooling between them, GAP, dense head.

    Layers are named `conv0..conv{k-1}` and `head`; `features` returns the last
    conv layer's output (before its ReLU) and `head_from` maps it to logits, so
    the Grad-CAM limit (forward + backward down to that layer) is exact.
    """

    features: tuple[int, ...] = (32, 64, 128)
    n_classes: int = N_CLASSES
    pool: str = "avg"

    def setup(self):
        self.convs = [
            nn.Conv(f, (3, 3), padding="SAME", name=f"conv{i}") for i, f in enumerate(self.features)
        ]
        self.dense = nn.Dense(self.n_classes, name="head")

    def _pool(self, x):
        if self.pool == "avg":
            return nn.avg_pool(x, (2, 2), (2, 2))
        return nn.max_pool(x, (2, 2), (2, 2))

    def last_conv(self, x):
        """Output of the last conv layer (pre-activation)."""
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self._pool(nn.relu(x))
        return x

    def head_from(self, a):
        """Logits from the last conv layer's output."""
        return self.dense(jnp.mean(nn.relu(a), axis=(1, 2)))

    def __call__(self, x):
        return self.head_from(self.last_conv(x))


@dataclasses.dataclass(frozen=True)
class Spec:
    """Which benchmark model: architecture and pooling."""

    arch: str = "small"
    pool: str = "avg"

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.pool}"

    @property
    def size(self) -> int:
        return ARCHS[self.arch]["size"]

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(ARCHS[self.arch]["features"])

    @property
    def last_layer(self) -> str:
        return f"conv{len(self.features) - 1}"


def flax_model(spec: Spec, seed: int = 0) -> tuple[BenchCNN, Any]:
    """The Linen module and its variables (deterministic in `seed`)."""
    module = BenchCNN(spec.features, N_CLASSES, spec.pool)
    x = jnp.zeros((1, spec.size, spec.size, 3), jnp.float32)
    variables = jax.jit(module.init)(jax.random.key(seed), x)  # one compile, not one per op
    # Non-zero biases, so that a misplaced bias would be caught by the twin check.
    rng = np.random.default_rng(seed + 1)
    params = dict(variables["params"])
    for name in sorted(params):
        layer = dict(params[name])
        b = np.asarray(layer["bias"])  # float32 sums on the host: no compile per shape
        layer["bias"] = jnp.asarray(b + np.asarray(0.05 * rng.standard_normal(b.shape), b.dtype))
        params[name] = layer
    variables = {**variables, "params": params}
    return module, variables


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic images in [0, 1], NHWC float32, smooth enough to look image-like."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(n, size // 4, size // 4, 3))
    x = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    x = 0.8 * x + 0.2 * rng.uniform(size=x.shape)
    return x.astype(np.float32)


# ---- PyTorch twin ---------------------------------------------------------------------


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def torch_device() -> str:
    """Where the peers run: `"cuda"` when torch sees a GPU, else `"cpu"`
    (`JAXPLAIN_BENCH_TORCH_DEVICE` overrides it)."""
    forced = os.environ.get("JAXPLAIN_BENCH_TORCH_DEVICE", "").strip()
    if forced:
        return forced
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_twin(spec: Spec, variables: Any, *, gap_module: bool = False):
    """A `torch.nn.Module` computing the same function as `BenchCNN` with `variables`.

    It takes NCHW inputs. Submodules: `conv0..`, `relu0..`, `pool0..`, `head`; the
    last conv module is the Grad-CAM layer (same point as `BenchCNN.last_conv`).
    `gap_module=True` makes the global average pool a module (`gap`, an
    `AdaptiveAvgPool2d`) instead of a `mean`: Captum's LRP propagates relevance
    only through modules, and through a functional op it passes the gradient.
    """
    import torch
    from torch import nn as tnn

    params = variables["params"]
    k = len(spec.features)

    class TorchCNN(tnn.Module):
        def __init__(self):
            super().__init__()
            chans = (3,) + spec.features
            for i in range(k):
                conv = tnn.Conv2d(chans[i], chans[i + 1], 3, padding=1)
                setattr(self, f"conv{i}", conv)
                setattr(self, f"relu{i}", tnn.ReLU())
                if i < k - 1:
                    pool = tnn.AvgPool2d(2) if spec.pool == "avg" else tnn.MaxPool2d(2)
                    setattr(self, f"pool{i}", pool)
            self.head = tnn.Linear(chans[-1], N_CLASSES)
            self.gap = tnn.AdaptiveAvgPool2d(1) if gap_module else None

        def forward(self, x):
            for i in range(k):
                x = getattr(self, f"relu{i}")(getattr(self, f"conv{i}")(x))
                if i < k - 1:
                    x = getattr(self, f"pool{i}")(x)
            if self.gap is not None:
                return self.head(self.gap(x).flatten(1))
            return self.head(x.mean(dim=(2, 3)))

    model = TorchCNN()
    with torch.no_grad():
        for i in range(k):
            conv = getattr(model, f"conv{i}")
            kern = np.asarray(params[f"conv{i}"]["kernel"])  # (H, W, I, O)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kern.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(np.array(params[f"conv{i}"]["bias"])))
        model.head.weight.copy_(
            torch.from_numpy(np.ascontiguousarray(np.asarray(params["head"]["kernel"]).T))
        )
        model.head.bias.copy_(torch.from_numpy(np.array(params["head"]["bias"])))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(torch_device())


def to_nchw(x: np.ndarray, device: str | None = None):
    """NHWC NumPy images -> a contiguous NCHW float32 torch tensor on `device`
    (default `torch_device()`)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
    return t.to(device or torch_device())


def from_nchw(t) -> np.ndarray:
    """A NCHW torch tensor (or array) -> NHWC NumPy."""
    a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
    return a.transpose(0, 2, 3, 1)


def check_twins(flax_logits_fn, torch_model, x: np.ndarray, tol: float = 1e-5,
                device: str | None = None) -> float:
    """Max |logit difference| relative to the logit scale; raises `TwinMismatch` above `tol`.

    Args:
      flax_logits_fn: `f(x_nhwc) -> logits` (the jaxplain side).
      torch_model: the twin, taking NCHW.
      x: NHWC images.
      tol: largest accepted `max|a - b| / max(1, max|a|)`.
      device: where the twin lives (default `torch_device()`).
    """
    import torch

    a = np.asarray(flax_logits_fn(jnp.asarray(x)))
    with torch.no_grad():
        b = torch_model(to_nchw(x, device)).cpu().numpy()
    if a.shape != b.shape:
        raise TwinMismatch(f"twin logits have shapes {a.shape} (flax) and {b.shape} (torch)")
    err = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))
    if not np.isfinite(err) or err > tol:
        raise TwinMismatch(
            f"the PyTorch twin disagrees with the Flax model: max relative logit error {err:.3g} > {tol:g}; "
            f"refusing to time peers on a different function"
        )
    return err


def small_cnn_twin(module: Any, variables: Any):
    """A `torch.nn.Module` computing the same function as the zoo's `SmallCNN` with `variables`.

    It takes NCHW inputs. Submodules `conv0..` are the Flax layers of the same names
    (their outputs are the pre-ReLU activations jaxplain reads at `layer="conv<i>"`),
    and `head` the dense layer. `head="flatten"` flattens in the Flax (NHWC) order, so
    the dense kernel is copied as is.
    """
    import torch
    from torch import nn as tnn

    params = variables["params"]
    feats = tuple(module.features)

    class TorchSmallCNN(tnn.Module):
        def __init__(self):
            super().__init__()
            chans = (int(params["conv0"]["kernel"].shape[2]),) + feats
            for i in range(len(feats)):
                setattr(self, f"conv{i}", tnn.Conv2d(chans[i], chans[i + 1], 3, padding=1))
            self.head = tnn.Linear(int(params["head"]["kernel"].shape[0]), module.n_classes)

        def forward(self, x):
            for i in range(len(feats)):
                x = torch.relu(getattr(self, f"conv{i}")(x))
                if i in module.pool_after:
                    x = torch.nn.functional.avg_pool2d(x, 2)
            if module.head == "gap":
                x = x.mean(dim=(2, 3))
            else:
                x = x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as Flax's reshape
            return self.head(x)

    model = TorchSmallCNN()
    with torch.no_grad():
        for i in range(len(feats)):
            conv = getattr(model, f"conv{i}")
            kern = np.asarray(params[f"conv{i}"]["kernel"])  # (H, W, I, O)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kern.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(np.array(params[f"conv{i}"]["bias"])))
        model.head.weight.copy_(
            torch.from_numpy(np.ascontiguousarray(np.asarray(params["head"]["kernel"]).T)))
        model.head.bias.copy_(torch.from_numpy(np.array(params["head"]["bias"])))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
