"""How fast a changelog page decodes: the standard library against `bridge.xmlrpc`.

    python -m benchmarks.decode [--rows 50000] [--repeat 5]

Builds one realistic `changelog_since_serial` response (rows shaped like PyPI's journal: file
uploads in bursts, releases, role changes, a few non-ASCII team names arriving as `&#NNN;`),
checks that both decoders return the same rows, and prints rows per second for each and their
ratio. Each figure is the best of `--repeat` runs, the usual way to time on a busy machine.
"""

from __future__ import annotations

import argparse
import random
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from bridge.xmlrpc import Row, _decode_changelog_fast, decode_changelog

_PYTHON_TAGS = ("py3", "py2.py3", "cp311", "cp312", "source")
_TEAMS = ("DoublePlusAwks", "Core Team", "caf&#233; crew", "&#26085;&#26412; maintainers")


def realistic_rows(count: int, seed: int = 2016) -> list[Row]:
    """`count` journal rows with the mix, bursts and quirks described in JOURNAL.md."""
    rng = random.Random(seed)
    rows: list[Row] = []
    serial = 24_891_358
    timestamp = 1_725_534_675
    while len(rows) < count:
        name = rng.choice(("openllm", "py-pcapplusplus", "Foo_Bar", "wordsmith", "UFx"))
        name = f"{name}{rng.randrange(50_000)}"
        version = f"{rng.randrange(5)}.{rng.randrange(40)}.{rng.randrange(10)}"
        timestamp += rng.choice((0, 0, 1, 3, 20))
        burst: list[tuple[str | None, str]] = []
        kind = rng.random()
        if kind < 0.1:  # a first upload: create, owner, release, files in one second
            burst = [(None, "create"), (None, f"add Owner {rng.choice(_TEAMS)}")]
            burst.append((version, "new release"))
        elif kind < 0.2:
            burst = [(None, f"{rng.choice(('add', 'remove'))} Maintainer {rng.choice(_TEAMS)}")]
        elif kind < 0.25:
            burst = [(version, rng.choice(("yank release", "remove release")))]
        else:
            burst = [(version, "new release")]
        for _ in range(rng.choice((1, 2, 4, 12))):
            tag = rng.choice(_PYTHON_TAGS)
            filename = (
                f"{name}-{version}.tar.gz"
                if tag == "source"
                else f"{name}-{version}-{tag}-none-any.whl"
            )
            burst.append((version, f"add {tag} file {filename}"))
        for row_version, action in burst:
            serial += rng.choice((1, 1, 1, 2, 7))  # gaps are normal
            rows.append((name, row_version, timestamp, action, serial))
    return rows[:count]


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    """Build the body, check both decoders agree, print rows/s and the ratio."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000, help="rows in the page")
    parser.add_argument("--repeat", type=int, default=5, help="runs per decoder (best counts)")
    args = parser.parse_args(argv)

    rows = realistic_rows(args.rows)
    body = xmlrpc.client.dumps(
        ([list(row) for row in rows],), methodresponse=True, allow_none=True
    ).encode("utf-8")
    params, _ = xmlrpc.client.loads(body, use_builtin_types=True)
    expected: Any = params[0]
    if decode_changelog(body) != [tuple(row) for row in expected]:
        raise SystemExit("decode_changelog disagrees with xmlrpc.client on this body")
    if _decode_changelog_fast(body) is None:
        raise SystemExit("this body missed decode_changelog's fast path: the figure would lie")

    stdlib = best_seconds(lambda: xmlrpc.client.loads(body, use_builtin_types=True), args.repeat)
    ours = best_seconds(lambda: decode_changelog(body), args.repeat)
    print(f"body: {len(rows):,} rows, {len(body) / 1e6:.1f} MB, best of {args.repeat} runs")
    print(f"xmlrpc.client.loads            {len(rows) / stdlib:>12,.0f} rows/s  {stdlib:.3f} s")
    print(f"bridge.xmlrpc.decode_changelog {len(rows) / ours:>12,.0f} rows/s  {ours:.3f} s")
    print(f"ratio: {stdlib / ours:.1f}x")


if __name__ == "__main__":
    main()
