"""The changelog fuzz target in the suite: its seeds, its properties, and a bounded run.

The target (`tests.fuzz.target`) runs bytes through `decode_changelog`, `check_page`,
`parse_row` and the sink's record, with `xmlrpc.client.loads` as the decoder's reference.
Every seed replays here as a plain test, so an input a fuzz run once broke stays fixed; the
harness is shown to catch a decoder, a row rule and a parser that break their promises; and one
bounded atheris run (`BOUNDED_SECONDS`) runs with `make test` (`make fuzz` runs longer).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bridge.errors import TransientSourceError
from bridge.parse import parse_row
from bridge.rows import Page
from bridge.xmlrpc import Row, _decode_changelog_fast
from tests.conftest import require
from tests.fuzz import runner, seeds, target
from tests.fuzz.target import KNOWN_BUGS, PropertyViolated, check_body

#: Seconds of fuzzing in `make test`: with the engine's start-up, about a minute.
BOUNDED_SECONDS = 30
SEED_FILES = sorted(runner.SEEDS.iterdir())
#: What each seed's name promises about its outcome (`known-*`: the open bug, or its fix).
EXPECTED_KINDS = {
    "rows": {("rows", False)},
    "refused": {("rows", True)},
    "fault": {("fault", False)},
    "malformed": {("malformed", False)},
    "regression": {("rows", False), ("rows", True), ("fault", False), ("malformed", False)},
    "known": {("known", False), ("malformed", False)},
}

ONE_ROW = seeds.page([("Foo", None, 1700000000, "create", 5)])


@pytest.mark.parametrize("path", SEED_FILES, ids=[path.name for path in SEED_FILES])
def test_seed_keeps_every_property_and_is_what_its_name_says(path: Path) -> None:
    outcome = check_body(path.read_bytes())
    assert (outcome.kind, outcome.refused) in EXPECTED_KINDS[path.name.split("-", 1)[0]]


def test_every_generated_seed_is_committed() -> None:
    assert set(seeds.seeds()) <= {path.name for path in SEED_FILES}


def test_seed_corpus_has_the_shapes_a_page_can_take() -> None:
    names = {path.name for path in SEED_FILES}
    for shape in ("empty-page", "fault-throttled", "cdata", "entities", "nil", "simulated-2006"):
        assert any(shape in name for name in names), shape


def test_seed_corpus_reaches_both_decoder_paths() -> None:
    rows = [path.read_bytes() for path in SEED_FILES if path.name.startswith("rows-")]
    fast = [body for body in rows if _decode_changelog_fast(body) is not None]
    assert 0 < len(fast) < len(rows)


def test_every_known_bug_has_its_input_committed() -> None:
    for bug in KNOWN_BUGS:
        assert (runner.SEEDS / f"known-{bug.name}").is_file(), bug.name


def test_known_bug_tolerance_matches_its_input_and_nothing_broader() -> None:
    for bug in KNOWN_BUGS:
        body = (runner.SEEDS / f"known-{bug.name}").read_bytes()
        failure: BaseException | None = None
        outcome = None
        try:
            outcome = check_body(body, tolerate_known=False)
        except bug.exception as exc:
            failure = exc
        # Still open: the failure is the one described; fixed: the body is refused as
        # malformed (then remove the entry from KNOWN_BUGS and make the seed a regression one).
        assert (failure is not None and bug.matches(failure)) or (
            outcome is not None and outcome.kind == "malformed"
        )
        assert not bug.matches(LookupError("unknown tag"))


def test_simulated_legacy_page_publishes_every_row() -> None:
    body = (runner.SEEDS / "rows-simulated-2006-legacy-uploads-without-version").read_bytes()
    outcome = check_body(body)
    assert outcome.rows > 0
    assert outcome.published == outcome.rows


# --- the harness catches what it should ------------------------------------------------------


def test_harness_catches_rows_that_differ_from_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(target, "decode_changelog", lambda body: [("Foo", "", 1, "create", 5)])
    with pytest.raises(PropertyViolated, match=r"differ from xmlrpc\.client\.loads"):
        check_body(ONE_ROW)


def test_harness_catches_a_refusal_of_a_page_the_standard_library_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(body: bytes) -> list[Row]:
        raise TransientSourceError("refused", "malformed")

    monkeypatch.setattr(target, "decode_changelog", refuse)
    with pytest.raises(PropertyViolated, match="refused a changelog"):
        check_body(ONE_ROW)


def test_harness_catches_an_exception_the_decoder_must_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(body: bytes) -> list[Row]:
        raise RecursionError("deep")

    monkeypatch.setattr(target, "decode_changelog", explode)
    with pytest.raises(RecursionError):
        check_body(ONE_ROW)


def test_harness_catches_a_row_rule_that_keeps_a_stale_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(target, "check_page", lambda rows, cursor: Page(list(rows)))
    body = seeds.page(
        [("Foo", None, 1700000000, "create", 5), ("Foo", None, 1700000000, "docupdate", 6)]
    )
    with pytest.raises(PropertyViolated, match="cursor"):
        check_body(body)


def test_harness_catches_a_parser_that_loses_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(target, "parse_row", lambda row: parse_row((*row[:1], "x", *row[2:])))
    with pytest.raises(PropertyViolated, match="became"):
        check_body(ONE_ROW)


# --- a bounded run of the engine ---------------------------------------------------------------


@pytest.mark.slow
def test_bounded_fuzz_run_finds_nothing_new(capsys: pytest.CaptureFixture[str]) -> None:
    require(importlib.util.find_spec("atheris") is not None, "atheris (pip install atheris)")
    result = runner.run(BOUNDED_SECONDS)
    with capsys.disabled():
        print(f"\n{result.summary()}")
    assert result.executions > 0
    assert result.clean, result.summary()
