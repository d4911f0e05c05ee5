"""The fuzz engine: atheris (libFuzzer for Python) driving `tests.fuzz.target`, coverage-guided.

Run as `python -m tests.fuzz.engine [libFuzzer flags] CORPUS_DIR...`; `python -m tests.fuzz`
chooses the flags and reads the outcome. Coverage comes from instrumenting the bytecode of the
bridge's modules and of the standard library's `xmlrpc` (the decoder's generic path is its
unmarshaller), imported here for the first time. libFuzzer runs the target in this process and
exits when its time is up or at the first input that breaks a property.

Atheris's `str` hook feeds `startswith`/`endswith` arguments to libFuzzer as comparison hints;
its `RegEx` hook stays off, because its pattern proxy takes no `pos` argument and the fast path
calls `match(text, pos, end)`: the dictionary (`xmlrpc.dict`) gives the tokens instead.
"""

from __future__ import annotations

import sys

import atheris
from atheris.function_hooks import enabled_hooks
from atheris.import_hook import instrument_imports

INSTRUMENTED = ("bridge", "xmlrpc", "tests.fuzz.target")


#: The engine's own flag (libFuzzer's start with one dash): fail on known bugs too.
NO_KNOWN = "--no-known"


def main(argv: list[str]) -> None:
    """Fuzz until libFuzzer stops (it exits the process)."""
    tolerate_known = NO_KNOWN not in argv
    enabled_hooks.add("str")
    with instrument_imports(include=list(INSTRUMENTED)):
        from tests.fuzz import target

    def test_one_input(body: bytes) -> None:
        target.check_body(body, tolerate_known)

    atheris.Setup([arg for arg in argv if arg != NO_KNOWN], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
