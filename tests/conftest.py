import gc
import json
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
# jaxplain's own code runs under JAX's strict dtype promotion and raising rank promotion
# (the user's model, optax and the user's explain functions under JAX's defaults):
# an implicit broadcast or int/float mix in the library fails a test, not a user.
os.environ.setdefault("JAXPLAIN_STRICT_NUMPY", "1")

# The suite compiles thousands of small programs, and XLA:CPU's backend optimisation
# (LLVM at -O2) is most of each compile while buying nothing for 8x8 test models:
# level 0 cuts the suite's CPU time by about 40% (measured: test_gradients + test_deeplift
# 180 s -> 110 s of CPU; the ensemble example 42 s -> 24 s). The programs (HLO) and the
# values (float32 round-off) do not depend on it; benchmarks keep XLA's default.
# XLA:CPU also splits each module into parts compiled on threads: for programs this small
# the split costs more than it saves, and with one xdist worker per core the threads only
# compete. One part cuts compile CPU by about 28% (the method table's 51 programs:
# 8.2 s -> 5.9 s) and the suite's user CPU from 827 s to 721 s (one run each).
# JAXPLAIN_TEST_XLA_OPT=default runs the suite at XLA's default level instead.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags and os.environ.get(
        "JAXPLAIN_TEST_XLA_OPT", "") != "default":
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0"
                               " --xla_cpu_use_fusion_emitters=false"
                               " --xla_cpu_parallel_codegen_split_count=1").strip()

# One persistent compilation cache for the run, shared by both xdist workers and every
# subprocess the tests start (they inherit the environment): the same small programs are
# compiled in many test files (and again after `jax.clear_caches()` frees each module's),
# and a hit loads the executable instead of compiling it. Set by the process that starts
# the run (the xdist controller), removed by it at the end; a user's own
# JAX_COMPILATION_CACHE_DIR is left alone, and JAXPLAIN_TEST_COMPILE_CACHE=0 turns it off.
_RUN_CACHE = None
if ("JAX_COMPILATION_CACHE_DIR" not in os.environ
        and os.environ.get("JAXPLAIN_TEST_COMPILE_CACHE", "1") != "0"):
    import tempfile

    _RUN_CACHE = tempfile.mkdtemp(prefix="jaxplain-test-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import jax  # noqa: E402
import pytest  # noqa: E402

import jaxplain as jx  # noqa: E402

# Tests run in float32 as on accelerators; no float64 assumptions.
jax.config.update("jax_enable_x64", False)

# Tracing and lowering allocate millions of short-lived objects, and Python's default
# collector (a young-generation pass every 700 allocations, full passes over everything
# JAX, Flax and NumPy imported) spent much of the suite's CPU on them. Imported objects
# are set aside (`gc.freeze`) and the young generation collected every 100,000
# allocations; each test module still ends with a full `gc.collect()` (below). Measured:
# four method files, two runs each, 132 s and 126 s of user CPU -> 123 s and 116 s (7%);
# the whole suite, one run each, 721 s -> 549 s (24%: a long worker's heap is larger).
gc.freeze()
gc.set_threshold(100_000, 50, 50)


@pytest.fixture(scope="session")
def weights_cache(tmp_path_factory, worker_id):
    """One folder of trained weights for the whole run, shared by the xdist workers: the
    examples and the demo train each model once (`zoo.train_classifier` locks the file)."""
    base = tmp_path_factory.getbasetemp()
    return (base if worker_id == "master" else base.parent) / "weights"


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(autouse=True)
def _config_is_per_test():
    """A test (or a docs page it runs) that calls `jx.config.update` does not leak the
    setting into the tests after it in the same process."""
    saved = jx.config.snapshot()
    yield
    jx.config.restore(saved)


@pytest.fixture(autouse=True)
def _no_persistent_cache_leak(request):
    """JAX's persistent compilation cache is process-wide: a test that turns it on
    (`jx.enable_compilation_cache`, the demo) must not leave every later compile of the
    worker reading and writing a temporary folder."""
    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs,
              jax.config.jax_persistent_cache_min_entry_size_bytes)
    yield
    if jax.config.jax_compilation_cache_dir != before[0]:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", before[2])
        compilation_cache.reset_cache()
        if os.environ.get("JAXPLAIN_TEST_REPORT_CACHE"):
            print(f"\nPERSISTENT CACHE turned on by {request.node.nodeid}")


def _maps() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Frees the compiled programs of a test module after it. Every XLA:CPU executable
    keeps its machine code in memory mappings of its own, and a worker that runs
    thousands of tests reached Linux's 65,530 mappings per process (vm.max_map_count):
    the next compile then crashed the worker (a segfault inside XLA's compile)."""
    yield
    jax.clear_caches()
    gc.collect()
    log = os.environ.get("JAXPLAIN_TEST_MAPS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {_maps()}\n")


_PROFILE = os.environ.get("JAXPLAIN_TEST_PROFILE")
if _PROFILE:  # per test: CPU seconds of this process and its children, and compile seconds
    import resource
    import time

    from jax import monitoring

    _compile = {"n": 0, "s": 0.0, "hits": 0}

    def _on_duration(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            _compile["n"] += 1
            _compile["s"] += duration

    def _on_event(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            _compile["hits"] += 1

    monitoring.register_event_duration_secs_listener(_on_duration)
    monitoring.register_event_listener(_on_event)

    def _cpu() -> float:
        own = time.process_time()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own + kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        c0, n0, s0, h0 = _cpu(), _compile["n"], _compile["s"], _compile["hits"]
        yield
        with open(_PROFILE, "a") as f:
            f.write(json.dumps({"id": item.nodeid, "cpu": round(_cpu() - c0, 3),
                                "compiles": _compile["n"] - n0,
                                "cache_hits": _compile["hits"] - h0,
                                "compile_s": round(_compile["s"] - s0, 3)}) + "\n")


# tests/durations.json (written by tests/_durations.py from a profiled full run):
# `--dist loadfile` hands out test files in collection order, one at a time per free
# worker; alphabetical order left the longest files (the examples, the demo) for last, on
# one worker while the other idled, so the costliest files go first. Tests that cost at
# least the file's threshold of CPU are marked `slow`: `pytest -m "not slow"` is the
# quick subset, and CI runs everything.
_DURATIONS = json.loads((Path(__file__).with_name("durations.json")).read_text())
_SLOW = frozenset(_DURATIONS["slow"])


def pytest_collection_modifyitems(session, config, items):
    cost = _DURATIONS["files_cpu_s"]
    for item in items:
        if item.nodeid in _SLOW:
            item.add_marker(pytest.mark.slow)
    # stable: the order inside a file is kept
    items.sort(key=lambda item: -cost.get(item.path.stem if item.path else "", 0.0))


def pytest_unconfigure(config):
    if _RUN_CACHE is not None:
        import shutil

        shutil.rmtree(_RUN_CACHE, ignore_errors=True)
