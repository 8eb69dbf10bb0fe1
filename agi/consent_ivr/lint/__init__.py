"""Proving a flow lawful: content rules for R1–R19 and the whole-flow proof (`consent-ivr lint`)."""
