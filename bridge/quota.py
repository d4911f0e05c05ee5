"""Quota: PyPI's rate-limit headers, read from every answer, and the pace they allow.

Since June 2026 PyPI's XML-RPC answers carry the IETF draft rate-limit fields (revision 10):
`RateLimit-Policy` lists the quota policies (`"name";q=<calls>;w=<seconds>`), and `RateLimit`
what is left of each (`"name";r=<calls left>;t=<seconds until it resets>`), as Structured
Field lists. Older servers send the earlier draft's `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset` (a delta in seconds) instead; both are understood.

The pace: a call may follow the previous one after `--min-request-interval`. While more than a
tenth of the quota is left, that is all: a backfill uses the quota it has. The last tenth is
spread evenly over what is left of the window (`t / r` seconds per call), so the bridge never
meets the throttling fault, which stays the fallback. Once caught up, the bridge polls at most
at 90% of the quota's long-run rate (`w / (0.9 q)`), leaving room for the head lookups and for
other clients behind the same address; a poll that brings rows is followed at once (traffic).
Every wait that a server asks for is capped (`--max-backoff`), so a lying `t` cannot stall the
bridge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: More than this many members in one field is not a real server's answer.
_MAX_MEMBERS = 16
_INTEGER = re.compile(r"-?[0-9]{1,15}")
#: The longest window believed, in seconds.
MAX_WINDOW = 86_400.0


@dataclass(frozen=True)
class Limit:
    """One policy's state as of one answer: None where the server did not say."""

    name: str
    quota: int | None
    window: int | None
    remaining: int
    reset: float


def structured_list(value: str) -> list[tuple[str, dict[str, int]]]:
    """Members of a Structured Field list with their integer parameters.

    Tolerant, and linear in the field: a member is a name (token or quoted string) and
    `;key=value` parameters; values that are not integers, and members past the 16th, are
    ignored. Policy names hold no commas or semicolons in practice, so a split is enough.
    """
    members: list[tuple[str, dict[str, int]]] = []
    for member in value.split(",")[:_MAX_MEMBERS]:
        name, *params = member.split(";")
        found: dict[str, int] = {}
        for param in params:
            key, _, number = param.partition("=")
            number = number.strip()
            if _INTEGER.fullmatch(number):
                found[key.strip().lower()] = int(number)
        members.append((name.strip().strip('"'), found))
    return members


def parse_limits(headers: Mapping[str, str]) -> list[Limit]:
    """Every policy the answer's rate-limit fields describe (an empty list if none)."""
    current = headers.get("RateLimit")
    if current is not None:
        policies = {
            name: params for name, params in structured_list(headers.get("RateLimit-Policy", ""))
        }
        limits = []
        for name, params in structured_list(current):
            if "r" not in params:
                continue
            policy = policies.get(name, {})
            limits.append(
                Limit(
                    name,
                    _non_negative(policy.get("q")),
                    _non_negative(policy.get("w")),
                    max(0, params["r"]),
                    float(max(0, params.get("t", policy.get("w", 0)))),
                )
            )
        return limits
    remaining = _leading_int(headers.get("RateLimit-Remaining"))
    if remaining is None:
        return []
    reset = _leading_int(headers.get("RateLimit-Reset"))
    return [
        Limit(
            "",
            _leading_int(headers.get("RateLimit-Limit")),
            None,
            max(0, remaining),
            float(max(0, reset or 0)),
        )
    ]


def _non_negative(value: int | None) -> int | None:
    return None if value is None or value < 0 else value


def _leading_int(value: str | None) -> int | None:
    if value is None:
        return None
    found = re.match(r"\s*(-?[0-9]{1,15})", value)
    return int(found.group(1)) if found else None


class Quota:
    """What the last answer said about the quota, and how long the next call should wait."""

    def __init__(self, cap: float, clock: Callable[[], float]) -> None:
        #: The longest wait taken on a server's word (`--max-backoff`).
        self.cap = cap
        self._clock = clock
        #: The tightest policy of the last answer that had rate-limit fields.
        self.limit: Limit | None = None
        self._seen_at = 0.0

    def update(self, headers: Mapping[str, str]) -> Limit | None:
        """Record an answer's rate-limit fields; keeps the previous state if it had none."""
        limits = parse_limits(headers)
        if not limits:
            return None
        now = self._clock()
        # The tightest: the policy closest to its reserve, then the one with least time per call.
        self.limit = min(
            limits,
            key=lambda limit: (limit.remaining > _reserve(limit), -_spacing(limit, limit.reset)),
        )
        self._seen_at = now
        return self.limit

    def reset_in(self) -> float | None:
        """Seconds until the tightest window resets, as of now (None if unknown).

        A claim beyond a day is read as a day: no rate-limit window is longer.
        """
        if self.limit is None:
            return None
        return max(0.0, min(self.limit.reset, MAX_WINDOW) - (self._clock() - self._seen_at))

    def spacing(self) -> float:
        """Seconds the next call should follow the previous one for the quota to last.

        None while more than the reserve is left (a backfill uses the quota it has); once only
        the reserve is left, what remains of the window spread over the calls left.
        """
        left = self.reset_in()
        if self.limit is None or left is None or self.limit.remaining > _reserve(self.limit):
            return 0.0
        return min(self.cap, _spacing(self.limit, left))

    def steady_interval(self) -> float:
        """The poll interval at which a caught-up bridge uses at most 90% of the quota."""
        limit = self.limit
        if limit is None or not limit.quota or not limit.window:
            return 0.0
        return min(self.cap, limit.window / (STEADY_SHARE * limit.quota))


#: Share of the quota a caught-up poller uses in the long run: the rest is for the head
#: lookups, a restart's extra calls and anyone else behind the same address.
STEADY_SHARE = 0.9
#: Calls kept in hand: below this share of the quota (or 10 calls when the quota is unknown),
#: the rest of the window is spread over them.
RESERVE_SHARE = 0.1


def _reserve(limit: Limit) -> float:
    return limit.quota * RESERVE_SHARE if limit.quota else 10.0


def _spacing(limit: Limit, left: float) -> float:
    """Seconds per call for the calls left to last until the reset (the tightest decides)."""
    if limit.remaining <= 0:
        return left  # nothing left: wait for the reset
    if not math.isfinite(left):
        return 0.0
    return left / limit.remaining
