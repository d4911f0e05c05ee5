# The two commands from the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit system-deps kafka-jars kafka bench fuzz clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the real-component tests need (Prometheus and promtool; Java 17 and Maven for
# Apache Kafka). Installed when root;
# otherwise the tests that need them fail in CI and are skipped, loudly, elsewhere.
system-deps:
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then \
		echo "prometheus: present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian package prometheus"; \
		(apt-get update -qq >/dev/null 2>&1 || true); \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus kcat >/dev/null; \
	else \
		echo "prometheus is missing and this is not root: install the Debian package 'prometheus'"; \
	fi
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
		echo "java and maven: present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages openjdk-17-jre-headless and maven (Apache Kafka's broker)"; \
		(apt-get update -qq >/dev/null 2>&1 || true); \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null; \
	else \
		echo "Java 17 or Maven is missing and this is not root: install openjdk-17-jre-headless and maven"; \
	fi

# Apache Kafka's broker jars from Maven Central (versions pinned in tests/kafka/pom.xml), resolved
# once into Maven's local repository; the classpaths are cached in .cache/kafka/.
kafka-jars: $(STAMP) system-deps
	@command -v java >/dev/null 2>&1 || { echo "make: java not found: install Java 17 (Debian: openjdk-17-jre-headless)"; [ "$${CI:-}" != "true" ] || exit 1; }
	@command -v mvn >/dev/null 2>&1 || { echo "make: mvn not found: install Maven (Debian: maven)"; [ "$${CI:-}" != "true" ] || exit 1; }
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then $(BIN)/python -m tests.realkafka fetch; fi

# One Apache Kafka broker in the foreground, for people: prints its bootstrap address.
kafka: kafka-jars
	$(BIN)/python -m tests.realkafka serve

demo: $(STAMP)
	$(BIN)/pypi-bridge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test: $(STAMP) system-deps kafka-jars lint typecheck
	$(BIN)/pytest -q -ra --durations=25

bench: $(STAMP)
	$(BIN)/python -m benchmarks.backfill

# Coverage-guided fuzzing (atheris) of bytes -> decoder -> row rule -> parser -> record, for
# FUZZ_SECONDS (`make fuzz FUZZ_SECONDS=3600`); `make test` runs a bounded run (tests/test_fuzz.py).
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
