"""The one rule of the chart's generated files: rewrite them, or with `--check` only say so.

`plain_rules.py` and `values_table.py` each compute the text a file should hold; this module
compares it with the file and either writes it or, in check mode, fails naming the command that
brings the file up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path


def settle(tool: str, path: Path, current: str, wanted: str, check: bool, what: str) -> int:
    """Exit status for `tool`: 0 when `path` holds `wanted` (written now unless `check`), 1 when
    `check` finds it stale. `what` names the part of the file that is generated."""
    if current == wanted:
        return 0
    if check:
        print(
            f"{tool}: {what} in {path} is out of date; run `make chart-docs` and commit the result",
            file=sys.stderr,
        )
        return 1
    path.write_text(wanted, encoding="utf-8")
    print(f"{tool}: wrote {what} in {path}")
    return 0
