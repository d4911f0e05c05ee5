"""End-to-end benchmark of the bridge, with every component a real process (issue 7).

    python -m benchmarks.backfill [--rows 1000000] [--baseline-rows 50000]
                                  [--freshness-seconds 60] [--real-kafka auto|yes|no]
                                  [--quick] [--output-dir DIR]

One run measures, against the embedded broker (tansu, high-water delivery) and the journal
simulator:

- backfill throughput: `pypi-bridge run` from serial 0 to the last of `--rows` prefilled rows,
  from process start to exit (everything a user waits for), and from its first commit to its
  last (the first checkpoint is the starting point, written before any page is read), so that
  start-up (imports, topics, leader election, recovery) shows up separately. Commit times come
  from the checkpoints themselves (`written_at`), read back after the run, which also proves
  that every row was delivered;
- the bridge's peak resident memory during that backfill (the kernel's own peak, from wait4,
  cross-checked by sampling /proc/<pid>/status every 50 ms);
- a naive baseline written the way most scripts do it (the standard library's ServerProxy,
  a dict per row, json.dumps, one awaited send per record with aiokafka's defaults), against the
  same simulator and broker over a smaller slice;
- freshness under steady traffic: how long after a row becomes visible in the simulator a plain
  aiokafka consumer receives its event, with the bridge's default poll and request intervals;
- the bridge's CPU time (user + system, from wait4) per 1,000 rows of the backfill.

In the same run, on Apache Kafka itself (one KRaft node started with `tests/realkafka.py`, the
newest pinned 4.x; the bridge auto-detects transactional delivery):

- the same backfill, over the same prefilled journal: rows/s, peak RSS, CPU per 1,000 rows; every
  event is counted back with a read_committed consumer (serials distinct, none missing);
- takeover: two replicas (`--leader-session-timeout 6`) tail a journal the harness grows by one
  row every 50 ms (so rows always wait for the next leader); the leader is stopped with SIGTERM
  (graceful, target 1 s) and, in a second pair, with SIGKILL (target: the session time-out plus
  2 s). Each is timed from the signal to the standby's "is now the leader" line (the line's own
  timestamp) and to its first commit (the `written_at` of the first checkpoint the standby
  wrote, read back with read_committed);
- start-up phases, from the bridge's own log timestamps: a first start (topics created), a
  restart on existing topics (with `--log-level DEBUG`, whose aiokafka lines split the topic
  check from the group join) and the two standbys taking over.

Without Java or the broker's jars (`make kafka-jars`) the real-Kafka part says so and is skipped
(`--real-kafka yes` makes that an error, `no` skips it). Timings are printed with their targets
and a met/missed marker, never asserted: a slow or busy machine reports slow figures.

It prints a table (figure, value, target, ratio to the baseline, met) with the machine and date,
and writes `latest.json` and `latest.md` to `--output-dir` (default `benchmarks/results`). Every
process it starts is stopped on the way out, also on Ctrl-C or SIGTERM.

When a row became visible: the simulator keeps no per-row visibility time today, so the harness
polls `/_sim/state` every 20 ms and takes, for each serial, the start of the last poll that did
not show it yet (an upper bound on the delay, by at most one poll). If the simulator offers
`GET /_sim/visibility?after=N` (`{"rows": [[serial, posix_seconds], ...]}`), those exact times
are used instead. The events' own `timestamp` cannot stand in: the simulator writes era times
derived from the serial, not the wall clock.

The package, in the order a run uses it: `harness` (the processes, the brokers, and what they
are measured with), `scenarios` (backfill, naive baseline, freshness, takeover, restart),
`report` (the table, `latest.json`, `latest.md`) and `command` (the flags and the run).
"""

from benchmarks.backfill.command import (
    DEFAULT_OUTPUT,
    QUICK,
    main,
    parse_args,
    run,
)
from benchmarks.backfill.harness import (
    CONSUMER_FETCH_WAIT_MS,
    FIRST_COMMIT,
    FRESHNESS_SLACK,
    JOINED_LINE,
    KILL_TAKEOVER_SLACK,
    LEADER_LINE,
    LEADER_SESSION_TIMEOUT,
    LOST_LINE,
    MIN_REQUEST_INTERVAL,
    PHASES_NOTE,
    POLL_INTERVAL,
    RESUMED_LINE,
    ROOT,
    SAMPLE_SECONDS,
    TARGET_GRACEFUL_TAKEOVER,
    TARGET_PEAK_MB,
    TARGET_ROWS_PER_SECOND,
    TARGET_SPEEDUP,
    BenchmarkError,
    Feeder,
    MemorySampler,
    Phase,
    Processes,
    Startup,
    bridge_args,
    checkpoint_history,
    count_committed,
    cpu_seconds,
    first_at,
    get_json,
    metric,
    read_log,
    seconds_text,
    sim_base,
    start_simulator,
    startup_phases,
    step,
    verdict,
    wait_for_log,
    wait_for_metric,
    wait_with_usage,
    warm_up,
)
from benchmarks.backfill.report import (
    HEADER,
    KAFKA,
    Figure,
    describe_machine,
    figures,
    kafka_figures,
    kafka_notes,
    machine,
    markdown_table,
    notes,
    phase_cells,
    text_grid,
    text_table,
    write_results,
)
from benchmarks.backfill.scenarios import (
    VISIBILITY_POLL_SECONDS,
    Backfill,
    Freshness,
    KafkaRun,
    Naive,
    Takeover,
    measure_backfill,
    measure_freshness,
    measure_naive,
    measure_restart,
    measure_takeover,
    naive_parse,
    percentile,
    replica_args,
    run_real_kafka,
)

__all__ = [
    "CONSUMER_FETCH_WAIT_MS",
    "DEFAULT_OUTPUT",
    "FIRST_COMMIT",
    "FRESHNESS_SLACK",
    "HEADER",
    "JOINED_LINE",
    "KAFKA",
    "KILL_TAKEOVER_SLACK",
    "LEADER_LINE",
    "LEADER_SESSION_TIMEOUT",
    "LOST_LINE",
    "MIN_REQUEST_INTERVAL",
    "PHASES_NOTE",
    "POLL_INTERVAL",
    "QUICK",
    "RESUMED_LINE",
    "ROOT",
    "SAMPLE_SECONDS",
    "TARGET_GRACEFUL_TAKEOVER",
    "TARGET_PEAK_MB",
    "TARGET_ROWS_PER_SECOND",
    "TARGET_SPEEDUP",
    "VISIBILITY_POLL_SECONDS",
    "Backfill",
    "BenchmarkError",
    "Feeder",
    "Figure",
    "Freshness",
    "KafkaRun",
    "MemorySampler",
    "Naive",
    "Phase",
    "Processes",
    "Startup",
    "Takeover",
    "bridge_args",
    "checkpoint_history",
    "count_committed",
    "cpu_seconds",
    "describe_machine",
    "figures",
    "first_at",
    "get_json",
    "kafka_figures",
    "kafka_notes",
    "machine",
    "main",
    "markdown_table",
    "measure_backfill",
    "measure_freshness",
    "measure_naive",
    "measure_restart",
    "measure_takeover",
    "metric",
    "naive_parse",
    "notes",
    "parse_args",
    "percentile",
    "phase_cells",
    "read_log",
    "replica_args",
    "run",
    "run_real_kafka",
    "seconds_text",
    "sim_base",
    "start_simulator",
    "startup_phases",
    "step",
    "text_grid",
    "text_table",
    "verdict",
    "wait_for_log",
    "wait_for_metric",
    "wait_with_usage",
    "warm_up",
    "write_results",
]
