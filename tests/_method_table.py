"""The shared method table: a valid, cheap call of every registered method.

Built from the registry (`jaxplain._core.registry`): an argument is made from its
name (`ARGS`), small settings come from the entry's `cheap`. `test_method_table.py`
runs every row through the same transformations (jit, vmap, keys, batch sizes,
compile counts, the CPU rewrites switch), so a new method is covered by
registering it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

import jaxplain as jx
from jaxplain import testing
from jaxplain._core import registry
from jaxplain.app.vit import ViT

N, H, W, C = 3, 8, 8, 3


@functools.lru_cache(maxsize=None)
def env() -> dict:
    m = testing.tiny_cnn(n_classes=3, features=(2,))
    x = np.asarray(testing.random_images(0, n=N, size=H))
    variables = m.init(jax.random.key(0), x[:1])
    rng = np.random.default_rng(1)
    vit = ViT(patch=4, dim=4, depth=1, heads=2, mlp=4, n_classes=3)
    vit_shapes = jax.eval_shape(vit.init, jax.random.key(0), x[:1])  # NumPy draws: no compile
    vit_rng = np.random.default_rng(2)
    return dict(
        model=jx.from_linen(m, variables),
        vit=jx.from_linen(vit, jax.tree.map(
            lambda s: (0.5 * vit_rng.normal(size=s.shape)).astype(np.float32), vit_shapes)),
        module=m,
        variables=variables,
        x=x,
        key=jax.random.key(0),
        segments=jx.grid_segments(H, W, 2),  # 4 features: exact Shapley stays cheap
        attributions=rng.normal(size=(N, H, W, C)).astype(np.float32),
        mask=np.zeros((N, H, W), bool) | (np.arange(W) < 3),
        references=np.asarray(testing.random_images(2, n=2, size=H)),
        directions=rng.normal(size=(N, 2, H, W, C)).astype(np.float32),
        concept_x=np.asarray(testing.random_images(3, n=4, size=H)) ** 2,  # darker images
        random_x=np.asarray(testing.random_images(4, n=8, size=H)),
    )


@functools.lru_cache(maxsize=None)
def explainer() -> Any:
    """An amortised Shapley explainer of the table's CNN on its 4 segments, untrained
    (`steps=0`: the uniform split of f(x) - f(baseline); no training program compiles)."""
    e = env()
    return jx.fit_amortised(e["model"], e["x"], e["segments"], key=jax.random.key(0), steps=0,
                            features=(2,), hidden=4, progress=False).explainer


ARGS: dict[str, Callable[[dict], Any]] = {  # argument name -> a valid value
    "model": lambda e: e["model"],
    "x": lambda e: e["x"],
    "target": lambda e: 1,
    "key": lambda e: e["key"],
    "segments": lambda e: e["segments"],
    "layer": lambda e: "conv0",
    "neuron": lambda e: 3,
    "references": lambda e: e["references"],
    "attributions": lambda e: e["attributions"],
    "explain": lambda e: jx.saliency,
    "mask": lambda e: e["mask"],
    "a": lambda e: e["attributions"],
    "b": lambda e: e["attributions"][::-1],
    "target_class": lambda e: 2,
    "directions": lambda e: e["directions"],
    "concept_x": lambda e: e["concept_x"],
    "random_x": lambda e: e["random_x"],
    "explainer": lambda e: explainer(),
}
FAMILY_ARGS: dict[str, dict[str, Callable[[dict], Any]]] = {  # family -> arguments it replaces
    "attention": {  # a tiny ViT (4 patches of 4x4 and a class token, one block of 2 heads)
        "model": lambda e: e["vit"],
        "layer": lambda e: "block0/norm1",  # the tokens the last attention reads
    },
}
PER_EXAMPLE = ("x", "attributions", "mask", "a", "b", "directions")
"""Arguments with one row per example (sliced for per-example calls, mapped by vmap)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One method's call: positional names, keyword arguments (built lazily)."""

    name: str
    entry: registry.Entry
    positional: tuple[str, ...]
    keywords: tuple[str, ...]

    def arguments(self, **overrides: Any) -> tuple[list, dict]:
        e = env()
        args = dict(ARGS, **FAMILY_ARGS.get(self.entry.family, {}))
        values = {n: args[n](e) for n in self.positional + self.keywords}
        values.update(self.entry.cheap)
        values.update(overrides)
        return [values.pop(n) for n in self.positional], values

    def call(self, **overrides: Any) -> Any:
        pos, kw = self.arguments(**overrides)
        return self.entry.fn(*pos, **kw)

    @property
    def takes(self) -> set[str]:
        return set(self.entry.signature.parameters)

    @property
    def model(self) -> Any:
        """The row's model (the table's CNN, or its family's own)."""
        return FAMILY_ARGS.get(self.entry.family, ARGS)["model"](env())

    def per_example(self) -> tuple[str, ...]:
        return tuple(n for n in self.positional + self.keywords if n in PER_EXAMPLE)


def rows() -> dict[str, Row]:
    out = {}
    for entry in registry.entries():
        sig = entry.signature
        positional, keywords = [], []
        for p in sig.parameters.values():
            required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            if not required and p.name != "attributions":
                continue
            if p.name not in ARGS:
                raise KeyError(f"{entry.name}: tests/_method_table.ARGS cannot build {p.name!r}")
            (positional if p.kind is p.POSITIONAL_OR_KEYWORD else keywords).append(p.name)
        out[entry.name] = Row(entry.name, entry, tuple(positional), tuple(keywords))
    return out


ROWS = rows()


@functools.lru_cache(maxsize=None)
def eager(name: str) -> Any:
    """The row's eager result with its cheap settings, computed once per test session
    (the method table and the plan tests share it)."""
    return ROWS[name].call()


def leaves(result: Any) -> list[np.ndarray]:
    """The numeric leaves of any result (Explanation, Curve, arrays, tuples)."""
    return [np.asarray(v) for v in jax.tree.leaves(result)
            if np.asarray(v).dtype.kind in "fiub"]


def assert_close(a: Any, b: Any, rtol: float = 2e-5, atol: float = 1e-6, what: str = "") -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb), what
    for u, v in zip(la, lb):
        assert u.shape == v.shape, (what, u.shape, v.shape)
        scale = max(float(np.nanmax(np.abs(u))) if u.size else 0.0, 1.0)
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol * scale, err_msg=what)
