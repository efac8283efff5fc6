"""Fast weights for the layer/CAM tests: no eager initialisers, no init compiles.

`jax.eval_shape` gives the variable shapes; NumPy fills them. The NNX twin of
`jaxplain.testing.tiny_cnn` is built abstractly (`nnx.eval_shape`) and loaded
with the Linen weights, which equals `testing.tiny_cnn_nnx` but costs no XLA
compilation (on a loaded 2-core machine the eager route takes seconds).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxplain import testing


def init_params(net, x, seed=0, scale=0.3):
    shapes = jax.eval_shape(net.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype), shapes)


def tiny_cnn(x, seed=0, **kw):
    """`(module, variables)` of `testing.tiny_cnn(**kw)` with random weights and biases."""
    net = testing.tiny_cnn(**kw)
    return net, init_params(net, x, seed)


def tiny_cnn_nnx(variables, features=(4, 8), n_classes=3, pool="avg", in_channels=3):
    abstract = nnx.eval_shape(
        lambda: testing.TinyCNNNNX(in_channels, tuple(features), n_classes, pool, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    p = variables["params"]
    pure = {
        "convs": {i: dict(p[f"conv{i}"]) for i in range(len(features))},
        "head": dict(p["head"]),
    }
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def random_nnx(ctor, seed=0, scale=0.3):
    """An NNX module from `ctor()` with NumPy-random weights, built without initialisers."""
    graphdef, state = nnx.split(nnx.eval_shape(ctor))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype), state)
    return nnx.merge(graphdef, state)


# ---- a GAP + dense CNN (Grad-CAM equals CAM on it) ------------------------------------


class Features(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(5, (3, 3), name="conv")(x))


class CamNet(nn.Module):
    """conv -> relu ("features", the probed block) -> global average pooling -> dense."""

    @nn.compact
    def __call__(self, x):
        f = Features(name="features")(x)
        return nn.Dense(4, name="head")(jnp.mean(f, axis=(1, 2)))
