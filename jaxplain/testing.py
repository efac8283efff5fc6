"""Test utilities: compile counting and small reference models with known answers.

Used by jaxplain's own tests and benchmarks, and handy for users who test code
built on jaxplain.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
from flax import nnx

from ._core.models import Model

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles() -> Iterator[dict]:
    """Counts XLA compilations in the block (JAX's own monitoring events).

    >>> f = jax.jit(lambda x: x + 1)
    >>> with count_compiles() as c:
    ...     _ = f(1.0); _ = f(2.0)
    >>> c["n"]
    1
    """
    counter = {"n": 0, "seconds": 0.0}

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            counter["n"] += 1
            counter["seconds"] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def refused_before_compiling(fn, kwargs: dict, cases) -> None:
    """Asserts that each of `cases`, `(changes, exception class, pattern)`, makes
    `fn(**{**kwargs, **changes})` raise that class with a message `re.search`-ing the
    pattern, and that no case compiled an XLA program first.

    >>> def f(n=1):
    ...     if n < 1:
    ...         raise ValueError(f"n: expected at least 1, got {n}")
    >>> refused_before_compiling(f, {}, [(dict(n=0), ValueError, "n: expected")])
    """
    with count_compiles() as count:
        for changes, cls, pattern in cases:
            try:
                fn(**{**kwargs, **changes})
            except cls as e:
                if not re.search(pattern, str(e)):
                    raise AssertionError(f"{changes}: {str(e)!r} does not match {pattern!r}")
            else:
                raise AssertionError(f"{changes}: expected {cls.__name__}, nothing raised")
    if count["n"]:
        raise AssertionError(f"{count['n']} program(s) compiled before the refusals")


def _linear_apply(params, x):
    w, b = params
    return x.reshape(x.shape[0], -1) @ w.reshape(-1, w.shape[-1]) + b[None]


def linear_model(w: jax.Array, b: jax.Array | float = 0.0) -> Model:
    """`f(x) = flatten(x) @ flatten(w) + b`: one output per column of `w`.

    `w` has shape `x.shape[1:] + (K,)`; attributions have closed forms (IG and
    Shapley values equal `w[..., k] * (x - baseline)`).
    """
    w = jnp.asarray(w)
    b = jnp.broadcast_to(jnp.asarray(b, w.dtype), (w.shape[-1],))
    return Model(_linear_apply, (w, b))


class TinyCNN(nn.Module):
    """Conv-relu blocks (pooling between them), global average pool, dense head."""

    features: tuple[int, ...] = (4, 8)
    n_classes: int = 3
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), name=f"conv{i}")(x))
            if i < len(self.features) - 1:
                x = nn.avg_pool(x, (2, 2), (2, 2)) if self.pool == "avg" else nn.max_pool(x, (2, 2), (2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.n_classes, name="head")(x)


class TinyCNNNNX(nnx.Module):
    """The NNX twin of `TinyCNN`."""

    def __init__(self, in_channels: int, features: tuple[int, ...], n_classes: int, pool: str, *, rngs):
        chans = (in_channels,) + tuple(features)
        self.convs = nnx.List([nnx.Conv(chans[i], chans[i + 1], (3, 3), rngs=rngs) for i in range(len(features))])
        self.head = nnx.Linear(chans[-1], n_classes, rngs=rngs)
        self.pool = pool

    def __call__(self, x):
        for i, conv in enumerate(self.convs):
            x = nnx.relu(conv(x))
            if i < len(self.convs) - 1:
                pool = nnx.avg_pool if self.pool == "avg" else nnx.max_pool
                x = pool(x, (2, 2), (2, 2))
        return self.head(jnp.mean(x, axis=(1, 2)))


def tiny_cnn(n_classes: int = 3, features: tuple[int, ...] = (4, 8), pool: str = "avg") -> TinyCNN:
    """A small Linen CNN for tests (`init` it with a key and a batch)."""
    return TinyCNN(tuple(features), n_classes, pool)


def tiny_cnn_nnx(linen_variables, n_classes: int = 3, features: tuple[int, ...] = (4, 8), pool: str = "avg",
                 in_channels: int = 3) -> TinyCNNNNX:
    """The NNX twin of `tiny_cnn`, loaded with the Linen weights (same outputs)."""
    m = TinyCNNNNX(in_channels, tuple(features), n_classes, pool, rngs=nnx.Rngs(0))
    p = linen_variables["params"]
    for i, conv in enumerate(m.convs):
        conv.kernel[...] = p[f"conv{i}"]["kernel"]
        conv.bias[...] = p[f"conv{i}"]["bias"]
    m.head.kernel[...] = p["head"]["kernel"]
    m.head.bias[...] = p["head"]["bias"]
    return m


def _attention_apply(params, x):
    embed, layers, head = params
    n, h, w, c = x.shape
    p = int(round((embed.shape[0] // c) ** 0.5))
    t = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    t = t.reshape(n, (h // p) * (w // p), p * p * c) @ embed
    for wq, wk, wv in layers:
        scores = (t @ wq) @ (t @ wk).swapaxes(1, 2) / jnp.sqrt(float(wq.shape[-1]))
        t = t + jax.nn.softmax(scores, axis=-1) @ (t @ wv)
    return jnp.mean(t, axis=1) @ head


def tiny_attention(key: int = 0, n_classes: int = 3, dim: int = 4, depth: int = 2, patch: int = 2,
                   channels: int = 3) -> Model:
    """A hand-written attention model (no Flax): patches, `depth` single-head layers
    `t + softmax(q k^T / sqrt(dim)) v`, mean over tokens, linear head.

    Inputs are images `(N, H, W, channels)` with `H` and `W` multiples of `patch`;
    there is no class token (the patch tokens come first: `prefix=0`).
    Parameters: `(embed, [(wq, wk, wv), ...], head)`.
    """
    rng = np.random.default_rng(key)

    def mat(*shape):
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), jnp.float32)

    layers = [(mat(dim, dim), mat(dim, dim), mat(dim, dim)) for _ in range(depth)]
    return Model(_attention_apply, (mat(patch * patch * channels, dim), layers, mat(dim, n_classes)))


def random_images(key: int, n: int = 2, size: int = 8, channels: int = 3) -> jax.Array:
    """Deterministic test images in [0, 1]."""
    rng = np.random.default_rng(key)
    return jnp.asarray(rng.uniform(size=(n, size, size, channels)), jnp.float32)


def coverage(e, exact, level: float = 0.95) -> float:
    """The share of `e.interval(level)`s that contain the exact values `exact` (broadcast
    against `e.values`, e.g. one game's Shapley values against a vmap over keys).

    >>> import numpy as np, jaxplain as jx
    >>> e = jx.Explanation(np.array([[0.0, 3.0]]), stderr=np.ones((1, 2)))
    >>> coverage(e, np.zeros(2))
    0.5
    """
    lo, hi = (np.asarray(a, np.float64) for a in e.interval(level))
    exact = np.asarray(exact, np.float64)
    return float(np.mean((lo <= exact) & (exact <= hi)))
