"""Several processes under JAX's own multi-process runtime (`jax.distributed`).

Two local processes of two CPU devices each run one `explain_to_shards` call: batch
`i` belongs to process `i % 2`, each process writes its own resumable folder, and
`load_results` reads the run back as one. One process is killed mid-run; running
both again finishes the run with nothing lost or duplicated, and the values equal a
one-process run's (the key of example `i` is folded from `i` over the whole dataset).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxplain as jx

pytestmark = pytest.mark.slow

N, BATCH = 40, 4  # 10 batches: 5 per process

_DRIVER = textwrap.dedent("""
    import os, sys, time
    rank, port, out, pause = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=rank)
    import numpy as np
    import jaxplain as jx
    from jaxplain import testing

    assert jax.process_count() == 2 and jax.local_device_count() == 2

    def loader():  # the same data in every process; a pause so the parent can kill one
        x = np.asarray(testing.random_images(0, n=40, size=8))
        for i in range(0, 40, 4):
            time.sleep(pause)
            yield x[i:i + 4]

    module = testing.tiny_cnn(n_classes=3, features=(2,))
    x0 = np.asarray(testing.random_images(0, n=1, size=8))
    model = jx.from_linen(module, module.init(jax.random.key(0), x0))
    s = jx.explain_to_shards("smoothgrad", model, loader(), out=out, batch_size=4,
                             devices=jax.local_devices(), target=1, n_samples=4,
                             key=jax.random.key(3), progress=False)
    print("SUMMARY", rank, s.n_computed, s.n_skipped, flush=True)
    if rank == 0:  # the coordinator stays until the other process is done (or killed)
        done = os.path.join(out, "process_001", "manifest.json")
        while not os.path.exists(out + ".killed"):
            if os.path.exists(done) and '"complete": true' in open(done).read():
                break
            time.sleep(0.05)
    os._exit(0)  # no shutdown barrier with a process that may be gone
""")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(out: str, pause: float) -> list[subprocess.Popen]:
    port = str(_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return [subprocess.Popen([sys.executable, "-c", _DRIVER, str(r), port, out, str(pause)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for r in (0, 1)]


def _summaries(procs) -> dict[int, tuple[int, int]]:
    found = {}
    for p in procs:
        out, err = p.communicate(timeout=240)
        for line in out.splitlines():
            if line.startswith("SUMMARY"):
                _, rank, computed, skipped = line.split()
                found[int(rank)] = (int(computed), int(skipped))
        if p.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"process failed ({p.returncode}):\n{err[-3000:]}")
    return found


def _shards(folder: str) -> list[str]:
    """The finished shards (a process killed while writing leaves a `.tmp-PID` file,
    which the next run removes)."""
    return sorted(n for n in os.listdir(folder) if n.startswith("shard_") and n.endswith(".npz"))


def test_two_processes_split_the_batches_survive_a_kill_and_resume(tmp_path):
    out = str(tmp_path / "run")
    procs = _launch(out, pause=0.4)
    one = os.path.join(out, "process_001")
    t0 = time.time()
    while time.time() - t0 < 180:  # kill process 1 once it saved 2 of its 5 batches
        if os.path.isdir(one) and len(_shards(one)) >= 2:
            break
        assert procs[1].poll() is None, procs[1].communicate()[1][-3000:]
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    open(out + ".killed", "w").close()
    _summaries(procs)
    saved = {n: _shards(os.path.join(out, n)) for n in ("process_000", "process_001")}
    assert 2 <= len(saved["process_001"]) < 5
    with pytest.raises(ValueError, match="not complete"):
        jx.load_results(out)
    partial = jx.load_results(out, allow_partial=True)  # the leading run of batches

    os.remove(out + ".killed")
    done = _summaries(_launch(out, pause=0.0))
    # the resumed run computes only what is missing, each process its own batches
    assert done[1] == (5 - len(saved["process_001"]), len(saved["process_001"]))
    assert done[0] == (5 - len(saved["process_000"]), len(saved["process_000"]))
    for rank in (0, 1):
        names = _shards(os.path.join(out, f"process_{rank:03d}"))
        assert [int(n[6:12]) for n in names] == list(range(rank, 10, 2))
    got = jx.load_results(out)

    # one process, one device: the same values (keys fold the example index)
    import jax

    from jaxplain import testing

    module = testing.tiny_cnn(n_classes=3, features=(2,))
    x = np.asarray(testing.random_images(0, n=N, size=8))
    model = jx.from_linen(module, module.init(jax.random.key(0), x[:1]))
    ref = jx.load_results(_single(tmp_path / "one", model, x))
    assert got.values.shape == (N, 8, 8, 3)
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(partial.values, ref.values[: len(partial.values)],
                               rtol=1e-5, atol=1e-7)


def _single(out, model, x):
    import jax

    jx.explain_to_shards("smoothgrad", model, x, out=str(out), batch_size=BATCH, target=1,
                         n_samples=4, key=jax.random.key(3), progress=False)
    return out


def test_a_process_folder_of_another_run_or_a_gap_is_refused(tmp_path):
    import json

    out = tmp_path / "run"
    for r in (0, 1):
        d = out / f"process_{r:03d}"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps(
            {"format": 1, "fingerprint": "a" if r == 0 else "b", "complete": True,
             "n_batches": 2, "process": r, "processes": 2}))
    with pytest.raises(ValueError, match="one multi-process run"):
        jx.load_results(out)
    (out / "process_001" / "manifest.json").write_text(json.dumps(
        {"format": 1, "fingerprint": "a", "complete": True, "n_batches": 2, "process": 1,
         "processes": 2}))
    with pytest.raises(ValueError, match=r"shards \[0, 1\] of 2 are missing"):
        jx.load_results(out)
