"""consent-ivr: ask every caller for consent before call tracking runs (Asterisk AGI/FastAGI)."""

__version__ = "0.1.0"
