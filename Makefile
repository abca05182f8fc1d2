# Everything a newcomer needs: `make run` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: system-packages setup test run serve bench clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# espeak-ng: the offline Hindi voice. Installed where this runs as root with apt (CI, containers);
# elsewhere one line says how, and Hindi campaigns speak offline in Piper's English voice.
system-packages:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing espeak-ng (offline Hindi voice)"; \
	    (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq espeak-ng >/dev/null)) || \
	    echo "note: apt-get could not install espeak-ng: Hindi campaigns speak offline in English"; \
	  else echo "note: sudo apt-get install espeak-ng gives Hindi campaigns a Hindi voice offline"; fi; }

test: $(STAMP)
	$(BIN)/python -m pytest -q

run: $(STAMP)
	$(BIN)/bot run --lead examples/lead.json

serve: $(STAMP)
	$(BIN)/python server.py

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/capacity.py

clean:
	rm -rf $(VENV) .pytest_cache
