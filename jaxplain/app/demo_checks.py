"""The demo checks every method it shows, and says which fail.

Two checks per method, on the explained test images, each judged per image and
passed only when the margin exceeds two standard errors over the images:

- **deletion**: grid cells are removed (set to black) in the order of the method's
  importance, and the predicted class's probability is followed. A method passes
  when its deletion AUC is below that of a random order (the mean over `n_random`
  random orders) by more than two standard errors of the per-image difference:
  it finds what the prediction rests on faster than chance.
- **ink**: the share of the method's positive attribution that falls on the
  digit's strokes (pixels of intensity at least `INK`). A method passes when that
  share exceeds the strokes' share of the image by more than two standard errors:
  it points at the digit more than a uniform map would.

Insertion AUCs (cells put back into a black image, most important first; a random
order as reference) are reported as well, not judged. Both curves start from black:
the digits' background is black, and a blurred digit (the library's insertion
default) is still recognised, which leaves insertion nothing to measure here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import jaxplain as jx

INK = 0.1
"""Pixels of at least this intensity (in [0, 1]) are the digit's ink."""
MARGIN = 2.0
"""A check passes when its margin exceeds this many standard errors over the images."""


def _mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


@dataclass
class Checks:
    """Per-image scores of every method and the references they are judged by.

    `deletion`, `insertion`, `ink` map a method to its per-image values `(N,)`;
    `random_deletion`, `random_insertion` are per image (means over the random
    orders), `ink_share` the ink's share of each image.
    """

    deletion: dict[str, np.ndarray] = field(default_factory=dict)
    insertion: dict[str, np.ndarray] = field(default_factory=dict)
    ink: dict[str, np.ndarray] = field(default_factory=dict)
    random_deletion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    random_insertion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ink_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_random: int = 0
    curves: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def failures(self, name: str) -> list[str]:
        """Why `name` fails its checks (empty: it passes both)."""
        out = []
        if name in self.deletion:
            m, se = _mean_se(self.deletion[name] - self.random_deletion)
            if not m + MARGIN * se < 0:
                out.append(f"deletion AUC {self.deletion[name].mean():.3f} is not clearly below "
                           f"a random order's {self.random_deletion.mean():.3f} (difference "
                           f"{m:+.3f} ± {se:.3f} per image)")
        if name in self.ink:
            m, se = _mean_se(self.ink[name] - self.ink_share)
            if not m - MARGIN * se > 0:
                out.append(f"{self.ink[name].mean():.0%} of its positive mass on the ink, not "
                           f"clearly above the ink's {self.ink_share.mean():.0%} of the image")
        return out

    def failed(self) -> dict[str, list[str]]:
        return {n: f for n in self.deletion if (f := self.failures(n))}


def run_checks(model, x, maps: dict[str, np.ndarray], target, segments, *, seed: int = 0,
               steps: int = 16, n_random: int = 4) -> Checks:
    """Scores every map: deletion and insertion AUCs (probabilities, `segments` as the
    features, black as the removed value) against `n_random` random orders, and the
    positive mass on the ink.

    The maps share one shape, so each metric compiles once; the statistics around
    them are NumPy (no small XLA programs to compile)."""
    c = Checks(n_random=n_random)
    kw = dict(target=target, steps=steps, segments=segments, baseline="zero")
    xs = np.asarray(x)
    ink = (xs[..., 0] if xs.ndim == 4 else xs) >= INK
    c.ink_share = ink.reshape(len(ink), -1).mean(1)
    for name, m in maps.items():
        try:
            m = np.asarray(m, np.float32)
            d, i = jx.deletion(model, x, m, **kw), jx.insertion(model, x, m, **kw)
            c.curves[name] = (d, i)
            c.deletion[name], c.insertion[name] = np.asarray(d.auc), np.asarray(i.auc)
            c.ink[name] = np.asarray(jx.relevance_mass(m, ink))
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            c.errors[f"{name} (checks)"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    rng = np.random.default_rng(seed)
    dele, ins = [], []
    for _ in range(n_random):
        noise = rng.normal(size=xs.shape[:3]).astype(np.float32)
        dele.append(jx.deletion(model, x, noise, **kw))
        ins.append(jx.insertion(model, x, noise, **kw))
    c.random_deletion = np.mean([np.asarray(d.auc) for d in dele], axis=0)
    c.random_insertion = np.mean([np.asarray(i.auc) for i in ins], axis=0)
    c.curves["(random)"] = (dele[0], ins[0])
    return c


def table(c: Checks) -> tuple[list[str], list[list[str]]]:
    """The report's table: one row per method (best deletion first), then the references."""
    header = ["method", "deletion AUC (lower is better)", "insertion AUC (higher is better)",
              "positive mass on the ink", "check"]
    rows = []
    for name in sorted(c.deletion, key=lambda n: c.deletion[n].mean()):
        fails = c.failures(name)
        rows.append([name, f"{c.deletion[name].mean():.3f}", f"{c.insertion[name].mean():.3f}",
                     f"{c.ink[name].mean():.0%}",
                     "ok" if not fails else "**FAILS**: " + "; ".join(fails)])
    rows.append([f"(random order, mean of {c.n_random})", f"{c.random_deletion.mean():.3f}",
                 f"{c.random_insertion.mean():.3f}",
                 f"{c.ink_share.mean():.0%} (ink's share of the image)", ""])
    return header, rows


def summary(c: Checks) -> str:
    """One sentence: every method passes, or which fail."""
    failed = c.failed()
    n = len(c.deletion)
    if not failed:
        return (f"Checks: all {n} methods beat a random order on deletion (AUC "
                f"{c.random_deletion.mean():.3f}) and put more of their positive attribution on "
                f"the ink than its {c.ink_share.mean():.0%} share of the image, each by more "
                f"than {MARGIN:g} standard errors over the {len(c.ink_share)} images.")
    return (f"**Checks: {len(failed)} of {n} methods FAIL**: " + "; ".join(
        f"{name} ({', '.join(f)})" for name, f in failed.items()) + ". See Faithfulness.")
