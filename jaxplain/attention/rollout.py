"""Attention maps, attention rollout and gradient-weighted attention rollout.

All three read the attention weights `A_l` `(N, heads, T, T)` of every layer `l`
through the attention probe (`_capture.py`: the softmaxes of the model's
program, found and re-evaluated by jaxplain's jaxpr interpreter; the model is
not edited). One forward pass gives the maps and the rollout, one forward and
one backward pass the gradient-weighted rollout, all in one jitted program
chunked over examples.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from .._compile import jit, tuned
from .._core import batching
from .._core import registry
from .._core import validate as V
from .._core.models import as_model
from .._core.targets import Target, as_target
from .._core.types import HIGHEST, ArrayLike, Explanation
from . import _capture
from .tokens import check_prefix, image_size, patch_grid, to_image

HEAD_FUSIONS = ("mean", "max", "min")


def rollout(weights: Sequence[jax.Array], *, head_fusion: str = "mean",
            residual: bool = True) -> jax.Array:
    """Attention rollout `(N, T, T)` of per-layer weights `[(N, heads, T, T), ...]`.

    Heads are fused (`mean`, `max` or `min`), the identity is added for the
    residual connection (`residual=True`) and rows are normalised to sum to one:
    `Â_l = norm(fuse(A_l) + I)`. Layers are multiplied in the order they run:
    `R = Â_L ... Â_2 Â_1`, so `R[i, j]` is how much token `j` of the input flows
    into token `i` of the last layer.
    """
    out = None
    for w in weights:
        fused = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion](w, axis=1)
        if residual:
            fused = fused + jnp.eye(fused.shape[-1], dtype=fused.dtype)[None]
        fused = fused / jnp.sum(fused, axis=-1, keepdims=True)
        out = fused if out is None else jnp.matmul(fused, out, precision=HIGHEST)
    return out


def grad_rollout(weights: Sequence[jax.Array], grads: Sequence[jax.Array]) -> jax.Array:
    """Gradient-weighted rollout `(N, T, T)`: `R = I`, then for each layer in order
    `R <- R + mean_heads(relu(dy/dA_l * A_l)) @ R` (Chefer et al., 2021)."""
    out = None
    for w, g in zip(weights, grads):
        a = jnp.mean(jax.nn.relu(g * w), axis=1)
        if out is None:
            out = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        out = out + jnp.matmul(a, out, precision=HIGHEST)
    return out


def _shapes(model, x) -> tuple[int, int]:
    """`(layers, tokens)`: every layer's weights must be square over the same tokens."""
    shapes = _capture.shapes(model, x)
    ts = {tuple(s.shape[-2:]) for s in shapes}
    if len(ts) != 1 or any(q != k for q, k in ts):
        V.fail("model", "self-attention over the same tokens in every layer (square weights "
               "of one size) for a rollout", f"weights of shapes {[s.shape for s in shapes]}")
    return len(shapes), ts.pop()[0]


def _readout(model, x, token, prefix, grid, upsample):
    """Validates the read-out settings: the static `(token, prefix, grid, size)`."""
    _, n = _shapes(model, x)
    if token is None:
        return None, 0, None, None
    token = V.check_int(token, "token", minimum=0, maximum=n - 1)
    prefix = check_prefix(prefix, n)
    return token, prefix, patch_grid(x, n - prefix, grid), image_size(upsample, x)


def _attention_vjp(model, x, target: Target):
    """One forward and one backward pass: the weights and the target's gradients at them."""
    zeros = [jnp.zeros(s.shape, s.dtype) for s in _capture.shapes(model, x)]
    probed = tuned(lambda d: _capture.probe(model, x, d), "grad")
    outputs, vjp, weights = jax.vjp(probed, zeros, has_aux=True)
    bound = target.bind(jax.lax.stop_gradient(outputs))
    ct = jax.grad(lambda o: jnp.sum(bound.select(o)))(outputs)
    (grads,) = vjp(ct)
    return weights, grads


@functools.partial(jit, static_argnames=("kind", "head_fusion", "residual", "token", "prefix",
                                         "grid", "size", "batch_size"))
def _program(model, x, target, *, kind, head_fusion, residual, token, prefix, grid, size,
             batch_size) -> Explanation:
    def maps(xs, t):
        if kind == "grad":
            r = grad_rollout(*_attention_vjp(model, xs, t))
        else:
            weights = _capture.probe(model, xs)[1]
            if kind == "maps":
                return jnp.stack(weights, axis=1)
            r = rollout(weights, head_fusion=head_fusion, residual=residual)
        if token is None:
            return r
        return to_image(r[:, token, prefix:], grid, size)

    def chunk(start, n):
        rows = start + jnp.arange(n, dtype=jnp.int32)
        t = None if target is None else target.take(rows)
        return maps(jax.lax.dynamic_slice_in_dim(x, start, n), t)

    values = batching.chunked_map(chunk, x.shape[0], batch_size)
    return Explanation(values=values, n_evals=jnp.ones((x.shape[0],), jnp.int32))


