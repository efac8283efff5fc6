"""The method registry: one entry per public method, and the contract they share.

A method is registered where it is defined::

    @registry.method("gradients", evals=lambda a: a["steps"] + 2, cheap={"steps": 2})
    def integrated_gradients(model, x, *, target, baseline=0.0, steps=50, ...):

The decorator checks the contract (`model, x` then keyword-only configuration;
`key` required, with no default, exactly where a method draws random numbers;
`batch_size=None` wherever the model is evaluated), adds the one `progress=`
mechanism, and records the entry that `jaxplain/__init__.py` exports and that
the tests' method table, the demo, the CLI and the benchmarks read. Adding a
method is: write the function, decorate it, write its value tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

import jax
import numpy as np

from .._compile import config, eager, numpy_rules
from . import progress as _progress
from .chunks import device_batch_size
from .values import deferred_checks, unchecked

FAMILIES = ("gradients", "cam", "layer", "perturbation", "shapley", "outputs", "attention",
            "concepts", "training", "metrics")
"""The families of the method table, in the order the README lists them."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered method.

    Attributes:
      name: the public name (`jaxplain.<name>`).
      fn: the public function (with `progress=`).
      family: one of `FAMILIES`.
      evals: `evals(arguments) -> int`, model evaluations per example for the
        bound arguments (defaults applied), or `(N,)` ints where examples differ
        (the rows a chunk repeats are counted), or None when unknown.
      evals_bound: `evals` is an upper bound (iterative methods that stop early),
        not the exact count.
      cheap: small settings for fast calls (tests, smoke runs).
      demo: the settings the demo and the CLI run it with (None: not shown).
      summary: the first line of the docstring.
    """

    name: str
    fn: Callable
    family: str
    evals: Callable[[Mapping[str, Any]], int] | None
    evals_bound: bool
    cheap: Mapping[str, Any]
    demo: Mapping[str, Any] | None
    summary: str

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @property
    def stochastic(self) -> bool:
        """Whether the method draws random numbers (takes a required `key`)."""
        return "key" in self.signature.parameters

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the arguments with no default (the model and `x` included)."""
        return tuple(p.name for p in self.signature.parameters.values()
                     if p.default is inspect.Parameter.empty
                     and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def per_example(self, *args: Any, **kwargs: Any) -> int | None:
        """Model evaluations per example of the call `fn(*args, **kwargs)` (None: unknown);
        the most any example needs where they differ (rows a last chunk repeats)."""
        counts = self._counts(args, kwargs)
        return None if counts is None else int(np.max(counts))

    def total(self, *args: Any, **kwargs: Any) -> int | None:
        """Model evaluations of the call `fn(*args, **kwargs)` summed over its examples."""
        counts = self._counts(args, kwargs)
        if counts is None or np.ndim(counts):
            return None if counts is None else int(np.sum(counts))
        x = kwargs.get("x", args[1] if len(args) > 1 else None)
        shape = np.shape(x) if x is not None and hasattr(x, "shape") else None
        return int(counts) * int(shape[0]) if shape else None

    def _counts(self, args: tuple, kwargs: dict) -> Any:
        """`evals` of the bound call: an int (every example) or `(N,)` ints, None: unknown."""
        if self.evals is None:
            return None
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        try:
            out = self.evals(bound.arguments)
            return int(out) if np.ndim(out) == 0 else np.asarray(out, np.int64)
        except Exception:  # noqa: BLE001 - invalid arguments: the method reports them
            return None


REGISTRY: dict[str, Entry] = {}


def _traced_only(fn: Callable, args: tuple, kwargs: dict) -> None:
    """The checks of a call of `fn`, tracing it without compiling or running anything
    (device value checks dropped: the call itself runs them)."""
    with unchecked():
        jax.eval_shape(lambda: fn(*args, **kwargs))


def method(family: str, *, evals: Callable[[Mapping[str, Any]], int] | None = None,
           evals_bound: bool = False, cheap: Mapping[str, Any] | None = None,
           demo: Mapping[str, Any] | None = None) -> Callable[[Callable], Callable]:
    """Registers the decorated public method (see the module docstring)."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        check_contract(fn.__name__, sig, family)
        public = _with_progress(fn, sig, evals) if "model" in sig.parameters else _with_checks(fn)
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[fn.__name__] = Entry(fn.__name__, public, family, evals, evals_bound,
                                      dict(cheap or {}),
                                      None if demo is None else dict(demo),
                                      doc[0] if doc else "")
        return public

    return deco


def check_contract(name: str, sig: inspect.Signature, family: str) -> None:
    """Raises `TypeError` (at import) when a method's signature breaks the contract.

    Metrics take what they score positionally: `(model, x, attributions)`, or the
    attributions alone (`sparseness`) or two maps (`ssim`)."""
    params = list(sig.parameters.values())
    problems = []
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    allowed = (["model", "x"],) if family != "metrics" else (
        ["model", "x", "attributions"], ["attributions"], ["attributions", "mask"], ["a", "b"])
    if positional not in allowed:
        shown = " or ".join("(" + ", ".join(a) + ", *, ...)" for a in allowed)
        problems.append(f"positional arguments {positional}, expected {shown}")
    key = sig.parameters.get("key")
    if key is not None and key.default is not inspect.Parameter.empty:
        problems.append("`key` has a default; a method that draws random numbers requires it")
    bs = sig.parameters.get("batch_size")
    if bs is None and "model" in sig.parameters and "explain" not in sig.parameters:
        problems.append("no `batch_size`: every method that evaluates the model takes one "
                        "(methods running a user's `explain` leave the chunking to it)")
    elif bs is not None and bs.default is not None:
        problems.append("`batch_size` defaults to something other than None")
    if "progress" in sig.parameters:
        problems.append("`progress` is added by the registry; do not declare it")
    if problems:
        raise TypeError(f"{name}: breaks the method contract: " + "; ".join(problems))


AUTO_EVALS = 20_000
"""`progress="auto"` shows a bar when a call needs at least this many model
evaluations (about 2 s for the small benchmark CNN on 2 CPU cores), and only once
it has run for `AUTO_DELAY` seconds."""
AUTO_DELAY = 2.0


def _with_checks(fn: Callable) -> Callable:
    """`fn` with the deferred device checks of a call (one read for all its arguments);
    the wrapper of the methods that evaluate no model (metrics of maps and masks)."""

    @functools.wraps(fn)
    def public(*args: Any, **kwargs: Any):
        with _own_rules():
            if not eager():
                return fn(*args, **kwargs)
            with deferred_checks():
                return fn(*args, **kwargs)

    return public


def _own_rules() -> contextlib.AbstractContextManager:
    """JAX's strict promotion rules around jaxplain's own code when the setting
    `strict_numpy` is on (the test suite's; `models.Model` relaxes them for the user's
    model), else nothing."""
    return numpy_rules(True) if config.read("strict_numpy") == "1" else contextlib.nullcontext()


def _with_progress(fn: Callable, sig: inspect.Signature, evals) -> Callable:
    """`fn` with the one `progress=` mechanism, the deferred device checks of a call, and
    on accelerators a memory-sized default `batch_size` (`chunks.device_batch_size`)."""
    name = fn.__name__
    chunked = "batch_size" in sig.parameters and list(sig.parameters)[:2] == ["model", "x"]

    @functools.wraps(fn)
    def public(*args: Any, progress: bool | str = "auto", **kwargs: Any):
        with _own_rules():
            if not eager():
                return fn(*args, **kwargs)
            with deferred_checks():
                return _call(args, kwargs, progress)

    def _call(args: tuple, kwargs: dict, progress: bool | str):
        if chunked and kwargs.get("batch_size") is None:
            x = args[1] if len(args) > 1 else kwargs.get("x")
            model = args[0] if args else kwargs.get("model")
            if isinstance(x, jax.Array) or hasattr(x, "shape"):
                rows = device_batch_size(  # None on CPU: the compile layer's default
                    model, x, checks=lambda: _traced_only(fn, args, kwargs))
                if rows is not None:
                    kwargs = dict(kwargs, batch_size=rows)
        if progress is False:
            return fn(*args, **kwargs)
        if progress is not True and progress != "auto":
            raise TypeError(f"progress: expected True, False or 'auto', got {progress!r}")
        total = None
        if evals is not None:
            entry = REGISTRY.get(name)
            total = entry.total(*args, **kwargs) if entry is not None else None
        if progress == "auto" and (total is None or total < AUTO_EVALS):
            return fn(*args, **kwargs)
        delay = AUTO_DELAY if progress == "auto" else 0.0
        return _progress.with_bar(lambda: fn(*args, **kwargs), total=total, desc=name,
                                  delay=delay)

    params = list(sig.parameters.values())
    extra = inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default="auto")
    last = [p for p in params if p.kind is p.VAR_KEYWORD]
    public.__signature__ = sig.replace(parameters=[p for p in params if p not in last]
                                       + [extra] + last)
    return public


def get(name: str) -> Entry:
    """The entry named `name`; a `ValueError` listing the methods otherwise."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"method: expected one of {sorted(REGISTRY)}, got {name!r}")
    return entry


def entries(*families: str) -> list[Entry]:
    """The registered methods (of `families`, or all), in `FAMILIES` then definition order."""
    chosen = [e for e in REGISTRY.values() if not families or e.family in families]
    return sorted(chosen, key=lambda e: FAMILIES.index(e.family))
