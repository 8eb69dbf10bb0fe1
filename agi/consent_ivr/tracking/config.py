"""The tracking step's settings: the store, the customer directory, the retention and GA4's
endpoint, credentials, timeout and backoff, read from the environment (docs/tracking.md)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from consent_ivr.paths import store_location

DEFAULT_ENDPOINT = "https://www.google-analytics.com/mp/collect"


@dataclass(frozen=True)
class Ga4Config:
    endpoint: str = DEFAULT_ENDPOINT
    measurement_id: str | None = None
    api_secret: str | None = None
    timeout: float = 5.0
    backoff_base: float = 30.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 3600.0
    max_attempts: int = 10

    @property
    def missing(self) -> list[str]:
        return [
            name
            for name, value in (
                ("CONSENT_IVR_GA4_MEASUREMENT_ID", self.measurement_id),
                ("CONSENT_IVR_GA4_API_SECRET", self.api_secret),
            )
            if not value
        ]

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class TrackingConfig:
    store: str
    directory: str | None = None  # CSV path of the customer directory
    retention_days: int = 90
    ga4: Ga4Config = field(default_factory=Ga4Config)
    send_now: bool = True  # one delivery attempt right after queueing

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TrackingConfig:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            text = env.get(name, "").strip()
            try:
                value = float(text) if text else default
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{name}={text!r} is not a finite number")
            return value

        return cls(
            store=store_location(env),
            directory=env.get("CONSENT_IVR_CUSTOMER_DIRECTORY") or None,
            retention_days=int(number("CONSENT_IVR_TRACKING_RETENTION_DAYS", 90)),
            ga4=Ga4Config(
                endpoint=env.get("CONSENT_IVR_GA4_ENDPOINT") or DEFAULT_ENDPOINT,
                measurement_id=env.get("CONSENT_IVR_GA4_MEASUREMENT_ID") or None,
                api_secret=env.get("CONSENT_IVR_GA4_API_SECRET") or None,
                timeout=number("CONSENT_IVR_GA4_TIMEOUT", 5.0),
                backoff_base=number("CONSENT_IVR_GA4_BACKOFF", 30.0),
                max_attempts=int(number("CONSENT_IVR_GA4_MAX_ATTEMPTS", 10)),
            ),
            send_now=env.get("CONSENT_IVR_GA4_SEND_NOW", "1") != "0",
        )
