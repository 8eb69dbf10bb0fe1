"""The whole-flow proof on the shipped example flows: every caller behaviour up to the caps."""

from __future__ import annotations

import pytest

from consent_ivr.flow.loader import load_flow
from consent_ivr.lint.proof import FIVE_STATES, prove
from consent_ivr.paths import flows_dir


@pytest.mark.parametrize("lang", ["de", "en"])
def test_example_flow_grants_only_on_an_informed_accept_and_always_terminates(lang: str) -> None:
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    result = prove(flow, lang)
    # no violation: granted only after the accept key with the whole first layer heard,
    # variables say granted only after the record was written, no cycle (no endless call),
    # decline as cheap as accept, no question asked twice, replays return to the question
    assert result.violations == []
    assert result.terminal_statuses == FIVE_STATES - {"partial"}  # one purpose: never partial
    assert result.states > 1000 and result.paths > 10**9
    print(f"{lang}: {result.states} states, {result.transitions} transitions explored")
