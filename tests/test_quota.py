"""PyPI's rate-limit headers: parsed as the draft writes them, and the pace they allow."""

from __future__ import annotations

import math

import pytest

from bridge.quota import Limit, Quota, parse_limits, structured_list

POLICY = '"default";q=3600;w=3600'


def test_the_current_draft_fields_are_read_with_their_policy() -> None:
    limits = parse_limits({"RateLimit-Policy": POLICY, "RateLimit": '"default";r=3500;t=1200'})
    assert limits == [Limit("default", 3600, 3600, 3500, 1200.0)]


def test_several_policies_each_keep_their_own_quota() -> None:
    headers = {
        "RateLimit-Policy": '"hour";q=3600;w=3600, "minute";q=30;w=60',
        "RateLimit": '"hour";r=3000;t=600, "minute";r=2;t=20',
    }
    assert [(limit.name, limit.quota, limit.remaining) for limit in parse_limits(headers)] == [
        ("hour", 3600, 3000),
        ("minute", 30, 2),
    ]


def test_the_older_draft_triple_is_understood() -> None:
    headers = {"RateLimit-Limit": "100", "RateLimit-Remaining": "5", "RateLimit-Reset": "7"}
    assert parse_limits(headers) == [Limit("", 100, None, 5, 7.0)]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"RateLimit": "garbage"},
        {"RateLimit": '"default";r=abc;t=1'},
        {"RateLimit-Remaining": "many"},
        {"RateLimit": ";;;,,,==="},
    ],
)
def test_unreadable_fields_are_ignored(headers: dict[str, str]) -> None:
    assert parse_limits(headers) == []


def test_negative_numbers_are_clamped() -> None:
    (limit,) = parse_limits({"RateLimit": '"d";r=-4;t=-9'})
    assert (limit.remaining, limit.reset) == (0, 0.0)


def test_a_field_with_thousands_of_members_is_cut_short() -> None:
    assert len(structured_list(",".join(['"p";r=1'] * 10_000))) == 16


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quota_to_spare_imposes_no_spacing() -> None:
    clock = Clock()
    quota = Quota(cap=60.0, clock=clock)
    quota.update({"RateLimit-Policy": POLICY, "RateLimit": '"default";r=361;t=3599'})
    assert quota.spacing() == 0.0


def test_the_last_tenth_is_spread_over_what_is_left_of_the_window() -> None:
    clock = Clock()
    quota = Quota(cap=60.0, clock=clock)
    quota.update({"RateLimit-Policy": POLICY, "RateLimit": '"default";r=300;t=3000'})
    assert quota.spacing() == pytest.approx(10.0)
    clock.now += 1500  # the window runs on: 1500 s left for the same 300 calls
    assert quota.spacing() == pytest.approx(5.0)


def test_a_caught_up_poller_stays_under_nine_tenths_of_the_quota() -> None:
    quota = Quota(cap=60.0, clock=Clock())
    assert quota.steady_interval() == 0.0
    quota.update({"RateLimit-Policy": POLICY, "RateLimit": '"default";r=3000;t=3000'})
    assert quota.steady_interval() == pytest.approx(3600 / (0.9 * 3600))


def test_a_spent_quota_waits_for_the_reset_but_never_beyond_the_cap() -> None:
    clock = Clock()
    quota = Quota(cap=60.0, clock=clock)
    quota.update({"RateLimit": '"default";r=0;t=999999999'})
    assert quota.spacing() == 60.0
    assert quota.reset_in() == 86_400.0  # no window is longer than a day


def test_the_tightest_policy_sets_the_pace() -> None:
    clock = Clock()
    quota = Quota(cap=600.0, clock=clock)
    quota.update(
        {
            "RateLimit-Policy": '"hour";q=3600;w=3600, "minute";q=30;w=60',
            "RateLimit": '"hour";r=3000;t=600, "minute";r=2;t=20',
        }
    )
    assert quota.limit is not None
    assert quota.limit.name == "minute"
    assert quota.spacing() == pytest.approx(10.0)
    assert quota.steady_interval() == pytest.approx(60 / (0.9 * 30))


def test_an_answer_without_fields_keeps_what_the_last_one_said() -> None:
    clock = Clock()
    quota = Quota(cap=60.0, clock=clock)
    quota.update({"RateLimit": '"default";r=5;t=100'})
    assert quota.update({}) is None
    assert quota.spacing() == pytest.approx(20.0)


def test_no_fields_at_all_means_no_spacing() -> None:
    quota = Quota(cap=60.0, clock=Clock())
    assert quota.spacing() == 0.0
    assert quota.reset_in() is None
    assert not math.isnan(quota.spacing())
