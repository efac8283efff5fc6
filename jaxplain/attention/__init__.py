"""Attention models: attention maps, rollout, gradient-weighted rollout, token Grad-CAM.

Attention weights are read without editing the model: they are the softmaxes
over a last axis in its program (`jax.nn.softmax`, Flax's
`nn.MultiHeadDotProductAttention` and `nnx.MultiHeadAttention`, or a user's own
`softmax(q k^T)`), found in its jaxpr and re-evaluated by jaxplain's jaxpr
interpreter with a probe at each (see `capture.py`).
"""

from . import rollout as rollout
from . import tokens as tokens
from .capture import attention_layers as attention_layers
from .capture import capture_attention as capture_attention
from .tokens import patch_segments as patch_segments
