"""shap's KernelExplainer and Captum's KernelShap / ShapleyValueSampling on a JAX game.

A game is a JAX function on `(B, 1, d, 1)` inputs (`sample_efficiency.GAMES`). The
peers see it as a function of `(n, d)` rows (NumPy for shap, torch for Captum)
through `Counted`, which evaluates it jitted (rows padded to a power of two, so
each size compiles once) and counts every row a peer asks for: a peer's budget
is the rows it really evaluated, not its `nsamples` argument. The baseline is 0
for every feature, as in jaxplain's `baseline=0.0`. Imports are local: a missing
peer only disables its own estimator.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


class Counted:
    """`game` as `f(rows (n, d)) -> (n,)` in float64 NumPy, counting the rows asked for."""

    def __init__(self, game: Callable, d: int, record: bool = False):
        self.d, self.rows = d, 0
        self.seen: set[bytes] | None = set() if record else None
        """With `record`, the distinct coalitions asked for (rows `!= 0` as bytes)."""
        self._f = jax.jit(lambda z: game(z.reshape(z.shape[0], 1, d, 1)))

    def __call__(self, z) -> np.ndarray:
        z = np.asarray(z, np.float32).reshape(-1, self.d)
        n = len(z)
        self.rows += n
        if self.seen is not None:
            self.seen.update(row.tobytes() for row in z != 0)
        size = max(64, 1 << (n - 1).bit_length())
        out = self._f(jnp.asarray(np.pad(z, ((0, size - n), (0, 0)))))
        return np.asarray(out, np.float64)[:n]


def shap_kernel(game: Callable, x: np.ndarray, budget: int, seed: int,
                l1_reg: object = False, f: Counted | None = None) -> tuple[np.ndarray, int]:
    """shap `KernelExplainer` (background: one all-zero row) with `budget` rows in all.

    It evaluates the background and `x` once each besides its `nsamples` coalitions
    (measured with `Counted`), so `nsamples = budget - 2`. `l1_reg=False` keeps every
    feature; shap's default since 0.47, `"num_features(10)"`, sets all but 10
    features to 0, which at d >= 12 is a bias no budget removes. `f`: the counted
    game to use (e.g. one recording its coalitions).
    """
    import shap

    d = x.size
    f = Counted(game, d) if f is None else f
    ex = shap.KernelExplainer(f, np.zeros((1, d)))
    np.random.seed(seed)  # shap draws coalitions from NumPy's global generator
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        v = ex.shap_values(x.reshape(1, d).astype(np.float64), nsamples=budget - 2, silent=True,
                           l1_reg=l1_reg)
    return np.asarray(v, np.float64).reshape(-1)[:d], f.rows


def _torch_game(f: Counted) -> Callable:
    import torch

    return lambda z: torch.as_tensor(f(z.detach().cpu().numpy()))


def captum_kernel_shap(game: Callable, x: np.ndarray, budget: int,
                       seed: int) -> tuple[np.ndarray, int]:
    """Captum `KernelShap`, `n_samples = budget` (it evaluates exactly that many rows,
    the empty and full coalitions among them), in one batch."""
    import torch
    from captum.attr import KernelShap

    d = x.size
    f = Counted(game, d)
    torch.manual_seed(seed)
    v = KernelShap(_torch_game(f)).attribute(
        torch.tensor(x.reshape(1, d), dtype=torch.float32), baselines=0.0,
        n_samples=budget, perturbations_per_eval=budget)
    return v.detach().cpu().numpy().astype(np.float64).reshape(-1), f.rows


def svs_permutations(budget: int, d: int) -> int:
    """Captum `ShapleyValueSampling`'s permutations for about `budget` rows: it
    evaluates the baseline once and `d` rows per permutation."""
    return max(1, round((budget - 1) / d))


def captum_shapley_sampling(game: Callable, x: np.ndarray, budget: int,
                            seed: int) -> tuple[np.ndarray, int]:
    """Captum `ShapleyValueSampling` with `svs_permutations(budget, d)` permutations."""
    import torch
    from captum.attr import ShapleyValueSampling

    d = x.size
    f = Counted(game, d)
    torch.manual_seed(seed)
    v = ShapleyValueSampling(_torch_game(f)).attribute(
        torch.tensor(x.reshape(1, d), dtype=torch.float32), baselines=0.0,
        n_samples=svs_permutations(budget, d), perturbations_per_eval=d)
    return v.detach().cpu().numpy().astype(np.float64).reshape(-1), f.rows


PEERS: dict[str, tuple[str, Callable]] = {
    # column -> (library that must import, estimator(game, x, budget, seed))
    "shap": ("shap", shap_kernel),
    "captum KernelShap": ("captum", captum_kernel_shap),
    "captum SVS": ("captum", captum_shapley_sampling),
}
"""The peer estimators compared at equal model evaluations."""
