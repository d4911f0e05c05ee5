"""Journal facts the traffic model writes now and then (JOURNAL.md's catalog).

Free-text upload labels with spaces, legacy file rows without a version (March 2005 to July
2007), and team names holding ` file ` or ` to `: each appears in a seeded journal, in the form
PyPI writes it, and only where PyPI wrote it.
"""

from __future__ import annotations

import datetime
import re
from functools import cache

from bridge.simulator import Journal, Row, era_serial

FILE_ADDED = re.compile(r"add (?P<label>.+) file (?P<filename>\S+)")
ROLE = "Owner|Maintainer"


def utc(day: str) -> int:
    return int(datetime.datetime.fromisoformat(day + "T00:00:00+00:00").timestamp())


NIL_VERSIONS_FROM, NIL_VERSIONS_UNTIL = utc("2005-03-01"), utc("2007-08-01")


@cache
def rows(seed: int = 7, first_serial: int = 40_000_000, n: int = 60_000) -> tuple[Row, ...]:
    journal = Journal(seed=seed, first_serial=first_serial)
    journal.append(n)
    return tuple(journal.all_rows())


def file_rows(journal: tuple[Row, ...]) -> list[tuple[Row, str, str]]:
    """(row, label, filename) of every upload row, split on the last ` file ` as PyPI advises."""
    found = []
    for row in journal:
        if row[3].startswith("add ") and (match := FILE_ADDED.fullmatch(row[3])):
            found.append((row, match["label"], match["filename"]))
    return found


# --- python_version is free text -----------------------------------------------------------


def uploads(journal: tuple[Row, ...]) -> list[tuple[Row, str, str]]:
    """The upload rows of a Warehouse-era journal: those with a version (a role row has none)."""
    return [(row, label, filename) for row, label, filename in file_rows(journal) if row[1]]


def test_some_upload_labels_hold_spaces() -> None:
    spaced = [label for _, label, _ in uploads(rows()) if " " in label]
    assert len(spaced) >= 20
    assert {"Python 3.11", "any file"} <= set(spaced)


def test_a_label_may_hold_file_so_only_the_last_file_splits() -> None:
    row = next(row for row, label, _ in uploads(rows()) if label == "any file")
    label, _, filename = row[3].removeprefix("add ").rpartition(" file ")
    assert label == "any file"
    assert " " not in filename
    assert filename.endswith((".whl", ".tar.gz", ".zip", ".egg", ".exe"))


def test_sdists_keep_the_label_source() -> None:
    sdists = [label for _, label, filename in uploads(rows()) if filename.endswith(".tar.gz")]
    assert set(sdists) == {"source"}


def test_spaced_labels_are_rare() -> None:
    every = uploads(rows())
    spaced = [1 for _, label, _ in every if " " in label]
    assert 0 < len(spaced) < len(every) / 50


def test_legacy_pypi_uploads_have_spaced_labels_too() -> None:
    legacy = file_rows(rows(first_serial=2_000_000, n=30_000))
    assert any(" " in label for _, label, _ in legacy)


# --- legacy file rows without a version ----------------------------------------------------


def test_file_rows_of_2005_to_2007_have_no_version() -> None:
    journal = rows(first_serial=era_serial(utc("2006-01-01")), n=10_000)
    uploads = file_rows(journal)
    assert uploads
    assert {row[1] for row, _, _ in uploads} == {None}
    assert all(NIL_VERSIONS_FROM <= row[2] < NIL_VERSIONS_UNTIL for row in journal)


def test_the_releases_of_those_years_keep_their_versions() -> None:
    journal = rows(first_serial=era_serial(utc("2006-01-01")), n=10_000)
    releases = [row for row in journal if row[3] == "new release"]
    assert releases
    assert all(row[1] for row in releases)


def test_file_rows_get_their_version_back_in_august_2007() -> None:
    # About 45 days of legacy traffic across the end of July 2007.
    journal = rows(first_serial=era_serial(utc("2007-07-10")), n=20_000)
    uploads = file_rows(journal)
    nil = [row for row, _, _ in uploads if row[1] is None]
    versioned = [row for row, _, _ in uploads if row[1] is not None]
    assert nil
    assert versioned
    assert max(row[2] for row in nil) < NIL_VERSIONS_UNTIL + 60
    assert min(row[2] for row in versioned) >= NIL_VERSIONS_UNTIL - 60
    assert max(row[4] for row in nil) < min(row[4] for row in versioned)


def test_file_rows_before_march_2005_have_versions() -> None:
    journal = rows(first_serial=era_serial(utc("2004-06-01")), n=5_000)
    uploads = file_rows(journal)
    assert uploads
    assert all(row[1] for row, _, _ in uploads)
    assert all(row[2] < NIL_VERSIONS_FROM for row in journal)


def test_recent_rows_that_read_as_uploads_without_a_version_are_team_grants() -> None:
    # `add Maintainer core file team` reads as an upload labelled "Maintainer core" of a file
    # "team"; only its nil version (a Warehouse upload always has one) tells it apart.
    unversioned = [row for row, _, _ in file_rows(rows()) if row[1] is None]
    assert unversioned
    assert all(re.fullmatch(rf"add ({ROLE}) core file team", row[3]) for row in unversioned)


# --- team names with " file " and " to " ---------------------------------------------------


def actions_about(team: str) -> list[Row]:
    return [row for row in rows() if team in row[3]]


def test_a_team_name_may_hold_file() -> None:
    granted = [
        row
        for row in actions_about("core file team")
        if re.fullmatch(rf"add ({ROLE}) core file team", row[3])
    ]
    assert granted
    assert {row[1] for row in granted} == {None}


def test_a_team_name_may_hold_to() -> None:
    granted = [
        row
        for row in actions_about("ops to infra team")
        if re.fullmatch(rf"add ({ROLE}) ops to infra team", row[3])
    ]
    assert granted
    assert {row[1] for row in granted} == {None}


def test_a_role_change_of_such_a_team_splits_only_on_the_last_to() -> None:
    changes = [row for row in actions_about("ops to infra team") if row[3].startswith("change ")]
    assert changes
    for row in changes:
        head, _, new_role = row[3].rpartition(" to ")
        old_role, _, who = head.removeprefix("change ").partition(" ")
        assert (who, {old_role, new_role}) == ("ops to infra team", {"Owner", "Maintainer"})


def test_teams_appear_only_since_2023() -> None:
    legacy = rows(first_serial=2_000_000, n=30_000)
    assert not [row for row in legacy if "file team" in row[3] or "infra team" in row[3]]
