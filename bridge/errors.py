"""The bridge's exceptions: one root, and a few subclasses that say what the user can do.

Every class carries its fields and renders as one readable line (problem, then fix), which is
what the command line prints instead of a traceback for an expected failure.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    #: Whether trying the same thing again later may succeed.
    retriable = False

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class ConfigError(BridgeError):
    """A flag, environment variable or file given by the operator is unusable."""


class AccessDenied(BridgeError):
    """Kafka refused this client: its credentials, its certificate, or an ACL it lacks.

    No retry cures it, so the bridge stops (exit status 1) instead of retrying in silence.
    """


class SourceError(BridgeError):
    """PyPI (or the simulator) answered with something retrying will not fix."""


class SourceFault(SourceError):
    """An XML-RPC fault that is not throttling: bad method, bad argument, bad body."""

    def __init__(self, code: int, message: str, fix: str = "") -> None:
        super().__init__(f"PyPI answered with XML-RPC fault {code}: {message}", fix)
        self.code = code
        self.message = message


class TransientSourceError(SourceError):
    """A failure that a retry with backoff may cure (5xx, time-out, reset, truncated body)."""

    retriable = True

    def __init__(self, problem: str, outcome: str) -> None:
        super().__init__(problem)
        #: The label used on `pypi_bridge_source_requests_total{outcome=...}`.
        self.outcome = outcome


class Throttled(TransientSourceError):
    """PyPI's rate limiter said no (HTTP 200 with fault -32500 HTTPTooManyRequests)."""

    def __init__(self, retry_after: float, message: str) -> None:
        super().__init__(f"PyPI is throttling this client: {message}", "throttled")
        self.retry_after = retry_after


class BrokerError(BridgeError):
    """Kafka is unreachable or refused an operation."""

    retriable = True


class BrokerLacksFeature(BrokerError):
    """The broker cannot do what the operator forced (transactions): no retry will cure it."""

    retriable = False


class Fenced(BrokerError):
    """Another replica took over: this one must stop producing at once."""

    retriable = False


class LeaseExpired(Fenced):
    """This leader has not renewed its group session lately: a successor may already lead.

    Raised by the leader itself before anything more leaves the process (the self-fence of a
    broker without transactions, where nothing else stops a stale leader's writes).
    """

    def __init__(self, age: float) -> None:
        held = f"{age:.1f} s" if age != float("inf") else "this whole term"
        super().__init__(f"no heartbeat for {held}: stepping down before a successor can lead")
        self.age = age


class EmbeddedBrokerError(BridgeError):
    """The embedded broker could not be found or started."""


class ContractError(BridgeError):
    """Data read back from Kafka does not match the published event contract."""
