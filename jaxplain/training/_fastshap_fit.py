"""Training an amortised Shapley explainer (FastSHAP) with optax.

Each step draws `batch` training images and, per image, `n_coalitions` coalitions
from the Shapley kernel (paired with their complements), evaluates the model on
the masked images (`features.apply_coalitions`, chunked like every method), and
takes one Adam step on the weighted least-squares loss of the efficiency-normalised
explainer output (`_fastshap_net.coalition_loss`); each step is one jitted program,
dispatched asynchronously. Every `eval_every` steps the explainer is validated and
checkpointed, and training stops once the validation error reaches `target_error`.

Randomness is `fold_in(key, step)` per step, so a run resumed from its checkpoint
gives the same weights as one that never stopped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from .._compile import jit
from .._core import batching, features, registry
from .._core import progress as _progress
from .._core import validate as V
from .._core.models import as_model
from . import _fastshap_checks as C
from . import amortised as A
from ._fastshap_net import (
    Spec,
    coalition_loss,
    coalitions_from_bits,
    draws_per_row,
    efficient,
    outputs_2d,
)

CHECKPOINT_FORMAT = "jaxplain-amortised-fit/1"
VALIDATION_STREAM = 2**31 - 1
"""`fold_in(key, VALIDATION_STREAM)` draws the validation loss's coalitions (steps use 0, 1, ...)."""


class AmortisedFit(NamedTuple):
    """What `fit_amortised` returns.

    Attributes:
      explainer: the trained `AmortisedExplainer`.
      steps: optimisation steps run in total (those of a resumed checkpoint included).
      n_evals: model evaluations spent by this call (training and validation).
      seconds: wall time of this call (compilation included).
      history: `(step, validation error)` pairs, one per validation.
      reached: whether the validation error reached `target_error`.
    """

    explainer: A.AmortisedExplainer
    steps: int
    n_evals: int
    seconds: float
    history: tuple[tuple[int, float], ...]
    reached: bool


def fit_amortised(
    model: Callable,
    x_train: Any,
    segments: Any,
    *,
    key: Any,
    baseline: Any = 0.0,
    steps: int = 1000,
    batch: int = 32,
    n_coalitions: int = 32,
    paired: bool = True,
    learning_rate: float | Callable[[Any], Any] = 1e-3,
    average: float | None = None,
    features: tuple[int, ...] = (32, 32),
    hidden: int = 128,
    validation: Any = None,
    target_error: float | None = None,
    eval_every: int = 100,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool | str = "auto",
) -> AmortisedFit:
    """Trains an amortised Shapley explainer (FastSHAP) for `model` on images `x_train`.

    The explainer learns the Shapley values of every model output (each class; the
    one output of a scalar model) over the features of `segments`, with removed
    features replaced by `baseline` (the game of `exact_shapley` and `kernel_shap`).

    Args:
      model: a `Model`, NNX module or callable on batches `(B, H, W, C)`.
      x_train: training images `(N, H, W, C)` (no labels needed).
      segments: one label map `(H, W)`, `0..d-1` without gaps, d >= 2.
      key: a `jax.random.key`: initial weights, batches and coalitions.
      baseline: a number, one image `(H, W, C)`, `"blur"` or `"mean"`.
      steps: optimisation steps (each `batch * (n_coalitions + 2)` model evaluations).
      batch: images per step.
      n_coalitions: coalitions per image and step (even when `paired`).
      paired: draw each coalition with its complement.
      learning_rate: Adam's step size: a number, or an optax schedule `step -> rate`
        (e.g. `optax.cosine_decay_schedule(3e-3, steps)`).
      average: None, or the decay (in [0, 1)) of an exponential moving average of
        the weights (Polyak averaging, its decay ramped up as `(1 + t) / (10 + t)`
        in the first steps): the explainer returned, validated and checkpointed is
        the average, which smooths the noise of the sampled coalitions out of the
        weights at no model evaluation.
      features, hidden: the explainer network's conv channels and hidden width.
      validation: None; held-out images `(M, H, W, C)` (the error is then the
        loss on fixed coalitions of them); or `(x_val, target, values)` with
        reference Shapley values `(M, d)` for that target (e.g. from
        `exact_shapley` or a large-budget `kernel_shap`): the error is the RMSE.
      target_error: stop at the first validation whose error is at most this.
      eval_every: steps between validations and checkpoints.
      checkpoint: a file path: the training state is written there every
        `eval_every` steps, and a run with the same settings resumes from it.
      batch_size: model inputs per chunk.
      progress: `"auto"`, True or False: a bar of model evaluations.

    Returns:
      An `AmortisedFit` (`explainer`, `steps`, `n_evals`, `seconds`, `history`, `reached`).

    Raises:
      TypeError, ValueError: bad arguments (named), before anything compiles.

    References:
      Jethani, Sudarshan, Covert, Lee & Ranganath, "FastSHAP: Real-Time Shapley
      Value Estimation", ICLR 2022.
    """
    t0 = time.perf_counter()
    run = _Run.build(locals())
    if progress is not True and progress not in (False, "auto"):
        V.fail("progress", "True, False or 'auto'", repr(progress), TypeError)
    total = run.planned_evals()
    if progress is False or (progress == "auto" and total < registry.AUTO_EVALS):
        out = run.loop()
    else:
        delay = registry.AUTO_DELAY if progress == "auto" else 0.0
        out = _progress.with_bar(run.loop, total=total, desc="fit_amortised", delay=delay)
    return out._replace(seconds=time.perf_counter() - t0)


