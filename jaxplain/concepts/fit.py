"""The linear classifiers behind CAVs, fitted on device in the dual (Gram) form.

Both classifiers are L2-regularised with an unpenalised intercept, so by the
representer theorem the weights are `w = sum_i beta_i a_i` over the `m` training
activations: every fit needs only their Gram matrix, whatever the layer's width
`D`. TCAV therefore forms one Gram matrix `G` of all the concept and random
examples (`(M + P)^2` dot products of length `D`) and fits every run from index
sets into it; the CAVs themselves are one matmul of the coefficients with the
activations at the end. No run ever holds `D`-wide copies of its examples.

- logistic regression (Kim et al.'s classifier): damped Newton steps, each one
  Cholesky factorisation of an `m x m` symmetric positive definite matrix
  (`_newton_step`); they reach the optimum to float32 round-off in under 10 steps
  on separable and overlapping sets alike, and trying the step sizes 1, 1/2, 1/4
  and 1/8 keeps every step a descent step;
- ridge regression on the labels +-1: one Cholesky solve.

The activations are centred before their Gram matrix is formed (the intercept
absorbs the shift): ReLU features share a large positive offset, and removing it
cuts the condition number of the Gram matrix, hence the float32 round-off of the
fit, by orders of magnitude (jit and eager agreed to 1e-4 without it, 1e-7 with).
The penalty is `reg` times the mean squared distance of the run's activations
to their mean, so the fit depends on neither their scale nor their offset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._core.types import HIGHEST

CLASSIFIERS = ("logistic", "ridge")
_LINE_SEARCH = 4  # step sizes 1, 1/2, 1/4, 1/8 tried per Newton step


def _mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def centre_gram(K: jax.Array) -> jax.Array:
    """The Gram matrix of the centred vectors, `H K H` with `H = I - 1 1^T / m`."""
    return K - jnp.mean(K, 0)[None] - jnp.mean(K, 1)[:, None] + jnp.mean(K)


def penalty(Kc: jax.Array, reg: jax.Array) -> jax.Array:
    scale = jnp.trace(Kc) / Kc.shape[0]
    return reg * jnp.where(scale > 0, scale, 1.0)


def dual_logistic(Kc: jax.Array, y: jax.Array, lam: jax.Array, steps: int):
    """`(alpha, b)` minimising `mean(log(1 + exp(-y f))) + lam / 2 alpha^T Kc alpha` with
    scores `f = Kc alpha + b`, by `steps` damped Newton steps from zero."""
    m = Kc.shape[0]

    def objective(alpha, b):
        f = _mm(Kc, alpha) + b
        return jnp.mean(jax.nn.softplus(-y * f)) + 0.5 * lam * jnp.dot(alpha, _mm(Kc, alpha))

    def step(state, _):
        alpha, b = state
        p = jax.nn.sigmoid(y * (_mm(Kc, alpha) + b))
        g = -y * (1.0 - p) / m              # d loss / d f
        root = jnp.sqrt(p * (1.0 - p) / m)  # sqrt(d2 loss / d f2)
        d_alpha, d_b = _newton_step(Kc, lam, g, g + lam * alpha, root)
        ts = [0.5 ** k for k in range(_LINE_SEARCH)]
        tried = jnp.stack([objective(alpha + t * d_alpha, b + t * d_b) for t in ts])
        best = jnp.argmin(tried)
        t = jnp.where(tried[best] < objective(alpha, b), jnp.asarray(ts)[best], 0.0)
        return (alpha + t * d_alpha, b + t * d_b), None

    init = (jnp.zeros(m, jnp.float32), jnp.zeros((), jnp.float32))
    (alpha, b), _ = jax.lax.scan(step, init, None, length=steps)
    return alpha, b


def _newton_step(K, lam, g, r, root):
    """The Newton step `(d_alpha, d_b)` of `dual_logistic`, by one Cholesky factorisation.

    With `S = diag(root^2)` the loss curvatures, the Newton equations (one factor `K`
    taken out) are `(S K + lam I) d_alpha + S 1 d_b = -r` and `1^T (g + S d_f) = 0`
    for the change of the scores `d_f = K d_alpha + d_b 1`. Writing
    `S d_f = root * v`, `v` solves the symmetric positive definite system
    `(lam I + R K R) v = R (lam d_b 1 - K r)` (`R = diag(root)`), affine in `d_b`,
    which the second equation then fixes; `d_alpha = -(r + root * v) / lam`.
    """
    m = K.shape[0]
    M = lam * jnp.eye(m) + root[:, None] * K * root[None, :]
    L = jax.lax.linalg.cholesky(M)
    rhs = jnp.stack([-root * _mm(K, r), lam * root], axis=1)
    half = jax.lax.linalg.triangular_solve(L, rhs, left_side=True, lower=True)
    v = jax.lax.linalg.triangular_solve(L, half, left_side=True, lower=True, transpose_a=True)
    denom = jnp.dot(root, v[:, 1], precision=HIGHEST)
    d_b = -(jnp.sum(g) + jnp.dot(root, v[:, 0], precision=HIGHEST)) / jnp.where(
        denom > 0, denom, 1.0)
    d_alpha = -(r + root * (v[:, 0] + d_b * v[:, 1])) / lam
    return d_alpha, d_b


def dual_ridge(Kc: jax.Array, y: jax.Array, lam: jax.Array):
    """`(alpha, b)` minimising `mean((y - f)^2) + lam alpha^T Kc alpha`, `f = Kc alpha + b`:
    `alpha = (Kc + m lam I)^{-1} (y - mean(y))`, `b = mean(y)` (one Cholesky solve)."""
    m = Kc.shape[0]
    alpha = jax.scipy.linalg.solve(Kc + m * lam * jnp.eye(m), y - jnp.mean(y), assume_a="pos")
    return alpha, jnp.mean(y)


def _labels(m1: int, m2: int) -> jax.Array:
    return jnp.concatenate([jnp.ones(m1), -jnp.ones(m2)]).astype(jnp.float32)


def _primal(pos, neg, reg, solve):
    """`(w, b)` of a dual solver on activations `pos (m1, D)` (+1) and `neg (m2, D)` (-1)."""
    X = jnp.concatenate([pos, neg]).astype(jnp.float32)
    mean = jnp.mean(X, axis=0)
    X = X - mean
    Kc = _mm(X, X.T)
    alpha, b = solve(Kc, _labels(pos.shape[0], neg.shape[0]), penalty(Kc, reg))
    w = _mm(alpha, X)
    return w, b - jnp.dot(mean, w, precision=HIGHEST)


def fit_logistic(pos: jax.Array, neg: jax.Array, reg: jax.Array, steps: int):
    """L2-regularised logistic regression of `pos` (label +1) against `neg` (-1).

    Minimises `mean(log(1 + exp(-y (w . a + b)))) + reg * s / 2 * |w|^2`, `s` the
    mean squared distance of the activations to their mean. Returns `(w (D,), b ())`.
    """
    return _primal(pos, neg, reg, lambda K, y, lam: dual_logistic(K, y, lam, steps))


def fit_ridge(pos: jax.Array, neg: jax.Array, reg: jax.Array):
    """Ridge regression of the labels +1 (`pos`) and -1 (`neg`): minimises
    `mean((y - w . a - b)^2) + reg * s * |w|^2` (`s` as in `fit_logistic`)."""
    return _primal(pos, neg, reg, dual_ridge)


def gram(acts: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(A, G, offset)` for activations `(n, D)`: `A` centred on their mean, `G = A A^T`,
    and `offset = A @ mean` (to turn an intercept for `A` into one for the raw values)."""
    mean = jnp.mean(acts, axis=0)
    A = acts.astype(jnp.float32) - mean[None]
    return A, _mm(A, A.T), _mm(A, mean)


