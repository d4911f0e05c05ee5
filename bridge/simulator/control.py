"""The control API under `/_sim/`: JSON endpoints through which tests, demos and benchmarks
watch the simulator and steer it.

- `GET /_sim/state`: rows, last serial, calls served, throttled, faults, live rate, page size;
- `GET /_sim/visibility?after=N`: when each row after serial N became visible (POSIX seconds);
- `POST /_sim/faults` `{"kind", "count", "retry_after", "code", "message"}`: queue faults for the
  next calls;
- `POST /_sim/append` `{"rows"}`: append rows at once;
- `POST /_sim/rate` `{"rate"}`: change the live rows per second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.simulator.settings import CONTROL_FAULT_KINDS

if TYPE_CHECKING:
    from bridge.simulator.server import Simulator


def add_control_routes(app: web.Application, simulator: Simulator) -> None:
    """Serve the control API of `simulator` on `app`."""
    control = _Control(simulator)
    app.router.add_get("/_sim/state", control.state)
    app.router.add_get("/_sim/visibility", control.visibility)
    app.router.add_post("/_sim/faults", control.add_faults)
    app.router.add_post("/_sim/append", control.append)
    app.router.add_post("/_sim/rate", control.set_rate)


class _Control:
    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def state(self, request: web.Request) -> web.Response:
        sim = self.simulator
        return web.json_response(
            {
                "last_serial": sim.journal.last_serial,
                "rows": sim.journal.rows,
                "calls": sim.calls,
                "throttled": sim.throttled,
                "faults": sim.faults,
                "pending_faults": len(sim.queued),
                "rate": sim.rate,
                "page_size": sim.settings.page_size,
                "projects": len(sim.journal.packages()),
            }
        )

    async def visibility(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise _bad_request("after must be a serial") from None
        return web.json_response({"rows": self.simulator.journal.visible_since(after)})

    async def add_faults(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        kind = str(payload.get("kind", ""))
        if kind not in CONTROL_FAULT_KINDS:
            raise _bad_request(f"kind must be one of {', '.join(CONTROL_FAULT_KINDS)}")
        pending = self.simulator.queue(
            _number(payload, "count", 1, int),
            kind,
            retry_after=_number(payload, "retry_after", 1, int),
            code=_number(payload, "code", -32500, int),
            message=str(payload.get("message", "RuntimeError: simulated failure")),
        )
        return web.json_response({"pending_faults": pending})

    async def append(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        journal = self.simulator.journal
        added = journal.append(_number(payload, "rows", 1, int))
        return web.json_response({"added": added, "last_serial": journal.last_serial})

    async def set_rate(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        rate = _number(payload, "rate", None, float)
        if rate is None or rate < 0:
            raise _bad_request("rate must be a number of rows per second, 0 or more")
        self.simulator.set_rate(rate)
        return web.json_response({"rate": self.simulator.rate})


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message + "\n")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json() if request.can_read_body else {}
    except ValueError:
        raise _bad_request("the body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise _bad_request("the body must be a JSON object")
    return payload


def _number(payload: dict[str, Any], key: str, default: Any, kind: type[Any]) -> Any:
    value = payload.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_request(f"{key} must be a number")
    if kind is int and value != int(value):
        raise _bad_request(f"{key} must be a whole number")
    return kind(value)
