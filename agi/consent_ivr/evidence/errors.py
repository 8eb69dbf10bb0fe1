"""The evidence store's errors: what every store operation raises, each with a one-line message."""

from __future__ import annotations


class StoreError(Exception):
    """The evidence store cannot do what was asked; the message is one line for an operator."""


class EvidenceWriteError(StoreError):
    """The record could not be made durable."""
