"""Run several attribution methods and several metrics in one call, and rank the methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import base as B
from . import curves as M
from . import faithfulness as F
from . import localisation as L
from . import road
from . import robustness as R
from . import sanity as S
from .._core import validate as V
from .._core.models import as_model


class _Spec(NamedTuple):
    fn: Callable
    uses_model: bool  # called as fn(model, x, a, ...) rather than fn(a, ...)
    post: Callable
    higher_is_better: bool | None
    needs: tuple[str, ...] = ()  # context entries that must be given (key, mask)


def _registry() -> dict[str, _Spec]:
    auc, same = (lambda r: r.auc), _same
    absval = jnp.abs
    return {
        "deletion": _Spec(M.deletion, True, auc, False),
        "insertion": _Spec(M.insertion, True, auc, True),
        "monotonicity": _Spec(M.monotonicity, True, same, True),
        "road": _Spec(road.road, True, auc, False, ("key",)),  # MoRF by default: lower is better
        "faithfulness_correlation": _Spec(F.faithfulness_correlation, True, same, True, ("key",)),
        "infidelity": _Spec(F.infidelity, True, same, False, ("key",)),
        "max_sensitivity": _Spec(R.max_sensitivity, True, same, False, ("key",)),
        "avg_sensitivity": _Spec(R.avg_sensitivity, True, same, False, ("key",)),
        "local_lipschitz_estimate": _Spec(R.local_lipschitz_estimate, True, same, False, ("key",)),
        "pointing_game": _Spec(L.pointing_game, False, same, True, ("mask",)),
        "relevance_mass": _Spec(L.relevance_mass, False, same, True, ("mask",)),
        "relevance_rank_accuracy": _Spec(L.relevance_rank_accuracy, False, same, True, ("mask",)),
        "sparseness": _Spec(L.sparseness, False, same, True),
        "complexity": _Spec(L.complexity, False, same, False),
        "completeness_gap": _Spec(L.completeness_gap, True, absval, False),
        "efficiency_gap": _Spec(L.efficiency_gap, True, absval, False),
        "model_parameter_randomisation": _Spec(
            S.model_parameter_randomisation, True, lambda r: r.spearman.mean(0), False, ("key",)
        ),
        "random_logit": _Spec(S.random_logit, True, same, False, ("key",)),
    }


METRICS = (
    "deletion",
    "insertion",
    "monotonicity",
    "road",
    "faithfulness_correlation",
    "infidelity",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "pointing_game",
    "relevance_mass",
    "relevance_rank_accuracy",
    "sparseness",
    "complexity",
    "completeness_gap",
    "efficiency_gap",
    "model_parameter_randomisation",
    "random_logit",
)
DEFAULT_METRICS = ("deletion", "insertion", "faithfulness_correlation", "sparseness", "complexity")


class MetricTable(Mapping):
    """Per-example metric values for several methods: `table[metric] -> (n_methods, N)`.

    A read-only dict of NumPy arrays. `mean()` averages over examples,
    `to_numpy()` gives the `(n_methods, n_metrics)` matrix of means, `ranking(m)`
    sorts the methods best first, and `str(table)` is a plain-text table.

    Attributes:
      methods: the method names, in the order of the rows.
      higher_is_better: per metric, True / False, or None when unknown.
    """

    def __init__(
        self,
        methods: tuple[str, ...],
        values: dict[str, np.ndarray],
        higher_is_better: dict[str, bool | None],
    ):
        self.methods = tuple(methods)
        self._values = dict(values)
        self.higher_is_better = dict(higher_is_better)

    def __getitem__(self, metric: str) -> np.ndarray:
        return self._values[metric]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self._values)

    def mean(self) -> dict[str, np.ndarray]:
        """Metric -> `(n_methods,)` means over examples (NaNs ignored)."""
        return {m: np.nanmean(v, axis=1) for m, v in self._values.items()}

    def stderr(self) -> dict[str, np.ndarray]:
        """Metric -> `(n_methods,)` standard errors of the means."""
        out = {}
        for m, v in self._values.items():
            k = np.maximum(np.sum(np.isfinite(v), axis=1), 1)
            out[m] = np.nanstd(v, axis=1, ddof=1 if v.shape[1] > 1 else 0) / np.sqrt(k)
        return out

    def to_numpy(self) -> np.ndarray:
        """`(n_methods, n_metrics)` means, rows in `methods` order, columns in `metrics` order."""
        means = self.mean()
        return np.stack([means[m] for m in self.metrics], axis=1)

    def ranking(self, metric: str) -> list[str]:
        """Method names sorted best first on `metric` (needs a known direction)."""
        hib = self.higher_is_better.get(metric)
        if hib is None:
            raise ValueError(
                f"metric: {metric!r} has no known direction; pass (fn, higher_is_better)"
            )
        mean = self.mean()[metric]
        order = np.argsort(-mean if hib else mean, kind="stable")
        return [self.methods[i] for i in order]

    def to_text(self, precision: int = 4) -> str:
        """A plain-text table: mean +- standard error; `*` marks the best method per metric."""
        means, errs = self.mean(), self.stderr()
        head = ["method"] + [
            m + {True: " (+)", False: " (-)", None: ""}[self.higher_is_better[m]]
            for m in self.metrics
        ]
        rows = []
        for i, name in enumerate(self.methods):
            row = [name]
            for m in self.metrics:
                hib = self.higher_is_better[m]
                best = (
                    hib is not None
                    and np.isfinite(means[m]).any()
                    and i == int(np.nanargmax(means[m]) if hib else np.nanargmin(means[m]))
                )
                row.append(
                    f"{means[m][i]:.{precision}f} +- {errs[m][i]:.{precision}f}"
                    + ("*" if best else " ")
                )
            rows.append(row)
        widths = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
        lines.append("(+) higher is better, (-) lower is better, * best")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"MetricTable(methods={self.methods}, metrics={self.metrics})"


def _accepted(fn: Callable, kwargs: dict) -> dict:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def evaluate(
    methods: Mapping[str, Callable],
    model: Any,
    x: Any,
    *,
    target: Any,
    metrics: Any = DEFAULT_METRICS,
    key: Any = None,
    mask: Any = None,
    segments: Any = None,
    batch_size: int | None = None,
) -> MetricTable:
    """Runs every attribution method once and scores it with every metric.

    Args:
      methods: name -> `explain(model, x) -> array or Explanation` (it receives
        `target=` when it takes one), e.g.
        `{"saliency": lambda m, x, target: jx.saliency(m, x, target=target)}`.
      model: a `Model`, NNX module or callable.
      x: the inputs explained.
      target: the target (see `as_target`).
      metrics: names from `METRICS` (default: deletion, insertion, faithfulness
        correlation, sparseness, complexity), or a mapping name -> name, callable
        or `(callable, higher_is_better)`. A callable is called as
        `fn(model, x, attributions, **kw)` with those of `target`, `key`,
        `explain`, `mask`, `segments`, `batch_size` it accepts, and returns `(N,)`
        values (or a `Curve`, whose `auc` is used).
      key: a `jax.random.key`, required by stochastic metrics; metric `i` uses
        `fold_in(key, i)` for every method, so methods see the same random draws.
      mask: ground-truth masks for the localisation metrics.
      segments: superpixels for the perturbation metrics (default: pixels).
      batch_size: model inputs per chunk for the metrics that chunk.

    Returns:
      A `MetricTable` (metric -> `(n_methods, N)` values).
    """
    if not isinstance(methods, Mapping) or not methods:
        V.fail(
            "methods",
            "a non-empty dict name -> explain(model, x)",
            type(methods).__name__,
            TypeError,
        )
    for name, fn in methods.items():
        if not callable(fn):
            V.fail(
                f"methods[{name!r}]", "a callable explain(model, x)", type(fn).__name__, TypeError
            )
    model = as_model(model)
    x = V.check_array(x)
    registry = _registry()
    specs = _metric_specs(metrics, registry)
    if key is None and any("key" in s.needs for s in specs.values()):
        V.check_key(None)
    key = V.check_key(key) if key is not None else None
    if mask is None and any("mask" in s.needs for s in specs.values()):
        V.fail("mask", "ground-truth masks for the localisation metrics", None, TypeError)
    V.check_batch_size(batch_size)
    values: dict[str, list] = {m: [] for m in specs}
    for name, explain in methods.items():
        a = jax.block_until_ready(B.run_explain(explain, model, x, target))
        for i, (m, spec) in enumerate(specs.items()):
            kw = {
                "target": target,
                "explain": explain,
                "mask": mask,
                "segments": segments,
                "batch_size": batch_size,
                "key": None if key is None else jax.random.fold_in(key, i),
            }
            kw = _accepted(spec.fn, {k: v for k, v in kw.items() if v is not None or k == "target"})
            r = spec.fn(model, x, a, **kw) if spec.uses_model else spec.fn(a, **kw)
            r = spec.post(getattr(r, "auc", r) if spec.post is _same else r)
            r = np.asarray(r, dtype=np.float64)
            if r.shape != (x.shape[0],):
                raise ValueError(
                    f"metrics[{m!r}]: expected one value per example, shape "
                    f"({x.shape[0]},), got shape {r.shape}"
                )
            values[m].append(r)
    return MetricTable(
        tuple(methods),
        {m: np.stack(v) for m, v in values.items()},
        {m: s.higher_is_better for m, s in specs.items()},
    )


def _same(r):
    return r


def _metric_specs(metrics: Any, registry: dict[str, _Spec]) -> dict[str, _Spec]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    items = metrics.items() if isinstance(metrics, Mapping) else [(m, m) for m in metrics]
    specs = {}
    for name, m in items:
        if isinstance(m, str):
            if m not in registry:
                V.fail("metrics", f"names among {list(registry)} or callables", repr(m))
            specs[name] = registry[m]
        elif callable(m):
            specs[name] = _Spec(m, True, _same, None)
        elif isinstance(m, tuple) and len(m) == 2 and callable(m[0]):
            specs[name] = _Spec(m[0], True, _same, None if m[1] is None else bool(m[1]))
        else:
            V.fail(
                f"metrics[{name!r}]",
                "a metric name, a callable or (callable, higher_is_better)",
                type(m).__name__,
                TypeError,
            )
    if not specs:
        V.fail("metrics", "at least one metric", "none")
    return specs
