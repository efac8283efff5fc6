"""The compile layer: how jaxplain's programs are traced and compiled.

- `jit`: every jitted program of jaxplain goes through it (per-program flags,
  XLA options for CPU programs);
- the hook the rest of the library calls to reach the XLA:CPU machinery of
  `cpu.py` (`tuned`, `tuned_rule`, `tuned_eqn`, `pool`, `default_chunk`,
  `keep_numpy`), active only when `JAXPLAIN_CPU_REWRITES` says so (`config`);
- `jaxpr`: the backend-neutral jaxpr interpreter every rewrite is built on.

Nothing outside this package imports `cpu.py`.
"""

from .hook import Flags as Flags
from .hook import active as active
from .hook import before_dispatch as before_dispatch
from .hook import compiler_options as compiler_options
from .hook import default_chunk as default_chunk
from .hook import default_platform as default_platform
from .hook import eager as eager
from .hook import jit as jit
from .hook import keep_numpy as keep_numpy
from .hook import mark_requests as mark_requests
from .hook import marked as marked
from .hook import members_side_by_side as members_side_by_side
from .hook import platform_of as platform_of
from .hook import pool as pool
from .hook import report_requests as report_requests
from .hook import reporting as reporting
from .hook import rewrites_for as rewrites_for
from .hook import tracing as tracing
from .hook import tuned as tuned
from .hook import tuned_eqn as tuned_eqn
from .hook import tuned_rule as tuned_rule
from .jaxpr import OPAQUE as OPAQUE
from .jaxpr import accumulator as accumulator
from .switch import CPU_REWRITES_ENV as CPU_REWRITES_ENV
from .switch import Config as Config
from .switch import config as config
from .switch import numpy_rules as numpy_rules
