"""Full float32 precision on both sides of an agreement check (no TF32)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import jax

from jaxplain._compile import default_platform


@contextlib.contextmanager
def full_precision(jax_side: bool | None = None) -> Iterator[None]:
    """Float32 products at full precision on both sides, for agreement checks.

    torch: TF32 off for matmuls and cuDNN convolutions (`allow_tf32 = False`;
    cuDNN allows TF32 by default). JAX: `jax.default_matmul_precision("highest")`
    when `jax_side` (default: on any backend but CPU, where XLA computes float32
    dots and convolutions in float32 at every precision setting: identical bits,
    and a recompile of every program it would cost). Timing runs at each side's
    defaults, as users run them.
    """
    if jax_side is None:
        jax_side = default_platform() != "cpu"
    torch = sys.modules.get("torch")
    saved = None
    if torch is not None:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest") if jax_side else contextlib.nullcontext():
            yield
    finally:
        if saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
