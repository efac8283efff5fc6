"""Quadrature rules for path integrals (integrated gradients and its layer variant)."""

from __future__ import annotations

import numpy as np

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes `alphas` in [0, 1] and weights summing to 1 for `integral_0^1 g(a) da`.

    `riemann_trapezoid` with `steps` nodes includes both end points (steps >= 2);
    `gauss_legendre` is exact for polynomials of degree `2 * steps - 1`.

    >>> a, w = quadrature("riemann_middle", 2)
    >>> a.tolist(), w.tolist()
    ([0.25, 0.75], [0.5, 0.5])
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    n = int(steps)
    if rule == "riemann_left":
        a = np.arange(n) / n
        w = np.full(n, 1.0 / n)
    elif rule == "riemann_right":
        a = np.arange(1, n + 1) / n
        w = np.full(n, 1.0 / n)
    elif rule == "riemann_middle":
        a = (np.arange(n) + 0.5) / n
        w = np.full(n, 1.0 / n)
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError(f"steps: expected >= 2 for riemann_trapezoid, got {n}")
        a = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
    else:
        nodes, weights = np.polynomial.legendre.leggauss(n)
        a = (nodes + 1.0) / 2.0
        w = weights / 2.0
    return a.astype(np.float32), w.astype(np.float32)
