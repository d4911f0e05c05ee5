"""`python -m tests.fuzz [--seconds N] [--replay FILE...]`: fuzz for a while, or replay inputs.

Exits 0 when the run went its whole time and found nothing (or every replayed input keeps the
properties), 1 otherwise. `make fuzz` runs it for `FUZZ_SECONDS` (600 by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.fuzz import runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz (600)")
    parser.add_argument(
        "--work", type=Path, default=runner.WORK, help="grown corpus and findings (.cache/fuzz)"
    )
    parser.add_argument(
        "--no-known",
        action="store_true",
        help="fail on the known, reported bugs too (to check a fix)",
    )
    parser.add_argument(
        "--replay", type=Path, nargs="+", metavar="FILE", help="run these inputs once each"
    )
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay, tolerate_known=not args.no_known)
    print(f"fuzzing the changelog path for {args.seconds} s (atheris; log in {args.work})")
    result = runner.run(args.seconds, args.work, echo=print, tolerate_known=not args.no_known)
    print(result.summary())
    return 0 if result.clean else 1


def replay(paths: list[Path], tolerate_known: bool = True) -> int:
    """Run each input through the target once, outside the engine: a traceback is the finding."""
    from tests.fuzz.target import check_body

    for path in paths:
        print(f"{path}: {check_body(path.read_bytes(), tolerate_known)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
