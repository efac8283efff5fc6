"""The amortised explainer's network, its static description, and the pieces of its loss.

The explainer maps an image `(H, W, C)` to raw values `(d, K)`: one value per
feature and model output. Efficiency is then enforced exactly by the additive
normalisation `phi += (f(x) - f(baseline) - sum phi) / d` (Jethani et al. 2022,
"additive efficient normalization"), both in training and at inference, so the
network only has to learn how the gain is shared, never its total.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._core import batching
from .._core.types import HIGHEST
from ..perturbation.engine import uniform_from_bits

POOL_ABOVE = 8
"""The network halves the feature maps (2x2 average pooling) after a conv layer while
both sides are larger than this, so its dense head sees at most about 8x8 positions
(the parameter count stays small for large images)."""


class ExplainerNet(nn.Module):
    """A small CNN: 3x3 conv + ReLU blocks (pooled while larger than `POOL_ABOVE`), a
    hidden dense layer, and a dense output of `d * n_outputs` raw values.

    Attributes:
      d: number of features (segments).
      n_outputs: model outputs explained jointly (classes; 1 for scalar models).
      features: channels of the conv layers.
      hidden: width of the hidden dense layer.
    """

    d: int
    n_outputs: int
    features: tuple[int, ...] = (32, 32)
    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[0]
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), name=f"conv{i}")(x))
            if x.shape[1] > POOL_ABOVE and x.shape[2] > POOL_ABOVE:
                x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(n, -1)))
        out = nn.Dense(self.d * self.n_outputs, name="out",
                       kernel_init=nn.initializers.zeros)(x)  # starts at the uniform split
        return out.reshape(n, self.d, self.n_outputs)


class Spec(NamedTuple):
    """The static part of an explainer (hashable: the jit cache key of its programs).

    Attributes:
      net: the `ExplainerNet`.
      input_shape: one example's shape `(H, W, C)`.
      mode: the baseline mode (`"blur"`, `"mean"`) or None for a fixed baseline image.
    """

    net: ExplainerNet
    input_shape: tuple[int, ...]
    mode: str | None

    @property
    def d(self) -> int:
        return self.net.d

    @property
    def n_outputs(self) -> int:
        return self.net.n_outputs


def efficient(raw: jax.Array, gain: jax.Array) -> jax.Array:
    """Additive efficient normalisation: `raw (N, d, K) + (gain (N, K) - sum raw) / d`,
    whose sum over features is `gain` exactly (up to float32 round-off)."""
    d = raw.shape[1]
    return raw + ((gain - raw.sum(1)) / d)[:, None, :]


def outputs_2d(out: jax.Array) -> jax.Array:
    """Model outputs as `(B, K)` (scalar-output models: K = 1), in at least float32."""
    out = out.reshape(out.shape[0], -1)
    return out.astype(batching.accumulator(out.dtype))


def size_probabilities(d: int) -> np.ndarray:
    """`p(s)` for coalition sizes `s = 1..d-1` under the Shapley kernel:
    `p(s) ∝ (d - 1) / (s (d - s))` (each size's total kernel weight; subsets of one
    size are then equally likely)."""
    w = np.array([(d - 1) / (s * (d - s)) for s in range(1, d)], np.float64)
    return (w / w.sum()).astype(np.float32)


def draws_per_row(n_coalitions: int, paired: bool) -> int:
    """Coalitions drawn per image (the others are their complements when paired)."""
    return n_coalitions // 2 if paired else n_coalitions


def coalitions_from_bits(bits: jax.Array, d: int, paired: bool) -> jax.Array:
    """`(rows, S, d)` bool coalitions drawn from the Shapley kernel, from random words
    `bits (rows, draws, d + 1)` uint32 (`draws_per_row`): the first word picks the size
    (`size_probabilities`), the others a uniformly random subset of that size (the
    features whose rank among them is below the size).

    With `paired`, the second half holds the complements of the first (the pair's
    errors cancel where the model is near additive, as in KernelSHAP). One draw of
    words per step keeps the program small: each `jax.random` call is a threefry
    hash, slow for XLA:CPU to compile. Ranks come from pairwise comparisons, not a
    sort (also slow to compile); equal words would only make a coalition larger.
    """
    cdf = jnp.asarray(np.cumsum(size_probabilities(d))[:-1])
    sizes = 1 + jnp.sum(uniform_from_bits(bits[..., :1]) >= cdf, axis=-1)
    u = bits[..., 1:]
    ranks = jnp.sum(u[..., None, :] < u[..., :, None], axis=-1)
    masks = ranks < sizes[..., None]
    return jnp.concatenate([masks, ~masks], axis=1) if paired else masks


def coalition_loss(phi: jax.Array, masks: jax.Array, values: jax.Array,
                   f0: jax.Array) -> jax.Array:
    """Mean squared error of the additive prediction `f0 + sum_{j in S} phi_j` of the
    coalition values: `phi (B, d, K)`, `masks (B, S, d)`, `values (B, S, K)`, `f0 (B, K)`.

    With coalitions drawn from the Shapley kernel (`sample_coalitions`) this is
    KernelSHAP's weighted least squares; its minimiser under the efficiency
    constraint is the Shapley value (Lundberg & Lee 2017; Jethani et al. 2022).
    """
    pred = jnp.einsum("bsd,bdk->bsk", masks.astype(phi.dtype), phi, precision=HIGHEST)
    return jnp.mean(jnp.square(values - f0[:, None, :] - pred))


def n_parameters(params) -> int:
    return int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))
