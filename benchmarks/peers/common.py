"""What every peer builder shares: which peers import, the torch device, tensors and masks.

The peers run where PyTorch sees an accelerator (`device()`, from
`twins.torch_device`: `"cuda"` when torch sees one). The twin, the inputs, the targets
and the feature masks are put there before timing; outputs come back to the
host only in agreement checks (`to_numpy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..twins import to_nchw as to_nchw
from ..twins import torch_device as device


def available(lib: str) -> bool:
    """True when `lib` imports (shap/numba can fail at import for many reasons)."""
    try:
        __import__(lib)
    except Exception:  # noqa: BLE001
        return False
    return True


def targets(target: np.ndarray):
    """Class indices as a `long` tensor on the peers' device."""
    import torch

    return torch.as_tensor(np.asarray(target), dtype=torch.long, device=device())


def feature_mask(segments: np.ndarray, n: int, channels: int = 3):
    """Captum feature mask (N, C, H, W) from an (H, W) or per-example (N, H, W) label map
    (all channels of a pixel together), on the peers' device."""
    import torch

    seg = torch.as_tensor(np.asarray(segments), dtype=torch.long, device=device())
    seg = seg[:, None] if seg.ndim == 3 else seg[None, None]
    return seg.expand(n, channels, *seg.shape[-2:]).contiguous()


def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor (on any device) or array -> NumPy on the host."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def to_features(values: Any, segments: np.ndarray) -> np.ndarray:
    """Per-pixel Captum output (N, C, H, W) -> one value per feature (N, d) (first pixel of each)."""
    a = to_numpy(values)
    seg = np.asarray(segments)
    d = int(seg.max()) + 1
    flat = seg.reshape(-1)
    first = np.array([np.flatnonzero(flat == j)[0] for j in range(d)])
    return a[:, 0].reshape(a.shape[0], -1)[:, first]