class _Run:
    """One training run: validated arguments, the state, the loop."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)

    @classmethod
    def build(cls, a: dict) -> _Run:
        model = as_model(a["model"])
        x = V.check_array(a["x_train"], "x_train", min_ndim=4)
        seg, d = C.check_segments(a["segments"], x)
        key = V.check_key(a["key"])
        one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)  # no device work
        mode, b = features.baseline_spec(a["baseline"], one)
        b = None if b is None else jax.device_put(b)
        steps = V.check_int(a["steps"], "steps", minimum=0)
        batch = V.check_int(a["batch"], "batch")  # images are drawn with replacement
        n_coal = V.check_int(a["n_coalitions"], "n_coalitions", minimum=1)
        if not isinstance(a["paired"], bool):
            V.fail("paired", "a bool", repr(a["paired"]), TypeError)
        if a["paired"] and n_coal % 2:
            V.fail("n_coalitions", "an even number with paired=True", n_coal)
        lr = a["learning_rate"]
        if not callable(lr):  # an optax schedule `step -> rate` is taken as it is
            lr = V.check_float(lr, "learning_rate", minimum=0.0, open_min=True)
        average = a["average"]
        if average is not None:
            average = V.check_float(average, "average", minimum=0.0)
            if average >= 1.0:
                V.fail("average", "a decay in [0, 1) or None", average)
        net = C.check_net(a["features"], a["hidden"], d, C.n_outputs(model, x))
        val = C.check_validation(a["validation"], model, x, d)
        target_error = a["target_error"]
        if target_error is not None:
            target_error = V.check_float(target_error, "target_error", minimum=0.0)
            if val is None:
                V.fail("target_error", "a validation set to compare with (validation=...)",
                       target_error)
        ckpt = a["checkpoint"]
        if ckpt is not None and not isinstance(ckpt, (str, os.PathLike)):
            V.fail("checkpoint", "a file path", type(ckpt).__name__, TypeError)
        spec = Spec(net, tuple(x.shape[1:]), mode)
        return cls(model=model, x=x, seg=seg, key=key, spec=spec, baseline=b, steps=steps,
                   batch=batch, n_coal=n_coal, paired=a["paired"], lr=lr, average=average, val=val,
                   target_error=target_error,
                   eval_every=V.check_int(a["eval_every"], "eval_every"),
                   checkpoint=None if ckpt is None else os.fspath(ckpt),
                   batch_size=V.check_batch_size(a["batch_size"]))

    # -- counts ------------------------------------------------------------------------------
    def step_evals(self) -> int:
        """Model evaluations of one step (rows the last chunk repeats included)."""
        rows = 0
        for total in (2 * self.batch, self.batch * self.n_coal):
            count, size = batching.chunking(total, self.batch_size)
            rows += count * size
        return rows

    def val_evals(self) -> int:
        if self.val is None:
            return 0
        m = self.val[0].shape[0]
        parts = (2 * m,) if self.val[1] is not None else (2 * m, m * self.n_coal)
        return sum(int(np.prod(batching.chunking(p, self.batch_size))) for p in parts)

    def planned_evals(self) -> int:
        checks = max(1, -(-self.steps // self.eval_every)) if self.val is not None else 0
        return self.steps * self.step_evals() + checks * self.val_evals()

    # -- the loop ----------------------------------------------------------------------------
    def loop(self) -> AmortisedFit:
        kinit, self.kdata = jax.random.split(self.key)
        x1 = jnp.zeros((1,) + self.spec.input_shape, jnp.float32)
        params = self.spec.net.init(kinit, x1)
        opt_state = (optax.adam(self.lr).init(params), params)  # (Adam's, the average)
        step, history = 0, []
        if self.checkpoint is not None and os.path.exists(self.checkpoint):
            params, opt_state, step, history = self.resume(params, opt_state)
        evals, reached = 0, False
        if history and self.target_error is not None and history[-1][1] <= self.target_error:
            reached = True
        while not reached and step < self.steps:
            length = min(self.eval_every, self.steps - step)
            for i in range(step, step + length):
                params, opt_state, _ = _step(
                    params, opt_state, self.model, self.x, self.seg, self.baseline, self.kdata,
                    np.int32(i), spec=self.spec, batch=self.batch, n_coalitions=self.n_coal,
                    paired=self.paired, lr=self.lr, average=self.average,
                    batch_size=self.batch_size)
            step += length
            evals += length * self.step_evals()
            if self.val is not None:
                history.append((step, self.validate(opt_state[1])))
                evals += self.val_evals()
                reached = self.target_error is not None and history[-1][1] <= self.target_error
            if self.checkpoint is not None:
                self.save(params, opt_state, step, history)
        if self.val is not None and not history:
            history.append((step, self.validate(opt_state[1])))
            evals += self.val_evals()
        return AmortisedFit(self.explainer(opt_state[1]), step, evals, 0.0, tuple(history), reached)

    def explainer(self, params: Any) -> A.AmortisedExplainer:
        return A.AmortisedExplainer(self.spec, params, self.seg, self.baseline)

    def validate(self, params: Any) -> float:
        x_val, t_val, ref = self.val
        if t_val is None:
            loss = _val_loss(params, self.model, x_val, self.seg, self.baseline, self.kdata,
                             spec=self.spec, n_coalitions=self.n_coal, paired=self.paired,
                             batch_size=self.batch_size)
            return float(loss)
        e = A._explain(self.model, x_val, t_val, self.explainer(params),
                       batch_size=self.batch_size)
        return float(jnp.sqrt(jnp.mean(jnp.square(e.values - ref))))

    # -- checkpoints -------------------------------------------------------------------------
    def header(self) -> dict:
        key = np.asarray(jax.random.key_data(self.key)).tobytes()
        return dict(A.header_of(self.spec), format=CHECKPOINT_FORMAT, batch=self.batch,
                    n_coalitions=self.n_coal, paired=self.paired, average=self.average,
                    learning_rate=self.lr if not callable(self.lr) else
                    f"schedule {getattr(self.lr, '__qualname__', type(self.lr).__name__)}",
                    eval_every=self.eval_every, key=hashlib.sha1(key).hexdigest()[:16],
                    data=_digest(self.x), baseline=_digest(self.baseline))

    def save(self, params, opt_state, step: int, history: list) -> None:
        state = {"params": params, "opt_state": opt_state,
                 "history": np.asarray(history, np.float64).reshape(-1, 2)}
        head = json.dumps(dict(self.header(), step=step)).encode()
        tmp = f"{self.checkpoint}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(head + b"\n")
            f.write(serialization.to_bytes(jax.device_get(state)))
        os.replace(tmp, self.checkpoint)

    def resume(self, params, opt_state):
        header, blob = A.read_file(self.checkpoint, CHECKPOINT_FORMAT)
        step = int(header.pop("step"))
        mine = self.header()
        differ = sorted(k for k in set(mine) | set(header) if mine.get(k) != header.get(k))
        if differ:
            V.fail("checkpoint", f"a checkpoint of a run with the same settings (or a new "
                   f"path); {self.checkpoint!r} differs in {differ}", "a different run")
        state = serialization.msgpack_restore(blob)
        params = serialization.from_state_dict(params, state["params"])
        opt_state = serialization.from_state_dict(opt_state, state["opt_state"])
        history = [(int(s), float(e)) for s, e in np.asarray(state["history"]).reshape(-1, 2)]
        return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, opt_state), \
            step, history


def _digest(a: Any) -> str | None:
    if a is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


# ---- the programs ------------------------------------------------------------------------------


def game(model, xb, seg, baseline, spec: Spec, masks, batch_size):
    """Model outputs on the coalitions `masks (B, S, d)` of images `xb`, and at `xb` and
    the baseline: `(values (B, S, K), f(x) (B, K), f(baseline) (B, K))`."""
    n, s, d = masks.shape
    segb = jnp.broadcast_to(seg, (n,) + seg.shape)
    b = features.make_baseline(spec.mode, baseline, xb, segb, d)
    out = outputs_2d(batching.chunked_apply(model, jnp.concatenate([xb, b]), batch_size,
                                            repeats=True))
    flat = masks.reshape(n * s, d)

    def chunk(start, size):
        ex, _ = batching.flat_index(start, size, s)
        m = jax.lax.dynamic_slice_in_dim(flat, start, size)
        return outputs_2d(model(features.apply_coalitions(xb[ex], b[ex], segb[ex], m)))

    values = batching.chunked_map(chunk, n * s, batch_size, repeats=True)
    return values.reshape(n, s, -1), out[:n], out[n:]


def _loss(params, spec, xb, masks, values, fx, f0):
    phi = efficient(spec.net.apply(params, xb).astype(jnp.float32), fx - f0)
    return coalition_loss(phi, masks, values, f0)


@functools.partial(jit, static_argnames=("spec", "batch", "n_coalitions", "paired", "lr",
                                         "average", "batch_size"))
def _step(params, opt_state, model, x, seg, baseline, key, step, *, spec, batch, n_coalitions,
          paired, lr, average, batch_size):
    """One optimisation step (one program per step, not a `lax.scan` of steps: XLA:CPU
    ran the explainer's gradients about 4x slower inside a loop body, 170 ms against
    45 ms a step for the digits benchmark's settings)."""
    draws = draws_per_row(n_coalitions, paired)
    bits = jax.random.bits(jax.random.fold_in(key, step), (batch, 1 + draws * (spec.d + 1)),
                           jnp.uint32)
    xb = x[bits[:, 0] % x.shape[0]]  # images drawn with replacement
    masks = coalitions_from_bits(bits[:, 1:].reshape(batch, draws, spec.d + 1), spec.d, paired)
    values, fx, f0 = game(model, xb, seg, baseline, spec, masks, batch_size)
    loss, grads = jax.value_and_grad(_loss)(params, spec, xb, masks, values, fx, f0)
    updates, adam = optax.adam(lr).update(grads, opt_state[0], params)
    params = optax.apply_updates(params, updates)
    if average is None:
        return params, (adam, params), loss
    t = step.astype(jnp.float32)
    decay = jnp.minimum(jnp.float32(average), (1.0 + t) / (10.0 + t))
    mean = optax.incremental_update(params, opt_state[1], 1.0 - decay)
    return params, (adam, mean), loss


@functools.partial(jit, static_argnames=("spec", "n_coalitions", "paired", "batch_size"))
def _val_loss(params, model, x_val, seg, baseline, key, *, spec, n_coalitions, paired,
              batch_size):
    k = jax.random.fold_in(key, VALIDATION_STREAM)  # fixed coalitions, never a step's
    draws = draws_per_row(n_coalitions, paired)
    bits = jax.random.bits(k, (x_val.shape[0], draws, spec.d + 1), jnp.uint32)
    masks = coalitions_from_bits(bits, spec.d, paired)
    values, fx, f0 = game(model, x_val, seg, baseline, spec, masks, batch_size)
    return _loss(params, spec, x_val, masks, values, fx, f0)
