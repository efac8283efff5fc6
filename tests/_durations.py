"""Writes tests/durations.json from a profile of a full run.

    JAXPLAIN_TEST_PROFILE=/tmp/profile.jsonl bash run.sh test
    JAXPLAIN_TEST_PROFILE=/tmp/fast.jsonl bash run.sh test -m "not slow"   # optional
    python tests/_durations.py /tmp/profile.jsonl [/tmp/fast.jsonl ...]

The conftest reads the file to hand out the costliest test files first (so no worker
idles at the end of a run) and to mark every test that cost at least `THRESHOLD`
seconds of CPU as `slow`, so `pytest -m "not slow"` is the quick subset. A module's
shared fixture moves onto its first fast test when the tests before it are skipped,
so profiles of the quick subset itself (the later files; a test's cost is taken from
the last one that ran it) mark its costliest tests `slow` too, until the rest fits
`FAST_BUDGET`. Marking moves fixtures again, so a second quick profile helps. Tests the file does not know (new
ones) count as fast until the next profile.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

THRESHOLD = 0.75
"""CPU seconds from which a test is slow (setup and teardown included)."""

FAST_BUDGET = 100.0
"""CPU seconds for the quick subset: under 2 minutes on 2 cores, with the workers'
start and the collection (about 10 s each), with room for a machine 1.5x slower than
the one that measured (a budget of 130 s gave 1 min 30 s; 100 s gives 1 min 15 s)."""

HERE = Path(__file__).resolve().parent


def _read(profile: str) -> list[dict]:
    return [json.loads(line) for line in open(profile) if line.strip()]


def _over_budget(rows: list[dict], known_slow: set[str]) -> set[str]:
    """The costliest tests of a quick-subset profile, until the rest fits the budget."""
    fast = sorted((r for r in rows if r["id"] not in known_slow), key=lambda r: -r["cpu"])
    total, out = sum(r["cpu"] for r in fast), set()
    for r in fast:
        if total <= FAST_BUDGET:
            break
        out.add(r["id"])
        total -= r["cpu"]
    return out


def main(profile: str, *fast_profiles: str) -> None:
    rows = _read(profile)
    files: collections.Counter = collections.Counter()
    for r in rows:
        files[Path(r["id"].split("::")[0]).stem] += r["cpu"]
    out = {
        "threshold_cpu_s": THRESHOLD,
        "total_cpu_s": round(sum(r["cpu"] for r in rows)),
        "files_cpu_s": {f: round(s, 1) for f, s in files.most_common()},
        "slow": sorted(r["id"] for r in rows if r["cpu"] >= THRESHOLD),
    }
    if fast_profiles:
        last = {r["id"]: r for f in fast_profiles for r in _read(f)}
        out["slow"] = sorted(set(out["slow"]) | _over_budget(list(last.values()), set(out["slow"])))
    (HERE / "durations.json").write_text(json.dumps(out, indent=0) + "\n")
    fast = sum(r["cpu"] for r in rows if r["id"] not in set(out["slow"]))
    print(f"{len(rows)} tests, {out['total_cpu_s']} s CPU; {len(out['slow'])} slow; "
          f"the rest {fast:.0f} s CPU")


if __name__ == "__main__":
    main(*sys.argv[1:])
