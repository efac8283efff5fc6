"""The physical limit of a method: its model evaluations and nothing else.

The *physical limit* of a method is the time of the same number of model
evaluations (forward, or forward+backward) run as ONE jitted batch on inputs
already on device. `jaxplain / limit` near 1 means the method costs only its
model evaluations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain._compile import jit, tuned


def _select(outputs: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.take_along_axis(outputs, target[:, None], axis=-1)[:, 0]


@jit
def limit_forward(model, inputs, target):
    """`n` forward passes as one batch: the target logit of every input, `(n,)`.

    The model runs as jaxplain runs it (`fast_model`: a first layer of few channels
    as a patch-matrix product on CPU), so the limit is the fastest known way."""
    return _select(tuned(model, "grad")(inputs), target)


def _target_grads(model, inputs, target):
    """Gradients of the target logits, the model differentiated as jaxplain does (tiling
    pools as reshape + reduce), so the limit is the fastest known way to run them."""
    return jax.grad(lambda z: jnp.sum(_select(tuned(model, "grad")(z), target)))(inputs)


def _fwd_bwd(model, inputs, target, n_out):
    grads = _target_grads(model, inputs, target)
    # Reduce to the explained images' shape: the least output any method needs.
    return grads.reshape((n_out, -1) + grads.shape[1:]).sum(axis=1)


limit_forward_backward = jit(_fwd_bwd, static_argnames=("n_out",))
"""`n` forward+backward passes (gradients w.r.t. the inputs) as one batch."""


def _fwd_bwd_to(features, head, params, inputs, target):
    a = tuned(lambda z: features(params, z), "grad")(inputs)
    g = jax.grad(tuned(lambda a_: jnp.sum(_select(head(params, a_), target)), "grad"))(a)
    return a, g


limit_forward_backward_to_layer = jit(_fwd_bwd_to, static_argnames=("features", "head"))
"""One forward pass and one backward pass down to a layer (Grad-CAM's cost)."""


def _chunked(model, inputs, target, chunk, grad):
    """The same evaluations in chunks of `chunk` inputs (`lax.scan` via jaxplain.batching)."""
    from jaxplain._core import batching

    def one(start, size):
        xb = jax.lax.dynamic_slice_in_dim(inputs, start, size)
        tb = jax.lax.dynamic_slice_in_dim(target, start, size)
        if grad:
            return _target_grads(model, xb, tb)
        return _select(model(xb), tb)

    n = inputs.shape[0]
    if grad:
        return batching.chunked_sum(one, n, chunk)
    return batching.chunked_map(one, n, chunk)


limit_chunked = jit(_chunked, static_argnames=("chunk", "grad"))
"""The limit's evaluations streamed in chunks of `chunk` inputs: a second reference.

On CPU one huge batch is not always the fastest way to run `n` evaluations
(activations fall out of cache), so the report shows both limits.
"""


def limit_dispatch(model, parts, grad: bool = False) -> list:
    """The evaluations as separate jitted calls, one per `(inputs, target)` part.

    On CPU, batches that fit in cache run faster per evaluation than one huge
    batch or a `lax.scan` over chunks; this is the floor the report calls
    "dispatch" (best of a few batch sizes).
    """
    if grad:
        return [limit_forward_backward(model, a, t, n_out=1) for a, t in parts]
    return [limit_forward(model, a, t) for a, t in parts]


def limit_inputs(x: np.ndarray, n_evals: int, seed: int = 0) -> jax.Array:
    """`n_evals` model inputs built from `x` (scaled copies), on device, before timing."""
    rng = np.random.default_rng(seed)
    rows = (np.arange(n_evals) * x.shape[0]) // n_evals  # grouped by example
    scale = rng.uniform(0.0, 1.0, size=(n_evals,) + (1,) * (x.ndim - 1)).astype(np.float32)
    return jax.device_put(jnp.asarray(x[rows] * scale))


