"""The demo's catalogue of methods and its timing against the physical limit.

`method_specs` lists every method of the registry with demo settings (its
`demo=` entry: label, quick and full settings); `available` keeps those the
installed jaxplain offers. `LimitTimer` measures the physical limit of a
method: its model evaluations run as one jitted batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain as jx
from .._compile import tuned
from .._compile import jit
from . import methods as M

GRADIENT, CAM, PERTURBATION = "gradients", "CNN internals", "perturbation / Shapley"
SHOWN_FAMILY = {"gradients": GRADIENT, "cam": CAM, "layer": CAM, "perturbation": PERTURBATION,
                "shapley": PERTURBATION}
"""The report's family of each registry family."""


@dataclass
class Context:
    """What the method calls need: the model, the images, their targets and settings."""

    model: Any
    x: jax.Array
    target: jax.Array
    references: np.ndarray
    segments: np.ndarray
    layer: str
    key: jax.Array
    quick: bool

    def inputs(self) -> M.Inputs:
        return M.Inputs(self.model, self.x, self.target, self.key, self.segments,
                        self.references, self.layer)


@dataclass
class MethodSpec:
    name: str
    attr: str
    family: str
    backward: bool  # each model evaluation is a forward+backward pass
    call: Callable[[Context], Any]
    features: bool = False  # returns one value per segment
    quick: bool = True  # part of the --quick selection (one or two per family)
    center: bool = False  # shown relative to the image's mean (maps with a large offset)


def method_specs(quick: bool) -> list[MethodSpec]:
    """Every registered method with demo settings, sized for `quick` or full runs."""
    specs = []
    for salt, entry in enumerate(M.image_methods().values()):
        if entry.demo is None:
            continue
        config = M.settings(entry, quick)
        if config is None:  # not in the quick selection (`available` leaves it out)
            config = M.settings(entry, False)
        specs.append(MethodSpec(
            entry.demo.get("label", entry.name),
            entry.name,
            SHOWN_FAMILY[entry.family],
            entry.family in M.BACKWARD_FAMILIES,
            lambda c, e=entry, kw=config, i=salt: M.call(e, c.inputs(), kw, salt=i),
            features=M.returns_features(entry),
            quick=entry.demo.get("quick") is not None,
            center=bool(entry.demo.get("center", False)),
        ))
    return specs


def available(specs: list[MethodSpec], quick: bool = False) -> list[MethodSpec]:
    """The specs whose function exists in this jaxplain (only the quick selection with `quick`)."""
    return [s for s in specs if hasattr(jx, s.attr) and (s.quick or not quick)]


def _block(tree):
    return jax.tree.map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree
    )


class LimitTimer:
    """The physical limit: seconds for `n` model evaluations run as one jitted batch.

    `limit(n, backward)` times one forward (or forward+backward) pass of the model
    on a batch of `n` copies of the explained images (the best of a few runs, after
    compiling), once per distinct `n`. Batches above `max_batch` are extrapolated
    linearly from `max_batch`.
    """

    def __init__(
        self, model, x: jax.Array, target: jax.Array, repeats: int = 3, max_batch: int = 4096
    ):
        self.model, self.x, self.target = model, x, target
        self.repeats, self.max_batch = repeats, max_batch
        self._fwd = jit(lambda m, z: tuned(m, "grad")(z))  # as the methods run the model
        picked = lambda z, m, t: jnp.take_along_axis(tuned(m, "grad")(z), t[:, None], 1)  # noqa: E731
        self._fb = jit(jax.grad(lambda z, m, t: jnp.sum(picked(z, m, t))))
        self._cache: dict[tuple[int, bool], float] = {}

    def limit(self, n: int, backward: bool) -> float:
        if n > self.max_batch:
            return self.limit(self.max_batch, backward) * n / self.max_batch
        if (n, backward) not in self._cache:
            xb = jnp.resize(self.x, (n,) + self.x.shape[1:])
            tb = jnp.resize(self.target, (n,))
            f, args = (
                (self._fb, (xb, self.model, tb)) if backward else (self._fwd, (self.model, xb))
            )
            _block(f(*args))
            best = float("inf")
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                _block(f(*args))
                best = min(best, time.perf_counter() - t0)
            self._cache[(n, backward)] = best
        return self._cache[(n, backward)]


@dataclass
class Timing:
    name: str
    family: str
    first_s: float
    steady_s: float
    n_evals: int
    limit_s: float | None

    @property
    def ratio(self) -> float | None:
        return self.steady_s / self.limit_s if self.limit_s else None


def run_methods(
    specs: list[MethodSpec], ctx: Context, limits: LimitTimer | None, progress: bool = True
) -> tuple[dict[str, Any], list[Timing], dict[str, str]]:
    """Runs every spec twice (compile, then steady state); returns results, timings and errors."""
    from tqdm.auto import tqdm

    results, timings, errors = {}, [], {}
    for spec in tqdm(specs, desc="explaining", disable=not progress, leave=False):
        try:
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = _block(spec.call(ctx))
            steady = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - the demo reports and skips a failing method
            errors[spec.name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        n_evals = getattr(r, "n_evals", None)
        n = int(np.sum(np.asarray(n_evals))) if n_evals is not None else 0
        limit = limits.limit(n, spec.backward) if (limits is not None and n) else None
        results[spec.name] = r
        timings.append(Timing(spec.name, spec.family, first, steady, n, limit))
    return results, timings, errors


def pixel_maps(
    results: dict[str, Any], specs: list[MethodSpec], segments: np.ndarray, hw
) -> dict[str, np.ndarray]:
    """Every result as an `(N, H, W)` map (channels summed, features painted on their pixels).

    Maps of specs with `center=True` have their per-image mean subtracted.
    """
    return M.pixel_maps(results, {s.name: s.features for s in specs},
                        {s.name: s.center for s in specs}, segments, hw)
