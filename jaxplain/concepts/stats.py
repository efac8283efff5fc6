"""The two-sample t-test TCAV uses, in JAX (no SciPy): jit-able, float32.

The two-sided p-value of a t statistic with `df` degrees of freedom is the
regularised incomplete beta function `I_{df / (df + t^2)}(df / 2, 1 / 2)`
(`jax.scipy.special.betainc`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc


def t_sf2(t: jax.Array, df: jax.Array) -> jax.Array:
    """Two-sided tail probability `P(|T| >= |t|)` of Student's t with `df` degrees of freedom."""
    t = jnp.asarray(t, jnp.float32)
    df = jnp.asarray(df, jnp.float32)
    z = jnp.where(jnp.isinf(t), 0.0, df / (df + t * t))
    return jnp.clip(betainc(0.5 * df, 0.5, z), 0.0, 1.0)


def ttest_ind(a: jax.Array, b: jax.Array, *, equal_var: bool = True) -> tuple[jax.Array, jax.Array]:
    """`(t, p)` of the two-sided two-sample t-test of `a (n1,)` against `b (n2,)`.

    `equal_var=True` is Student's test with the pooled variance (SciPy's
    `ttest_ind` default, which Captum's TCAV tutorial uses); `False` is Welch's
    test with the Welch-Satterthwaite degrees of freedom. When both samples have
    no spread the test is decided by the means: `p = 1` when they are equal,
    `p = 0` when they differ (SciPy returns NaN for both).

    >>> import jax.numpy as jnp
    >>> t, p = ttest_ind(jnp.array([1.0, 2, 3, 4]), jnp.array([2.0, 3, 4, 6]))
    >>> round(float(t), 4), round(float(p), 4)  # scipy.stats.ttest_ind: -1.1677, 0.2872
    (-1.1677, 0.2872)
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    n1, n2 = a.shape[-1], b.shape[-1]
    m1, m2 = jnp.mean(a, -1), jnp.mean(b, -1)
    v1 = jnp.sum((a - m1[..., None]) ** 2, -1) / (n1 - 1)
    v2 = jnp.sum((b - m2[..., None]) ** 2, -1) / (n2 - 1)
    if equal_var:
        df = jnp.asarray(n1 + n2 - 2, jnp.float32)
        pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
        se2 = pooled * (1.0 / n1 + 1.0 / n2)
    else:
        q1, q2 = v1 / n1, v2 / n2
        se2 = q1 + q2
        denom = q1 * q1 / (n1 - 1) + q2 * q2 / (n2 - 1)
        df = jnp.where(denom > 0, se2 * se2 / jnp.where(denom > 0, denom, 1.0), 1.0)
    diff = m1 - m2
    spread = se2 > 0
    t = jnp.where(spread, diff / jnp.sqrt(jnp.where(spread, se2, 1.0)),
                  jnp.where(diff == 0, 0.0, jnp.sign(diff) * jnp.inf))
    p = jnp.where(spread, t_sf2(t, df), jnp.where(diff == 0, 1.0, 0.0))
    return t, p


def prediction_test(value: jax.Array, sample: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(t, p)`: is `value` a draw from the distribution of `sample (n,)`?

    The two-sided test of a new observation against a normal sample's
    prediction interval: `t = (value - mean) / (sd * sqrt(1 + 1/n))` with `n - 1`
    degrees of freedom. Without spread in `sample` the test is decided by
    equality, as in `ttest_ind`.
    """
    sample = jnp.asarray(sample, jnp.float32)
    n = sample.shape[-1]
    mean = jnp.mean(sample, -1)
    sd = jnp.sqrt(jnp.sum((sample - mean[..., None]) ** 2, -1) / (n - 1))
    diff = jnp.asarray(value, jnp.float32) - mean
    spread = sd > 0
    t = jnp.where(spread, diff / (jnp.where(spread, sd, 1.0) * jnp.sqrt(1.0 + 1.0 / n)),
                  jnp.where(diff == 0, 0.0, jnp.sign(diff) * jnp.inf))
    p = jnp.where(spread, t_sf2(t, n - 1.0), jnp.where(diff == 0, 1.0, 0.0))
    return t, p
