"""Writes tests/durations.json from a profile of a full run.

    JAXPLAIN_TEST_PROFILE=/tmp/profile.jsonl bash run.sh test
    python tests/_durations.py /tmp/profile.jsonl

The conftest reads the file to hand out the costliest test files first (so no worker
idles at the end of a run) and to mark every test that cost at least `THRESHOLD`
seconds of CPU as `slow`, so `pytest -m "not slow"` is the quick subset. Tests the
file does not know (new ones) count as fast until the next profile.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

THRESHOLD = 0.75
"""CPU seconds from which a test is slow (setup and teardown included)."""

HERE = Path(__file__).resolve().parent


def main(profile: str) -> None:
    rows = [json.loads(line) for line in open(profile) if line.strip()]
    files: collections.Counter = collections.Counter()
    for r in rows:
        files[Path(r["id"].split("::")[0]).stem] += r["cpu"]
    out = {
        "threshold_cpu_s": THRESHOLD,
        "total_cpu_s": round(sum(r["cpu"] for r in rows)),
        "files_cpu_s": {f: round(s, 1) for f, s in files.most_common()},
        "slow": sorted(r["id"] for r in rows if r["cpu"] >= THRESHOLD),
    }
    (HERE / "durations.json").write_text(json.dumps(out, indent=0) + "\n")
    fast = sum(r["cpu"] for r in rows if r["cpu"] < THRESHOLD)
    print(f"{len(rows)} tests, {out['total_cpu_s']} s CPU; {len(out['slow'])} slow; "
          f"the rest {fast:.0f} s CPU")


if __name__ == "__main__":
    main(sys.argv[1])
