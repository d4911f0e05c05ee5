"""The commands a newcomer runs first: demo, broker, run on embedded defaults, and bad input."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support import bridge_command, child_env, start, start_simulator


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bridge_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**child_env(), **(env or {})},
        check=False,
    )


async def test_demo_shows_events_arriving_by_type(tmp_path: Path) -> None:
    demo = start(
        bridge_command("demo", "--duration", "25", "--http-port", "0"), tmp_path / "demo.log"
    )
    assert await asyncio.to_thread(demo.wait, 120) == 0, demo.output()[-3000:]
    output = demo.output()
    assert "pypi-kafka-bridge demo: broker 127.0.0.1:" in output
    counts = [int(n) for n in re.findall(r"\] (\d+) events \(", output)]
    assert counts, output[-2000:]
    assert counts[-1] >= 5000, "the 5,000 prefilled rows and the live ones are shown"
    assert "file.added=" in output
    assert "stopped:" in output
    assert "Traceback" not in output


async def test_broker_command_serves_kafka_until_stopped(tmp_path: Path) -> None:
    broker = start(bridge_command("broker", "--port", "0"), tmp_path / "broker.log")
    try:
        deadline = time.monotonic() + 30
        while "bootstrap servers:" not in broker.output():
            assert time.monotonic() < deadline, broker.output()
            await asyncio.sleep(0.1)
        bootstrap = broker.output().split("bootstrap servers:")[1].split()[0]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("hello", b"world")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "hello", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()
        assert record.value == b"world"
    finally:
        assert broker.stop(signal.SIGTERM) == 0


async def test_run_without_bootstrap_servers_starts_the_embedded_broker(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, "--prefill", "500", "--rate", "0")
    try:
        last = sim.state()["last_serial"]
        bridge = start(
            bridge_command(
                "run",
                "--pypi-url",
                sim.url,
                "--start-serial",
                "0",
                "--stop-at-serial",
                str(last),
                "--http-port",
                "0",
                "--min-request-interval",
                "0",
            ),
            tmp_path / "bridge.log",
        )
        assert await asyncio.to_thread(bridge.wait, 120) == 0, bridge.output()[-3000:]
        output = bridge.output()
        assert "started the embedded broker at 127.0.0.1:" in output
        assert f"reached --stop-at-serial {last}" in output
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["run", "--poll-interval", "soon"], {}, "argument --poll-interval: 'soon'"),
        (["run", "--start-serial", "-4"], {}, "expected a serial (0 to 2147483647) or 'latest'"),
        (["run"], {"PYPI_BRIDGE_PARTITIONS": "zero"}, "PYPI_BRIDGE_PARTITIONS"),
        (["run", "--security-protocol", "SASL_SSL"], {}, "needs a SASL mechanism"),
        (["run", "--start-serial", "10", "--stop-at-serial", "5"], {}, "is before --start-serial"),
        (["consume"], {}, "pass --bootstrap-servers"),
        (["consume", "--bootstrap-servers", "x:1", "--type", "nope"], {}, "no event type matches"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem_with_exit_2(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    completed = run_cli(*args, env=env)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert expected in lines[0]


def test_secrets_are_not_echoed_in_errors() -> None:
    completed = run_cli(
        "run", env={"PYPI_BRIDGE_SASL_PASSWORD": "hunter2", "PYPI_BRIDGE_HTTP_PORT": "x"}
    )
    assert completed.returncode == 2
    assert "hunter2" not in completed.stderr + completed.stdout


def test_every_flag_reads_its_environment_variable() -> None:
    completed = run_cli("run", "--help", env={"PYPI_BRIDGE_TOPIC_PREFIX": "mirror"})
    assert "(default: mirror)" in completed.stdout
