# Everything a newcomer needs: `make run` and `make test` (both set up .venv first).
# .venv holds exactly requirements.lock (the pinned resolution of pyproject's ranges: the
# package, its offline engines and the test tools), then the project itself with --no-deps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
UV_VERSION := 0.13.9
LOCK_VENV := .venv-lock
UPGRADE_VENV := .venv-upgrade

.PHONY: system-packages setup check test run serve bench bench-memory lock upgrade-check clean

$(STAMP): pyproject.toml $(LOCK)
	@$(MAKE) --no-print-directory system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

setup: $(STAMP)

# espeak-ng: the offline Hindi voice; haproxy: the load balancer tests/test_haproxy.py runs.
# Installed where this runs as root with apt (CI, containers); elsewhere one line says how, Hindi
# campaigns speak offline in Piper's English voice and the HAProxy tests are skipped.
system-packages:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing espeak-ng (offline Hindi voice)"; \
	    (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq espeak-ng >/dev/null)) || \
	    echo "note: apt-get could not install espeak-ng: Hindi campaigns speak offline in English"; \
	  else echo "note: sudo apt-get install espeak-ng gives Hindi campaigns a Hindi voice offline"; fi; }
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing haproxy (the load balancer tests run deploy/haproxy.cfg)"; \
	    (apt-get install -y -qq haproxy >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq haproxy >/dev/null)) || \
	    echo "note: apt-get could not install haproxy: its tests are skipped"; \
	  else echo "note: sudo apt-get install haproxy runs the load balancer tests"; fi; }

# Lint, types and the import layers (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]).
check: $(STAMP)
	$(BIN)/ruff check bot pipelines serializers server.py testing tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/bot run --lead examples/lead.json

serve: $(STAMP)
	$(BIN)/python server.py

# The bench tools on top of the lock (pinned where the lock has them).
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/capacity.py

# RSS of one worker, cloud (a lean install: the package alone, pinned by the lock) and offline.
bench-memory: $(VENV)/.bench
	rm -rf $(VENV)-lean && $(PYTHON) -m venv $(VENV)-lean
	$(VENV)-lean/bin/pip install --quiet -c $(LOCK) .
	$(BIN)/python bench/memory.py --scenarios cloud --server-python $(VENV)-lean/bin/python --label after-lean
	$(BIN)/python bench/memory.py --label after-full

# The campaign job engine at Exotel's 200 calls/min against the fake Exotel, on this machine's
# PostgreSQL (TEST_POSTGRES_URL; a database of its own, dropped after): bench/results/job_engine.json.
.PHONY: bench-jobs
bench-jobs: $(STAMP)
	$(BIN)/python bench/job_engine.py

# Regenerate requirements.lock from pyproject's ranges (keeps the pins that still fit;
# `make lock UPGRADE=1` moves every pin to the newest allowed release).
lock:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra offline --extra test --universal \
	  --python-version 3.11 --custom-compile-command 'make lock' --quiet $(if $(UPGRADE),--upgrade) -o $(LOCK)
	@! grep -iqE '^(torch|nvidia-|triton)' $(LOCK) || { echo "$(LOCK) pulls torch"; exit 1; }

# The newest Pipecat (and everything else) pyproject's ranges allow, no lock, in a venv of its
# own: what `make lock UPGRADE=1` would move to, and whether the suite passes on it.
upgrade-check:
	@$(MAKE) --no-print-directory system-packages
	rm -rf $(UPGRADE_VENV) && $(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/pip install --quiet --upgrade pip
	$(UPGRADE_VENV)/bin/pip install --quiet -e '.[test]'
	$(UPGRADE_VENV)/bin/pip check
	$(UPGRADE_VENV)/bin/python .ci/lock_drift.py $(LOCK)
	$(UPGRADE_VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) $(VENV)-lean $(LOCK_VENV) $(UPGRADE_VENV) .pytest_cache
