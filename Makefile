# Two commands: `make demo` (install, fetch data, write samples) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= samples

.PHONY: install demo test test-all browser train-quick bench clean

$(BIN)/tinychameleon: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned here (a CPU build lies on the setup's disk); the package accepts any torch >= 2.4.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[web,test]"
	touch $@

install: $(BIN)/tinychameleon

demo: install
	$(BIN)/tinychameleon data
	$(BIN)/tinychameleon report --out $(DEMO_OUT)
	@echo "sample grids written to $(DEMO_OUT)/ (text_to_image.png, image_to_text.png, unconditional.png)"

# Debian's Chromium for the browser test (Playwright's own browser download cannot work offline).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: install
	$(BIN)/tinychameleon data
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

train-quick: install
	$(BIN)/tinychameleon train --preset quick --out runs/quick

bench: install
	$(BIN)/tinychameleon bench

clean:
	rm -rf $(VENV) runs samples .pytest_cache
