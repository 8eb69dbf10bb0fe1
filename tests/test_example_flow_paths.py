"""Exhaustive proof on the shipped example flow: every caller behaviour up to the caps."""

from __future__ import annotations

import pytest

from consent_ivr.flow.loader import load_flow
from consent_ivr.paths import flows_dir
from pathcheck import FIVE_STATES, explore


@pytest.mark.parametrize("lang", ["de", "en"])
def test_example_flow_grants_only_on_an_informed_accept_and_always_terminates(lang: str) -> None:
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    result = explore(flow, lang)
    # no violation: granted only after the accept key with the whole first layer heard,
    # variables say granted only after the record was written, no cycle (no endless call)
    assert result.violations == []
    assert result.terminal_statuses == FIVE_STATES - {"partial"}  # one purpose: never partial
    assert result.granted_paths > 0
    print(f"{lang}: {result.states} states, {result.edges} transitions explored")