@registry.method("attention", evals=lambda a: 1)
def attention_maps(model: Any, x: ArrayLike, *, batch_size: int | None = None) -> Explanation:
    """The attention weights of every layer and head, `(N, layers, heads, T, T)`.

    Row `i` of layer `l`, head `h` is how token `i` attends to every token (rows
    sum to one). Layers are the model's softmaxes over a last axis, in the order
    they run (see `jaxplain.attention`), from one forward pass; the model is
    not edited. Every layer must have the same shape (else use the rollout's
    weights from `jaxplain.capture_attention`).

    Args:
      model: a Linen or NNX model, or any JAX function, with attention.
      x: inputs `(N, ...)`.
      batch_size: examples per chunk (`None`: the backend's default).

    Raises:
      ValueError: the model has no attention (the message names the model).

    >>> import jaxplain as jx
    >>> model, x = jx.testing.tiny_attention(), jx.testing.random_images(0, n=2, size=4)
    >>> jx.attention_maps(model, x).values.shape
    (2, 2, 1, 4, 4)
    """
    model = as_model(model)
    x = V.check_array(x)
    shapes = _capture.shapes(model, x)
    if len({s.shape for s in shapes}) != 1:
        V.fail("model", "attention weights of one shape in every layer to stack them",
               f"shapes {[s.shape for s in shapes]}")
    return _program(model, x, None, kind="maps", head_fusion="mean", residual=True, token=None,
                    prefix=0, grid=None, size=None, batch_size=V.check_batch_size(batch_size))


@registry.method("attention", evals=lambda a: 1)
def attention_rollout(model: Any, x: ArrayLike, *, head_fusion: str = "mean",
                      residual: bool = True, token: int | None = 0, prefix: int = 1,
                      grid: tuple[int, int] | None = None,
                      upsample: bool | tuple[int, int] = True,
                      batch_size: int | None = None) -> Explanation:
    """Attention rollout: attention multiplied through the layers, residuals included.

    `Â_l = rownorm(fuse_heads(A_l) + I)` and `R = Â_L ... Â_1` (see `rollout`);
    the map is row `token` (the class token) of `R` over the patch tokens, on
    the patch grid. One forward pass, jitted.

    Args:
      model: a model with self-attention over the same tokens in every layer.
      x: images `(N, H, W, C)` (any `(N, ...)` with `token=None`).
      head_fusion: `"mean"` (the paper), `"max"` or `"min"` over heads.
      residual: add the identity for the residual connections (the paper).
      token: the query token to read out (0: the class token); None returns the
        whole rollout `(N, T, T)`.
      prefix: tokens before the patch tokens (1: the class token).
      grid: `(gh, gw)`; None infers it from `x`'s aspect ratio.
      upsample: `True` gives each pixel its patch's value `(N, H, W)`, `False` the
        grid `(N, gh, gw)`, `(H, W)` another size (nearest patch).
      batch_size: examples per chunk (`None`: the backend's default).

    Raises:
      ValueError: no attention, layers of different token counts, or a grid that
        does not match the tokens.

    References:
      Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    model = as_model(model)
    x = V.check_array(x)
    V.check_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    if not isinstance(residual, bool):
        V.fail("residual", "a bool", repr(residual), TypeError)
    token, prefix, grid, size = _readout(model, x, token, prefix, grid, upsample)
    return _program(model, x, None, kind="rollout", head_fusion=head_fusion, residual=residual,
                    token=token, prefix=prefix, grid=grid, size=size,
                    batch_size=V.check_batch_size(batch_size))


@registry.method("attention", evals=lambda a: 1)
def grad_attention_rollout(model: Any, x: ArrayLike, *, target: Any, token: int | None = 0,
                           prefix: int = 1, grid: tuple[int, int] | None = None,
                           upsample: bool | tuple[int, int] = True,
                           batch_size: int | None = None) -> Explanation:
    """Gradient-weighted attention rollout: attention weighted by the target's gradient.

    `Ā_l = mean_heads(relu(dy/dA_l ⊙ A_l))`, `R = I`, then `R <- R + Ā_l R` for
    each layer in order (see `grad_rollout`); the map is row `token` of `R` over
    the patch tokens. Class-specific, unlike `attention_rollout`. One forward and
    one backward pass, jitted.

    Args:
      model, x, token, prefix, grid, upsample, batch_size: see `attention_rollout`.
      target: which output to explain (int, per-example ints, "predicted", callable).

    References:
      Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
      Visualization", CVPR 2021, and "Generic Attention-model Explainability for
      Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021 (the
      gradient-only rule used here).
    """
    model = as_model(model)
    x = V.check_array(x)
    token, prefix, grid, size = _readout(model, x, token, prefix, grid, upsample)
    return _program(model, x, as_target(target, model, x), kind="grad", head_fusion="mean",
                    residual=True, token=token, prefix=prefix, grid=grid, size=size,
                    batch_size=V.check_batch_size(batch_size))
