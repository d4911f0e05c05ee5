# The two commands from the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit system-deps kafka-jars kafka bench fuzz clean lock image chart-docs

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the real-component tests need (Prometheus and promtool; Java 17 and Maven for
# Apache Kafka; buildah, podman, runc and debootstrap to build and run the image; tinyproxy, the
# forward proxy of the proxy tests). Installed when root;
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
	@if command -v tinyproxy >/dev/null 2>&1; then \
		echo "tinyproxy: present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian package tinyproxy (the forward proxy of tests/test_proxy.py)"; \
		(apt-get update -qq >/dev/null 2>&1 || true); \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy >/dev/null; \
	else \
		echo "tinyproxy is missing and this is not root: install the Debian package 'tinyproxy'"; \
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
	@if command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then \
		echo "buildah, podman, runc and debootstrap: present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages buildah, podman, runc and debootstrap (the image build and run)"; \
		(apt-get update -qq >/dev/null 2>&1 || true); \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah podman runc debootstrap >/dev/null; \
	else \
		echo "buildah, podman, runc or debootstrap is missing and this is not root: install those Debian packages"; \
	fi

# Apache Kafka's broker jars from Maven Central (versions pinned in tests/kafka/pom.xml), resolved
# once into Maven's local repository; the classpaths are cached in .cache/kafka/.
kafka-jars: $(STAMP) system-deps
	@command -v java >/dev/null 2>&1 || { echo "make: java not found: install Java 17 (Debian: openjdk-17-jre-headless)"; [ "$${CI:-}" != "true" ] || exit 1; }
	@command -v mvn >/dev/null 2>&1 || { echo "make: mvn not found: install Maven (Debian: maven)"; [ "$${CI:-}" != "true" ] || exit 1; }
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then $(BIN)/python -m tests.realkafka fetch; fi

# deploy/requirements.lock (the runtime dependencies) and deploy/build-requirements.lock (the
# wheel's build backend), every file pinned by its sha256, by pip-tools in a venv of its own.
# Existing pins are kept; `make lock UPGRADE=1` moves to the newest versions pyproject allows.
LOCK_VENV   := .cache/lock-venv
PIP_TOOLS   := pip-tools==7.7.0
PIP_COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-find-links $(if $(UPGRADE),--upgrade)
lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet '$(PIP_TOOLS)'; }
	$(PIP_COMPILE) --output-file deploy/requirements.lock pyproject.toml
	$(PIP_COMPILE) --build-deps-for wheel --only-build-deps --output-file deploy/build-requirements.lock pyproject.toml

# The image pypi-kafka-bridge:<version in pyproject> from deploy/Dockerfile and the lock files:
# docker when a daemon answers, otherwise buildah (no daemon; see deploy/build-image.sh).
IMAGE_TAG ?= pypi-kafka-bridge:$(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -n 1)
image:
	deploy/build-image.sh $(IMAGE_TAG)

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

# The chart's generated files: the values table of deploy/helm/pypi-bridge/README.md (from
# values.schema.json and values.yaml) and the plain rule file files/prometheus-rules.yaml (the
# chart's alerts rendered by the real Helm engine). tests/test_helm.py and tests/test_alerts.py
# fail when either is out of date.
chart-docs: $(STAMP)
	$(BIN)/python deploy/helm/values_table.py
	$(BIN)/python deploy/helm/plain_rules.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.backfill
	$(BIN)/python -m benchmarks.ordered_memory

# Coverage-guided fuzzing (atheris) of bytes -> decoder -> row rule -> parser -> record, for
# FUZZ_SECONDS (`make fuzz FUZZ_SECONDS=3600`); `make test` runs a bounded run (tests/test_fuzz.py).
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
