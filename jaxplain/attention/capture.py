"""Public access to a model's attention weights (the probe of `_capture.py`)."""

from __future__ import annotations

from typing import Any

import jax

from .._compile import jit
from .._core import validate as V
from .._core.models import as_model
from .._core.types import ArrayLike
from . import _capture


def attention_layers(model: Any, x: ArrayLike) -> list[str]:
    """Names of the model's attention layers on inputs like `x`, in the order they run.

    A layer is a softmax over the last axis of an array of rank >= 3 in the
    model's program (see `jaxplain.attention`). Linen models name it after the
    module computing it (`"block0/attn"`); other models get `"attention0"`, ...
    No FLOPs, no compilation.

    Raises:
      ValueError: the model has no attention (the message names the model).

    >>> import jaxplain as jx
    >>> jx.attention_layers(jx.testing.tiny_attention(), jx.testing.random_images(0, size=4))
    ['attention0', 'attention1']
    """
    model = as_model(model)
    x = V.check_array(x)
    return _capture.site_names(model, x)


def capture_attention(model: Any, x: ArrayLike) -> tuple[Any, dict[str, jax.Array]]:
    """`(outputs, {layer: weights (N, heads, queries, keys)})` from one forward pass.

    The outputs are the model's; the weights are its attention weights per layer
    and head (rows sum to one). Jit-able; the model is not edited. Layers of
    different shapes (cross-attention, pooling between blocks) are fine here.
    """
    model = as_model(model)
    x = V.check_array(x)
    names = _capture.site_names(model, x)
    outputs, weights = _probe(model, x)
    return outputs, dict(zip(names, weights))


_probe = jit(_capture.probe)
