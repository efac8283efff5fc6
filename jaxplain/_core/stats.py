"""Student t quantiles for the confidence intervals of sampled estimates.

`jax.scipy.stats.t` has no quantile function; the Cornish-Fisher expansion of the t
quantile around the normal one is accurate where intervals are used (two-sided 80-99%,
at least 3 degrees of freedom) and runs on any backend, inside `jit` and `vmap`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import ndtri


def t_quantile(p, df):
    """The `p` quantile of Student's t with `df` degrees of freedom (broadcast).

    Cornish-Fisher expansion to the fourth order in `1 / df`, checked against SciPy:
    for `p` in [0.9, 0.99] within 0.4% of the exact quantile from `df = 3` (0.12% at
    `p = 0.975`), 0.01% from `df = 7`; an infinite `df` gives the normal quantile.

    >>> round(float(t_quantile(0.975, 7.0)), 3), round(float(t_quantile(0.975, jnp.inf)), 3)
    (2.365, 1.96)
    """
    z = ndtri(jnp.asarray(p, jnp.float32))
    v = jnp.maximum(jnp.asarray(df, jnp.float32), 1.0)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4
