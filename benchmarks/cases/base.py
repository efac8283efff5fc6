"""What every case shares: the benchmark model (`Ctx`), what a case runs (`Bench`),
the case row (`Case`), and the helpers of agreement checks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

import jaxplain as jx

from .. import peers as P
from .. import twins


@dataclasses.dataclass
class Ctx:
    """One benchmark model: Flax module and weights, the jaxplain Model, the twin."""

    spec: twins.Spec
    quick: bool = False
    torch_model: Any = None
    twin_error: float | None = None
    twin_problem: str | None = None

    def __post_init__(self):
        self.module, self.variables = twins.flax_model(self.spec)
        self.model = jx.from_linen(self.module, self.variables)
        module = self.module
        # Split at the last conv layer (for the Grad-CAM limit); created once so jit caches.
        self.features_fn = lambda p, x: module.apply(p, x, method=twins.BenchCNN.last_conv)
        self.head_fn = lambda p, a: module.apply(p, a, method=twins.BenchCNN.head_from)
        self._images: dict[int, np.ndarray] = {}

    def images(self, n: int) -> np.ndarray:
        if n not in self._images:
            self._images[n] = twins.images(n, self.spec.size, seed=1)
        return self._images[n]

    def targets(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of every image (the same on both sides)."""
        return np.asarray(jnp.argmax(self.model(jnp.asarray(x)), -1)).astype(np.int32)

    def peer(self, lib: str) -> bool:
        """True when the twin is verified and `lib` imports."""
        return self.torch_model is not None and P.available(lib)


@dataclasses.dataclass
class Bench:
    """What one case runs on one model."""

    n_images: int
    n_evals: int
    settings: dict
    jaxplain: Callable[[], Any]
    x: np.ndarray
    target: np.ndarray
    memory: tuple[Callable, tuple] | None = None
    """`(fn, args)`: the method as a caller's `jax.jit` compiles it, for its XLA memory
    figure and the program timing; by default the arguments of an `_on_device` call."""
    peers: dict[str, Callable] = dataclasses.field(default_factory=dict)
    peer_evals: dict[str, int] = dataclasses.field(default_factory=dict)
    agreement: Callable[[Any, dict], list[dict]] | None = None
    rewrite_ties: Callable[[float], dict] | None = None
    """For a rewrites check above tolerance: `tie_check` of the method's path nodes with
    the rewrites on against off (`cases.gradients.tie_check`), given the tolerance."""
    reported_evals: bool = False
    note: str = ""

    def __post_init__(self):
        if self.memory is None and isinstance(self.jaxplain, functools.partial):
            self.memory = (self.jaxplain.func, self.jaxplain.args)  # the same device arrays


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the case table, keyed by the registry name of the method it times.

    `build(ctx, fn)` gets the benchmark model and the method's public function
    (`registry.get(name).fn`) and returns the `Bench` to run.
    """

    name: str
    kind: str  # "fwd" | "fwdbwd" | "fwdbwd_to_layer"
    build: Callable[[Ctx, Callable], Bench]
    archs: tuple[str, ...] = ("small",)
    quick: bool = False


def on_device(call: Callable, model: Any, *arrays: np.ndarray) -> Callable[[], Any]:
    """jaxplain's timed call, `call(model, *arrays)` with the arrays already on device.

    Every side gets its inputs (images, attributions, targets) as its own
    framework's arrays, built once: the limit runs on `jax.Array`s, the peers on
    torch tensors. From NumPy, 16 images of 32x32x3 cost the jitted program about
    0.15 ms more per call on CPU (a copy into the device buffer), 3-4% of a 4 ms
    saliency call. `Bench.memory` compiles the same call on the same arrays, the
    targets among its arguments (not constants folded into the program).
    """
    return functools.partial(call, model, *(jnp.asarray(a) for a in arrays))


def rel_err(a: Any, b: Any) -> float:
    """`max|a - b| / max|b|` over all entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def verdict(name: str, vs: str, err: float, tol: float, **extra) -> dict:
    return {"check": name, "vs": vs, "rel_err": err, "tol": tol, "pass": bool(err <= tol), **extra}


def same_image_values(name: str, peer: str, tol: float = 1e-4):
    """An agreement check: jaxplain's values vs the peer's NCHW values, one relative error."""

    def agree(out, peer_out):
        ref = twins.from_nchw(P.to_numpy(peer_out[peer]))
        return [verdict(name, peer, rel_err(out, ref), tol)]

    return agree
