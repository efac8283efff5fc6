"""The counterfactual searches on one chunk of examples (traceable, batched over rows).

Both searches move a batch `z (B, ...)` from `x0` until the model predicts the goal
class, then `refine` bisects the segment from `x0` to the point found, so the
returned change is (to `2**-refine_steps` of its length) the shortest one along
that segment. `f` is the model on a batch; `goal` says what counts as a success.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._compile import numpy_rules
from ._common import dual_norm, group_sq, norm, rows

TINY = 1e-30


class Goal(NamedTuple):
    """What the search aims at: class `t (B,)` (targeted) or away from `a (B,)` (other)."""

    a: jax.Array
    t: jax.Array | None

    def reached(self, out: jax.Array) -> jax.Array:
        pred = jnp.argmax(out, axis=-1)
        return pred != self.a if self.t is None else pred == self.t

    def margin(self, out: jax.Array) -> jax.Array:
        """`(B,)`, positive while the goal is not reached: best other class minus the goal
        class (targeted), the original class minus the best other one (other)."""
        k = out.shape[-1]
        keep = self.a if self.t is None else self.t
        own = jnp.take_along_axis(out, keep[:, None], axis=1)[:, 0]
        rest = jnp.max(jnp.where(jnp.arange(k)[None] == keep[:, None], -jnp.inf, out), axis=-1)
        return own - rest if self.t is None else rest - own


class Box(NamedTuple):
    """The valid input range (both None: unbounded), broadcastable to the batch."""

    lo: jax.Array | None
    hi: jax.Array | None

    def clip(self, z: jax.Array) -> jax.Array:
        return z if self.lo is None else jnp.clip(z, self.lo, self.hi)

    def free(self, z: jax.Array, grad: jax.Array) -> jax.Array:
        """`grad` with the components zeroed that a descent step would push out of the box."""
        if self.lo is None:
            return grad
        stuck = ((z <= self.lo) & (grad > 0)) | ((z >= self.hi) & (grad < 0))
        return jnp.where(stuck, 0.0, grad)


class Metric(NamedTuple):
    """The distance: `kind` in ("l2", "l1", "segments"); `seg (B, H, W)` and `d` for segments."""

    kind: str
    seg: jax.Array | None
    d: int

    def norm(self, v: jax.Array) -> jax.Array:
        return norm(v, self.kind, self.seg, self.d)

    def dual(self, g: jax.Array) -> jax.Array:
        return dual_norm(g, self.kind, self.seg, self.d)

    def smooth(self, v: jax.Array, eps: float = 1e-3) -> jax.Array:
        """A differentiable version of `norm` (pseudo-Huber), per row."""
        flat = v.reshape(v.shape[0], -1)
        if self.kind == "l2":
            return jnp.sqrt(jnp.sum(flat * flat, axis=1) + eps**2) - eps
        if self.kind == "l1":
            return jnp.sum(jnp.sqrt(flat * flat + eps**2) - eps, axis=1)
        return jnp.sum(jnp.sqrt(group_sq(v, self.seg, self.d) + eps**2) - eps, axis=1)

    def step(self, grad: jax.Array, g: jax.Array) -> jax.Array:
        """The smallest change `delta` with `grad . delta = -g` per row (the linearised
        boundary crossing): along `grad` (L2), on its largest coordinate (L1), on the
        segment of largest gradient norm (segments)."""
        b = grad.shape[0]
        if self.kind == "l2":
            nn = jnp.sum(grad.reshape(b, -1) ** 2, axis=1)
            return -rows(g / jnp.maximum(nn, TINY), grad) * grad
        if self.kind == "l1":
            flat = grad.reshape(b, -1)
            i = jnp.argmax(jnp.abs(flat), axis=1)
            gi = jnp.take_along_axis(flat, i[:, None], axis=1)[:, 0]
            size = jnp.where(gi == 0, 0.0, -g / jnp.where(gi == 0, 1.0, gi))
            onehot = jnp.arange(flat.shape[1])[None] == i[:, None]
            return jnp.where(onehot, size[:, None], 0.0).reshape(grad.shape)
        gs = group_sq(grad, self.seg, self.d)
        s = jnp.argmax(gs, axis=1)
        nn = jnp.take_along_axis(gs, s[:, None], axis=1)[:, 0]
        on = (self.seg == s[:, None, None]).astype(grad.dtype)
        on = on.reshape(on.shape + (1,) * (grad.ndim - on.ndim))
        return -rows(g / jnp.maximum(nn, TINY), grad) * grad * on


def _linearise(f: Any, z: jax.Array, goal: Goal, metric: Metric, box: Box):
    """Outputs at `z`, and the margin and its gradient (free components) DeepFool steps on.

    Targeted: the margin of the best other class over the goal class (one backward
    pass). Other: DeepFool's choice, the class `l` with the smallest linearised
    distance `(f_a - f_l) / ||grad(f_a - f_l)||_*` (one backward pass per class).
    """
    out, vjp = jax.vjp(f, z)
    k = out.shape[-1]
    if goal.t is not None:
        ct = jax.grad(lambda o: jnp.sum(goal.margin(o)))(out)
        return out, goal.margin(out), box.free(z, vjp(ct)[0])
    own = jax.nn.one_hot(goal.a, k, dtype=out.dtype)
    cts = own[None] - jnp.eye(k, dtype=out.dtype)[:, None, :]  # (K, B, K): f_a - f_k
    grads = jax.vmap(lambda ct: box.free(z, vjp(ct)[0]))(cts)  # (K, B, ...)
    gk = jnp.einsum("kbj,bj->kb", cts, out)
    dist = gk / jnp.maximum(jax.vmap(metric.dual)(grads), TINY)
    dist = jnp.where(jnp.arange(k)[:, None] == goal.a[None], jnp.inf, dist)
    lk = jnp.argmin(dist, axis=0)
    pick = lambda v: jnp.take_along_axis(v, lk.reshape((1, -1) + (1,) * (v.ndim - 2)), 0)[0]  # noqa: E731
    return out, pick(gk), pick(grads)


def deepfool(f, x0, goal: Goal, metric: Metric, box: Box, steps: int, overshoot):
    """Linearised steps (Moosavi-Dezfooli et al., 2016) until every row reaches its goal.

    Returns `(z, reached (B,), outputs at z, evaluations per row (B,))`; rows stop
    moving once they reach the goal, the loop once all rows have (or after `steps`).
    A step costs one evaluation per row (forward and backward), `classes` for
    `goal.t = None` (one backward pass per class).
    """
    b = x0.shape[0]

    def body(state):
        z, done, count, i = state
        out, g, grad = _linearise(f, z, goal, metric, box)
        per_step = 1 if goal.t is not None else out.shape[-1]  # backward passes
        count = count + jnp.where(done, 0, per_step)
        done = done | goal.reached(out)
        moved = box.clip(z + metric.step(grad, g * (1.0 + overshoot) + 1e-6))
        return jnp.where(rows(done, z), z, moved), done, count, i + 1

    def cond(state):
        return (state[3] < steps) & ~jnp.all(state[1])

    init = (x0, jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32), jnp.int32(0))
    z, _, count, _ = jax.lax.while_loop(cond, body, init)
    out = f(z)
    return z, goal.reached(out), out, count + 1


def optax_search(f, x0, goal: Goal, metric: Metric, box: Box, steps: int, overshoot,
                 learning_rate, weight, optimizer: Any):
    """Minimises `||delta|| + weight * relu(margin / scale + overshoot)` with optax.

    The change is parametrised in units of the linearised distance `d0 = margin(x0) /
    ||grad margin(x0)||_*` of each row (`delta = d0 * u`), so `learning_rate` and
    `weight` do not depend on the scale of the inputs or of the outputs (any
    `weight > 1` puts the optimum of a linear model on its boundary). Keeps the
    closest iterate that reached the goal. Returns like `deepfool`.
    """
    out0, vjp = jax.vjp(f, x0)
    ct = jax.grad(lambda o: jnp.sum(goal.margin(o)))(out0)
    scale = jnp.maximum(metric.dual(box.free(x0, vjp(ct)[0])), TINY)
    unit = jnp.maximum(jnp.maximum(goal.margin(out0), 0.0) / scale, 1e-6)
    opt = optimizer if optimizer is not None else optax.adam(learning_rate)

    def loss(u):
        z = box.clip(x0 + rows(unit, u) * u)
        out = f(z)
        hinge = jax.nn.relu(goal.margin(out) / (scale * unit) + overshoot)
        return jnp.sum(metric.smooth(u) + weight * hinge), (z, out)

    def body(state, _):
        u, opt_state, best, best_d, found = state
        (_, (z, out)), grad = jax.value_and_grad(loss, has_aux=True)(u)
        d = metric.norm(z - x0)
        better = goal.reached(out) & (d < best_d)
        best = jnp.where(rows(better, z), z, best)
        best_d = jnp.where(better, d, best_d)
        with numpy_rules(False):  # optax (the user's or ours) keeps JAX's defaults
            updates, opt_state = opt.update(grad, opt_state, u)
        u = optax.apply_updates(u, updates)
        u = (box.clip(x0 + rows(unit, u) * u) - x0) / rows(unit, u)
        return (u, opt_state, best, best_d, found | better), None

    u0 = jnp.zeros_like(x0)
    b = x0.shape[0]
    init = (u0, opt.init(u0), x0, jnp.full((b,), jnp.inf, x0.dtype), jnp.zeros((b,), bool))
    (u, _, best, _, found), _ = jax.lax.scan(body, init, None, length=steps)
    last = box.clip(x0 + rows(unit, u) * u)
    z = jnp.where(rows(found, x0), best, last)
    return z, found, None, jnp.full((b,), steps + 1, jnp.int32)


def refine(f, x0, z, ok, goal: Goal, out_z, steps: int):
    """Bisection on the segment `x0 -> z` for the point closest to `x0` that still reaches
    the goal (rows with `ok`). Returns `(point, class predicted there (B,))`."""
    b = x0.shape[0]
    cls = jnp.argmax(f(z) if out_z is None else out_z, axis=-1)

    def body(_, c):
        lo, hi, cls = c
        mid = 0.5 * (lo + hi)
        out = f(x0 + rows(mid, x0) * (z - x0))
        hit = goal.reached(out) & ok
        return (jnp.where(hit, lo, mid), jnp.where(hit, mid, hi),
                jnp.where(hit, jnp.argmax(out, axis=-1), cls))

    init = (jnp.zeros((b,), x0.dtype), jnp.ones((b,), x0.dtype), cls)
    _, hi, cls = jax.lax.fori_loop(0, steps, body, init)
    return x0 + rows(hi, x0) * (z - x0), cls
