"""jaxplain's settings, and the switch of the CPU rewrites (`JAXPLAIN_CPU_REWRITES`).

A setting is read, in order, from the innermost `config.override(...)` block of
the calling thread, then `config.update(...)`, then its environment variable,
then its default. Reading is cheap (a dict lookup and an `os.environ` read), so
it happens per call: a test or a script can change the environment between
calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

CPU_REWRITES_ENV = "JAXPLAIN_CPU_REWRITES"
REWRITE_MODES = ("auto", "0", "1")

STRICT_NUMPY_ENV = "JAXPLAIN_STRICT_NUMPY"

_SETTINGS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (environment variable, allowed values, default)
    "cpu_rewrites": (CPU_REWRITES_ENV, REWRITE_MODES, "auto"),
    "strict_numpy": (STRICT_NUMPY_ENV, ("0", "1"), "0"),
}
_MEANING = {
    "cpu_rewrites": "('auto': on for programs that run on CPU devices, '0': off everywhere, "
                    "'1': on everywhere)",
    "strict_numpy": "('1': jaxplain's own code runs with jax_numpy_dtype_promotion='strict' "
                    "and jax_numpy_rank_promotion='raise', the model with JAX's defaults)",
}


def _normal(name: str, value: Any, source: str) -> str:
    env, allowed, _ = _SETTINGS[name]
    if isinstance(value, bool):
        value = "1" if value else "0"
    elif isinstance(value, int) and value in (0, 1):
        value = str(value)
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise ValueError(f"{source}: expected one of {allowed} {_MEANING[name]}, got {value!r}")
    return value.strip().lower()


class Config:
    """jaxplain's process-wide settings.

    `cpu_rewrites` (environment variable `JAXPLAIN_CPU_REWRITES`): `"auto"` (the
    default) applies the XLA:CPU rewrites of `jaxplain/_compile/cpu.py` to programs
    that run on CPU devices, `"0"` turns them off everywhere (the path an
    accelerator takes), `"1"` turns them on everywhere. Values, not speed, are the
    same either way (float32 round-off).

    `strict_numpy` (`JAXPLAIN_STRICT_NUMPY`, default `"0"`): `"1"` runs the public
    methods with `jax_numpy_dtype_promotion="strict"` and
    `jax_numpy_rank_promotion="raise"`, and the user's model with JAX's defaults
    (Flax's own layers broadcast biases and divide by integer counts). The test
    suite turns it on, so jaxplain's code never relies on implicit promotion.

    >>> import jaxplain as jx
    >>> with jx.config.override(cpu_rewrites="0"):
    ...     jx.config.read("cpu_rewrites")
    '0'
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._local = threading.local()

    def update(self, name: str, value: Any) -> None:
        """Sets `name` for the whole process (until the next `update`)."""
        self._check_name(name)
        self._values[name] = _normal(name, value, name)

    def reset(self, name: str) -> None:
        """Forgets an `update` of `name`: the environment variable and default apply again."""
        self._check_name(name)
        self._values.pop(name, None)

    def read(self, name: str) -> str:
        """The value of `name` in effect for the calling thread."""
        self._check_name(name)
        for frame in reversed(getattr(self._local, "stack", ())):
            if name in frame:
                return frame[name]
        if name in self._values:
            return self._values[name]
        env, _, default = _SETTINGS[name]
        raw = os.environ.get(env)
        if raw is None or raw.strip() == "":
            return default
        return _normal(name, raw, f"{env} (environment variable)")

    def snapshot(self) -> dict[str, str]:
        """The settings made with `update` (not the environment's), for `restore`."""
        return dict(self._values)

    def restore(self, snapshot: dict[str, str]) -> None:
        """Puts back the settings of a `snapshot()`, dropping any made since."""
        for name, value in snapshot.items():
            self._check_name(name)
        self._values = dict(snapshot)

    @contextlib.contextmanager
    def override(self, **settings: Any) -> Iterator[None]:
        """Sets settings for the calling thread inside a `with` block."""
        frame = {}
        for name, value in settings.items():
            self._check_name(name)
            frame[name] = _normal(name, value, name)
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in _SETTINGS:
            raise ValueError(f"name: expected one of {tuple(_SETTINGS)}, got {name!r}")

    def __repr__(self) -> str:
        return f"Config({ {n: self.read(n) for n in _SETTINGS} })"


config = Config()


@contextlib.contextmanager
def numpy_rules(strict: bool) -> Iterator[None]:
    """JAX's dtype and rank promotion rules: strict (`"strict"`, `"raise"`) or JAX's
    defaults (`"standard"`, `"allow"`)."""
    import jax

    with jax.numpy_dtype_promotion("strict" if strict else "standard"), \
            jax.numpy_rank_promotion("raise" if strict else "allow"):
        yield
