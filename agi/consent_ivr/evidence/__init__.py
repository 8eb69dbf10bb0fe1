"""Durable, tamper-evident evidence of each decision: the record, the chain store and its backends,
group commit, caller pseudonyms."""