def fit_in_gram(G: jax.Array, offset: jax.Array, pos: jax.Array, neg: jax.Array, reg: jax.Array,
                *, n_test: tuple[int, int], steps: int, classifier: str):
    """A unit CAV from index sets into the Gram matrix `G (n, n)` of `gram`.

    `pos (m1,)` and `neg (m2,)` index the two classes, in a random order: their
    first `n_test = (t1, t2)` are held out to measure the accuracy (with none held
    out, the training examples are scored). Returns `(coef (n,), bias (), accuracy
    ())`: the unit CAV is `coef @ A` for the centred activations `A` of `gram`, and
    a raw activation `a` is classified as the concept when `cav . a + bias > 0`.
    """
    tp, tn = n_test
    train = jnp.concatenate([pos[tp:], neg[tn:]])
    y = _labels(pos.shape[0] - tp, neg.shape[0] - tn)
    held = bool(tp and tn)
    test = jnp.concatenate([pos[:tp], neg[:tn]]) if held else train
    y_test = _labels(tp, tn) if held else y
    K = G[train][:, train]
    Kc = centre_gram(K)
    lam = penalty(Kc, reg)
    if classifier == "ridge":
        alpha, b = dual_ridge(Kc, y, lam)
    else:
        alpha, b = dual_logistic(Kc, y, lam, steps)
    beta = alpha - jnp.mean(alpha)                    # w = sum_i beta_i A[train_i]
    b = b - jnp.dot(beta, jnp.mean(K, axis=1))        # for A rather than run-centred rows
    norm = jnp.sqrt(jnp.maximum(jnp.dot(beta, _mm(K, beta)), 0.0))
    safe = jnp.where(norm > 0, norm, 1.0)
    scores = _mm(beta, G[train][:, test]) + b
    accuracy = jnp.mean((scores * y_test > 0).astype(jnp.float32))
    coef = jnp.zeros(G.shape[0], jnp.float32).at[train].add(beta) / safe
    return coef, (b - jnp.dot(beta, offset[train])) / safe, accuracy
