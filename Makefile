# consent-ivr: the two commands of the README, and what they need.
#   make demo       set up, then simulate calls of the German example flow
#   make test       set up, then lint (ruff), type-check (mypy), prove the shipped flows lawful
#                   (consent-ivr lint flows) and run the whole test suite: what CI runs
# For the edit-test loop (docs/testing.md):
#   make test-fast  the same, without the fault tests and the soak (a few minutes less)
#   make check      only ruff, mypy and consent-ivr lint flows
#   make pictures   redraw the example flow's picture (docs/images/, shown in the README)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: demo test test-fast check pictures system-deps bytecode clean

demo: $(STAMP) bytecode
	$(BIN)/consent-ivr demo

test: check system-deps
	$(BIN)/consent-ivr test flows
	$(BIN)/python -m pytest

# The fault tests (kill -9, a PostgreSQL outage, two servers) and the two-minute soak are
# marked (tests/conftest.py); everything else runs.
test-fast: check system-deps
	$(BIN)/consent-ivr test flows
	$(BIN)/python -m pytest -m "not soak and not faults"

check: $(STAMP) bytecode
	$(BIN)/ruff check agi tests
	$(BIN)/ruff format --check agi tests
	$(BIN)/mypy
	$(BIN)/consent-ivr lint flows

# The example flow's picture, derived from the engine (consent-ivr graph); tests/test_graph.py
# fails when the committed .dot or .mmd is not what the engine draws today.
PICTURE := docs/images/call-tracking.de
pictures: $(STAMP) system-deps
	mkdir -p docs/images
	$(BIN)/consent-ivr graph call-tracking --lang de -o $(PICTURE).png
	$(BIN)/consent-ivr graph call-tracking --lang de -o $(PICTURE).dot
	$(BIN)/consent-ivr graph call-tracking --lang de -o $(PICTURE).mmd

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# Bytecode for every changed module (fast when none changed): process AGI starts a Python per
# call, and one that cannot write __pycache__ (Asterisk's user) would compile changed modules
# on every call.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q agi/consent_ivr

# The tests regenerate prompt audio, which needs espeak-ng and sox, drive
# `simulate --interactive` in a terminal, which needs tmux, and draw flows with
# Graphviz's dot (Debian packages).
system-deps:
	@if command -v espeak-ng >/dev/null && command -v sox >/dev/null && command -v tmux >/dev/null && command -v dot >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing espeak-ng, sox, tmux and graphviz"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox tmux graphviz >/dev/null; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox tmux graphviz >/dev/null; \
	else echo "error: the tests need espeak-ng, sox, tmux and graphviz; install them (Debian: apt-get install espeak-ng sox tmux graphviz)" >&2; exit 1; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
