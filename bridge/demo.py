"""`pypi-bridge demo`: the embedded broker, the journal simulator and the bridge on this machine,
with a live view of events arriving by type, until Ctrl-C (or `--duration`)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import sys
import time
from typing import TextIO

from bridge.broker import EmbeddedBroker, free_port, start_broker
from bridge.config import RUN_FLAGS, KafkaSettings, _EnvDefaultsParser, add_flags, run_settings
from bridge.consumer import EventStream
from bridge.events import Event
from bridge.service import Replica
from bridge.simulator import SimulatorSettings

PREFIX = "pypi"


def _describe(event: Event) -> str:
    detail = ""
    for name in ("filename", "principal", "fields", "previous_name", "username", "url"):
        value = getattr(event, name, None)
        if value:
            detail = ", ".join(value) if isinstance(value, tuple) else str(value)
            break
    version = event.version or ""
    return (
        f"{event.serial:>10}  {event.type:<28} {event.project[:28]:<28} "
        f"{version[:14]:<14} {detail[:50]}"
    )


@dataclasses.dataclass
class View:
    """What the demo shows: counts by type, the latest events, the bridge's progress."""

    out: TextIO
    interactive: bool
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latest: collections.deque[Event] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=10)
    )
    started: float = dataclasses.field(default_factory=time.monotonic)
    header: str = ""

    def add(self, event: Event) -> None:
        self.counts[event.type] += 1
        self.latest.append(event)

    def render(self, replica: Replica) -> str:
        total = sum(self.counts.values())
        elapsed = max(1e-9, time.monotonic() - self.started)
        lines = [self.header, ""]
        role = replica.health.role
        mode = next(
            (
                m
                for m in ("transactional", "high-water")
                if replica.metrics.delivery_mode.labels(m)._value.get() == 1
            ),
            "-",
        )
        lines.append(f"bridge: {role}, {mode} delivery. {replica.progress.describe()}")
        lines.append(f"events received: {total} ({total / elapsed:.1f}/s)")
        lines.append("")
        widest = max(self.counts.values(), default=1)
        for type_name, count in self.counts.most_common():
            bar = "#" * max(1, round(30 * count / widest))
            lines.append(f"  {type_name:<36} {count:>8}  {bar}")
        lines.append("")
        lines.append("latest events:")
        lines.extend("  " + _describe(e) for e in reversed(self.latest))
        return "\n".join(lines)

    def show(self, replica: Replica) -> None:
        text = self.render(replica)
        if self.interactive:
            self.out.write("\x1b[H\x1b[2J" + text + "\n\nCtrl-C to stop.\n")
        else:
            summary = ", ".join(f"{t}={c}" for t, c in self.counts.most_common(6))
            self.out.write(
                f"[{time.monotonic() - self.started:5.0f}s] {sum(self.counts.values())} events "
                f"({summary}); {replica.progress.describe()}\n"
            )
        self.out.flush()


def _simulator_settings(ns: argparse.Namespace, port: int) -> SimulatorSettings:
    from bridge.simulator import SIMULATE_FLAGS, simulator_settings

    parser = _EnvDefaultsParser(prog="pypi-bridge demo")
    add_flags(parser, SIMULATE_FLAGS, {})
    sim_ns = parser.parse_args(
        [
            "--port",
            str(port),
            "--prefill",
            str(ns.prefill),
            "--rate",
            str(ns.rate),
            "--seed",
            str(ns.seed),
        ]
    )
    return simulator_settings(sim_ns)


async def run_demo(ns: argparse.Namespace, stop: asyncio.Event) -> int:
    from bridge.simulator import serve

    out = sys.stdout
    broker: EmbeddedBroker = await asyncio.to_thread(start_broker)
    sim_port = free_port()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    simulator = asyncio.create_task(
        serve(_simulator_settings(ns, sim_port), on_ready=ready.set_result)
    )
    tasks: list[asyncio.Task[object]] = [simulator]
    try:
        url = await asyncio.wait_for(ready, 60)
        http_port = ns.http_port
        if http_port and not _port_free(http_port):
            http_port = 0  # another process has it; any free port will do for a demo
        parser = _EnvDefaultsParser(prog="pypi-bridge demo")
        add_flags(parser, RUN_FLAGS, {})
        run_ns = parser.parse_args(
            [
                "--pypi-url",
                url,
                "--bootstrap-servers",
                broker.bootstrap_servers,
                "--start-serial",
                "0",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                str(http_port),
                "--replica-id",
                "demo",
                "--progress-interval",
                "5",
                "--log-level",
                ns.log_level,
            ]
        )
        replica = Replica(run_settings(run_ns))
        bridge_stop = asyncio.Event()
        bridge = asyncio.create_task(replica.run(bridge_stop))
        tasks.append(bridge)
        view = View(out, interactive=out.isatty())
        await _until(replica.serving, bridge)
        view.header = (
            f"pypi-kafka-bridge demo: broker {broker.bootstrap_servers}, simulator {url}, "
            f"metrics http://127.0.0.1:{replica.http_port}/metrics"
        )
        out.write(view.header + "\n")
        out.flush()
        deadline = None if ns.duration is None else time.monotonic() + ns.duration
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await _watch(kafka, view, replica, bridge, stop, deadline)
        bridge_stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(bridge, 30)
        out.write(f"\nstopped: {sum(view.counts.values())} events shown.\n")
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(broker.stop)


async def _watch(
    kafka: KafkaSettings,
    view: View,
    replica: Replica,
    bridge: asyncio.Task[int],
    stop: asyncio.Event,
    deadline: float | None,
) -> None:
    # The topics exist once the bridge has joined the group; wait for that before subscribing.
    await _until(replica.joined, bridge)
    if bridge.done():
        bridge.result()
        return
    refresh = 1.0 if view.interactive else 5.0
    shown = time.monotonic()
    async with EventStream(kafka, ["*"], prefix=PREFIX, from_beginning=True) as stream:
        while not stop.is_set() and not bridge.done():
            if deadline is not None and time.monotonic() >= deadline:
                break
            event = await stream.get(0.25)
            if event is not None:
                view.add(event)
            if time.monotonic() - shown >= refresh:
                view.show(replica)
                shown = time.monotonic()
    view.show(replica)
    if bridge.done():
        bridge.result()


async def _until(event: asyncio.Event, bridge: asyncio.Task[int]) -> None:
    """Wait for `event`, or for the bridge to end (with an error to show)."""
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait({waiter, bridge}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if bridge.done() and not bridge.cancelled() and bridge.exception() is not None:
        bridge.result()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
