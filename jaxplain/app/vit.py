"""A small vision transformer for the demo, the examples and the attention methods.

Patch embedding (a convolution whose kernel and stride are the patch size), a
learned class token and position embedding, pre-norm blocks
(`x + attn(norm(x))`, `x + mlp(norm(x))`) built on Flax's own attention modules
(`nn.MultiHeadDotProductAttention` in Linen, `nnx.MultiHeadAttention` in NNX), a
final norm and a linear head on the class token.

Layers are named `embed`, `block0, block1, ...` (each with `norm1`, `attn`,
`norm2`, `mlp_in`, `mlp_out`), `norm` and `head`; the output of a block is the
token sequence `(N, 1 + patches, dim)` that `jaxplain.token_grad_cam` reads.
`nnx_from_linen` builds the NNX twin of trained Linen weights (same numbers).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class Block(nn.Module):
    """One pre-norm transformer block (Linen)."""

    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        h = nn.LayerNorm(name="norm1")(x)
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attn")(h)
        h = nn.LayerNorm(name="norm2")(x)
        h = nn.Dense(dim, name="mlp_out")(nn.gelu(nn.Dense(self.mlp, name="mlp_in")(h)))
        return x + h


class ViT(nn.Module):
    """A vision transformer on `(N, H, W, C)` images (Linen); see the module docstring.

    Attributes:
      patch: patch side (H and W must be multiples of it).
      dim: token width; heads: attention heads per block; depth: number of blocks;
      mlp: hidden width of the blocks' MLP; n_classes: outputs.
    """

    patch: int = 2
    dim: int = 32
    depth: int = 2
    heads: int = 4
    mlp: int = 64
    n_classes: int = 10

    @nn.compact
    def __call__(self, x):
        p = self.patch
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", name="embed")(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), x], axis=1)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1,) + x.shape[1:])
        for i in range(self.depth):
            x = Block(self.heads, self.mlp, name=f"block{i}")(x)
        x = nn.LayerNorm(name="norm")(x)
        return nn.Dense(self.n_classes, name="head")(x[:, 0])


class NNXBlock(nnx.Module):
    """One pre-norm transformer block (NNX)."""

    def __init__(self, dim: int, heads: int, mlp: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, mlp, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.norm2(x))))


class NNXViT(nnx.Module):
    """The NNX version of `ViT` (same layers, same names, same numbers for the same weights)."""

    def __init__(self, in_channels: int, tokens: int, *, patch: int = 2, dim: int = 32,
                 depth: int = 2, heads: int = 4, mlp: int = 64, n_classes: int = 10,
                 rngs: nnx.Rngs):
        self.patch, self.dim = patch, dim
        self.embed = nnx.Conv(in_channels, dim, (patch, patch), strides=(patch, patch),
                              padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, dim)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, tokens, dim)))
        self.blocks = nnx.List([NNXBlock(dim, heads, mlp, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, n_classes, rngs=rngs)

    def __call__(self, x):
        x = self.embed(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, self.dim))
        x = jnp.concatenate([cls, x], axis=1) + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def nnx_from_linen(module: ViT, variables, input_shape) -> NNXViT:
    """The `NNXViT` twin of a Linen `ViT` and its variables (copies the weights).

    `input_shape` is one image's `(H, W, C)`.
    """
    h, w, c = input_shape
    tokens = 1 + (h // module.patch) * (w // module.patch)
    net = nnx.eval_shape(lambda: NNXViT(  # shapes only: the weights are all copied below
        c, tokens, patch=module.patch, dim=module.dim, depth=module.depth, heads=module.heads,
        mlp=module.mlp, n_classes=module.n_classes, rngs=nnx.Rngs(0)))
    p = variables["params"]
    _copy(net.embed, p["embed"])
    net.cls.set_value(jnp.asarray(p["cls"]))
    net.pos.set_value(jnp.asarray(p["pos"]))
    for i, block in enumerate(net.blocks):
        q = p[f"block{i}"]
        for name in ("norm1", "norm2", "mlp_in", "mlp_out"):
            _copy(getattr(block, name), q[name])
        for name in ("query", "key", "value", "out"):
            _copy(getattr(block.attn, name), q["attn"][name])
    _copy(net.norm, p["norm"])
    _copy(net.head, p["head"])
    return net


def _copy(layer, params) -> None:
    for k, v in params.items():
        getattr(layer, k).set_value(jnp.asarray(v))
