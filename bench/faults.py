"""Run every kind of the fault suite (`tests/faults/fault_kinds.py`) on small data and print what happened.

    python bench/faults.py [--only NAME ...] [--fast]

One line per kind (outcome, seconds, what was seen), then, as the last line, one JSON object: the number of kinds
tried and how many were `handled`, `unclear`, `silent` and `crash`, with the names of those not handled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the registry imports the tests' helpers (pipeline_support, test_normalize...) as the test run does
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "faults")]
for name, value in {"HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}.items():
    os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these kinds only")
    parser.add_argument("--fast", action="store_true", help="the kinds of the normal pytest run only")
    args = parser.parse_args(argv)

    import torch

    from fault_kinds import KINDS, Context, run_kind, summary

    torch.set_num_threads(1)
    kinds = [k for k in KINDS if (not args.only or k.name in args.only) and (k.fast or not args.fast)]
    results = []
    with tempfile.TemporaryDirectory(prefix="faults-") as root:
        ctx = Context(Path(root))
        for kind in kinds:
            result = run_kind(kind, ctx)
            results.append(result)
            print(
                f"{result.outcome:8s} {result.seconds:6.1f} s  {kind.name} [{kind.group}]: {result.detail}", flush=True
            )
    print(json.dumps(summary(results)))
    return 0 if all(r.outcome == "handled" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
