# citybrain — the two commands a new user runs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bench
.PHONY: demo test test-sumo test-unit test-integration test-kafka lint typecheck install clean help eval eval-congestion eval-incidents eval-signals eval-deps eval-corpus eval-signals-corpus sumo-venv

help:
	@echo "make demo        - create .venv, install, start brokers + worker + bridge + simulated city"
	@echo "make test        - create .venv, install with test extras, ruff + mypy + pytest (unit + integration)"
	@echo "make test-kafka  - the integration suite against Apache Kafka 4 (from Maven Central) + mosquitto"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@echo "installing citybrain and its test extras into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install -e ".[test]" > $(VENV)/install.log 2>&1 || { tail -30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/citybrain demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy streams models roadnet sensors_sim ops tests bench

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration -q

# ≥ 10,000 random and mutated payloads per property against the ingest validation
test-fuzz: $(STAMP)
	CITYBRAIN_FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/fuzz -q

# Faults survived, payloads tried, events lost, duplicates, recovery times: fuzzing + the fault tests on the
# real engine (Apache Kafka + mosquitto), then the table (bench/fault_table.py)
test-faults: $(STAMP)
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { echo "mosquitto missing: apt-get install -y mosquitto"; exit 2; }
	rm -f artifacts/fault-results.jsonl
	CITYBRAIN_FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/fuzz -q
	CITYBRAIN_TEST_ENGINE=kafka CITYBRAIN_API_FUZZ_EXAMPLES=1000 $(PY) -m pytest tests/faults -q -ra
	$(PY) -m bench.fault_table

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e -q

# the SUMO twin against SUMO itself (installs the optional extra citybrain[sumo] into .venv)
test-sumo: $(STAMP)
	$(PY) -m pip install --quiet -e ".[sumo]"
	$(PY) -m pytest tests/sumo -q -ra

test: lint typecheck $(STAMP)
	$(PY) -m pytest tests -q -ra --ignore=tests/faults

# The real-engine suite: Apache Kafka (KRaft, single node) + mosquitto instead of Tansu + amqtt.
test-kafka: $(STAMP)
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { echo "mosquitto missing: apt-get install -y mosquitto"; exit 2; }
	CITYBRAIN_TEST_ENGINE=kafka $(PY) -m pytest tests/integration tests/e2e -q -ra

# Evaluations against the shared SUMO harness (need SUMO_PY: a Python with ../shared/eval/sumo/requirements.txt)
eval-deps: $(STAMP)
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e ".[eval]"

# congestion and incidents in one set of replays (normal, incident, each clean and with 10 % faulty loops)
eval: eval-deps
	$(PY) -m bench.eval_states --table docs/eval/congestion.md --incident-table docs/eval/incidents.md

eval-congestion eval-incidents: eval

# signal timing in closed loop against SUMO (fixed, Webster, max-pressure baselines, citybrain), and the five
# real Hangzhou intersections against their template plans
eval-signals: eval-deps
	SUMO_OUT=$${SUMO_OUT:-$(CURDIR)/sumo_out} $(PY) bench/eval_signals.py --mp-extra-cycles 23 --plot docs/img/signals_travel_time.png
	SUMO_OUT=$${SUMO_OUT:-$(CURDIR)/sumo_out} $(PY) bench/eval_signals.py --hangzhou

# incidents and congestion over generated SUMO scenarios (issue #16): every seed through `citybrain replay`,
# scored with the harness's score_corpus.py next to its baseline; page docs/eval/corpus.md + docs/img/corpus_ttd_fa.png.
#   make eval-corpus SEEDS="1-6" LOOP_S=30 CAM_S=60 [SUMO_OUT=.cache/corpus/30-60] [FORCE=1]
# Seeds 1-99 may be used for tuning, 100-129 are held out. Not part of `make test` (minutes per seed).
SUMO_VENV := .cache/sumo-venv
SUMO_PY ?= $(CURDIR)/$(SUMO_VENV)/bin/python
SEEDS ?= 1-6
LOOP_S ?= 30
CAM_S ?= 60
sumo-venv:
	@test -x "$(SUMO_PY)" || { [ "$(SUMO_PY)" = "$(CURDIR)/$(SUMO_VENV)/bin/python" ] && \
	  echo "creating $(SUMO_VENV) with ../shared/eval/sumo/requirements.txt" && $(PYTHON) -m venv $(SUMO_VENV) && \
	  $(SUMO_VENV)/bin/pip install --quiet -r ../shared/eval/sumo/requirements.txt; } || \
	  { echo "SUMO_PY=$(SUMO_PY) is not an interpreter"; exit 2; }

eval-corpus: eval-deps sumo-venv
	SUMO_PY=$(SUMO_PY) $(PY) -m bench.eval_corpus --seeds "$(SEEDS)" --loop-s $(LOOP_S) --cam-s $(CAM_S) \
	  $(if $(FORCE),--force) $(if $(SUMO_OUT),--out $(SUMO_OUT))

# signal timing in closed loop on generated scenarios (issue #17): fixed, Webster, max-pressure, citybrain per seed;
# held-out seeds 100-119 by default (fit on 1-99 only). Resumable; CORPUS = a folder of <seed>/scenario to reuse.
SIGNALS_SEEDS := $(if $(filter command line environment,$(origin SEEDS)),$(SEEDS),100-119)
eval-signals-corpus: eval-deps sumo-venv
	SUMO_PY=$(SUMO_PY) SUMO_OUT=$${SUMO_OUT:-$(CURDIR)/sumo_out} $(PY) bench/eval_signals_corpus.py --seeds "$(SIGNALS_SEEDS)" \
		$(if $(CORPUS),--corpus $(CORPUS)) --out $${SUMO_OUT:-$(CURDIR)/sumo_out}/signals_corpus \
		--md docs/eval/signals_corpus.md --plot docs/img/signals_corpus.png

# speed and memory, measured (not pass/fail): models, raw-consumer ceiling, end to end via Kafka and MQTT, simulator
bench: $(STAMP)
	$(PY) -m bench.bench_pipeline --json .cache/bench/results.json

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache *.egg-info
