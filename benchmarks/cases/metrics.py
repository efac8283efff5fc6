"""Cases of the metrics: deletion (Quantus PixelFlipping as its peer) at 64 steps on 16
images, ROAD at 10 fractions on 16 images."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

import jaxplain as jx

from .. import peers as P
from .base import Bench, Ctx, on_device, rel_err, verdict


def deletion(ctx: Ctx, fn: Callable) -> Bench:
    n, steps = 16, 64
    x = ctx.images(n)
    t = ctx.targets(x)
    model = ctx.model
    sal = np.asarray(jx.saliency(model, x, target=t).values)
    # One value per pixel, made tie-free with jaxplain's own order (ties by pixel
    # index): Quantus breaks ties arbitrarily (unstable argsort), see P.distinct_ranks.
    attr = P.distinct_ranks(sal.sum(-1))
    # logits, as Quantus is run (softmax=False); the probability default adds one softmax
    call = lambda m, xx, aa, t: fn(m, xx, aa, target=t, steps=steps, softmax=False)
    size = ctx.spec.size
    b = Bench(
        n,
        n * (steps + 1),
        {"steps": steps, "baseline": "zero", "softmax": False,
         "attributions": "saliency (channel sum), tie-free"},
        # attributions as an argument: a captured constant makes XLA constant-fold the sort
        on_device(call, model, x, attr, t),
        x,
        t,
        reported_evals=False,
        note="limit = (steps + 1) forwards per image",
    )
    if ctx.peer("quantus") and (size * size) % steps == 0:
        name = "quantus.PixelFlipping"
        b.peers[name] = P.quantus_pixel_flipping(
            ctx.torch_model, x, t, attr, pixels_per_step=size * size // steps
        )
        b.peer_evals[name] = n * steps  # Quantus skips the unperturbed image
        b.note += (
            "; Quantus PixelFlipping: logits, baseline 0.0, the same pixels per step, "
            "steps forwards per image (jaxplain also evaluates the unperturbed image)"
        )

        def agree(out, peer_out):
            ours = np.asarray(out)[:, 1:]  # values after 1..steps removal steps
            ref = np.asarray(peer_out[name], np.float64)
            return [verdict("deletion", name, rel_err(ours, ref), 1e-4, steps=steps)]

        b.agreement = agree
    else:
        b.note += "; no peer (Quantus is not installed or the twin is not verified)"
    return b


def road(ctx: Ctx, fn: Callable) -> Bench:
    """ROAD (MoRF, noisy linear imputation) at 10 fractions on 16 images.

    No peer: Quantus 0.6.0's `ROAD` fails on RGB inputs (it broadcasts the
    attributions over the channels, ranks C * H * W entries and indexes the
    H * W imputation grid with them: IndexError), and no other peer implements it.
    """
    n, fractions = 16, tuple(round(0.1 * i, 1) for i in range(10))
    x = ctx.images(n)
    t = ctx.targets(x)
    model, key = ctx.model, jax.random.key(0)
    sal = np.asarray(jx.saliency(model, x, target=t).values)
    attr = P.distinct_ranks(sal.sum(-1))
    call = lambda m, xx, aa, t: fn(m, xx, aa, target=t, key=key, fractions=fractions)
    return Bench(
        n,
        n * len(fractions),
        {"fractions": list(fractions), "order": "morf", "noise_std": 0.01},
        on_device(call, model, x, attr, t),
        x,
        t,
        note="limit = one forward per image and fraction; jaxplain's time also holds the "
        "linear solves of the imputation; no peer (Quantus 0.6.0 ROAD fails on RGB inputs)",
    )
