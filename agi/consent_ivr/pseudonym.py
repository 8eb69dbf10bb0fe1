"""Caller pseudonyms: HMAC-SHA256 of the normalised number under a key that never leaves the host.

The key comes from ``CONSENT_IVR_HMAC_KEY`` or the file named by ``CONSENT_IVR_HMAC_KEY_FILE``;
there is no default key. A record names the key by its id (a hash of the key), so a rotated key
leaves old records verifiable.
"""

from __future__ import annotations

import os
import time

from consent_ivr.records import Record

MIN_KEY_BYTES = 16


class ConfigError(Exception):
    """A start-up configuration problem, with a message an administrator can act on."""


class PseudonymKey:
    """The HMAC key for caller pseudonyms and its public id (first 12 hex of its SHA-256).

    hashlib is imported on first use (the id, a pseudonym): process AGI validates the key before
    the first prompt but hashes only when it writes the record.
    """

    __slots__ = ("_key_id", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = bytes(secret)
        self._key_id: str | None = None

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def key_id(self) -> str:
        if self._key_id is None:
            import hashlib

            self._key_id = "k-" + hashlib.sha256(self.secret).hexdigest()[:12]
        return self._key_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PseudonymKey) and other.secret == self.secret

    def __hash__(self) -> int:
        return hash(self.secret)

    def __repr__(self) -> str:  # never the secret
        return f"PseudonymKey({self.key_id})"

    @classmethod
    def from_bytes(cls, secret: bytes) -> PseudonymKey:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the HMAC key is {len(secret)} bytes; at least {MIN_KEY_BYTES} bytes are required"
            )
        return cls(secret)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PseudonymKey:
        env = os.environ if environ is None else environ
        value = env.get("CONSENT_IVR_HMAC_KEY")
        if value:
            return cls.from_bytes(value.encode("utf-8"))
        key_file = env.get("CONSENT_IVR_HMAC_KEY_FILE")
        if key_file:
            return cls.from_bytes(_read_key_file(key_file, "the HMAC key file"))
        raise ConfigError(
            "no HMAC key for caller pseudonyms: set CONSENT_IVR_HMAC_KEY or "
            "CONSENT_IVR_HMAC_KEY_FILE (a file with at least 16 random bytes, e.g. "
            "`head -c 32 /dev/urandom | base64 > /etc/consent-ivr/hmac.key`)"
        )

    def pseudonym(self, caller: str) -> str | None:
        """HMAC-SHA256 of the normalised number; None for an absent/anonymous caller."""
        number = normalise_number(caller)
        if number is None:
            return None
        import hmac

        return hmac.new(self.secret, number.encode("utf-8"), "sha256").hexdigest()


def _read_key_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def normalise_number(caller: str) -> str | None:
    """Keep a leading + and the digits; None when nothing identifying is left (e.g. `unknown`)."""
    text = caller.strip()
    digits = "".join(c for c in text if c.isdigit())
    if not digits:
        return None
    return ("+" if text.startswith("+") else "") + digits


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z (no datetime import)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Keyring(Record):
    """The current pseudonym key (writes new records) and retired keys (still found by lookups).

    After a rotation, records written under an old key name that key's id; a data-subject request
    must find them too, so `find`/`export`/`withdraw` hash the number with every key. Old keys come
    from ``CONSENT_IVR_HMAC_OLD_KEY_FILES`` (colon-separated files, one key each).
    """

    current: PseudonymKey
    old: tuple[PseudonymKey, ...] = ()

    @property
    def keys(self) -> tuple[PseudonymKey, ...]:
        return (self.current, *self.old)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Keyring:
        env = dict(os.environ) if environ is None else environ
        current = PseudonymKey.from_environment(env)
        old: list[PseudonymKey] = []
        for name in (env.get("CONSENT_IVR_HMAC_OLD_KEY_FILES") or "").split(":"):
            if not name.strip():
                continue
            what = "the old HMAC key file (CONSENT_IVR_HMAC_OLD_KEY_FILES)"
            key = PseudonymKey.from_bytes(_read_key_file(name, what))
            if key.key_id != current.key_id and all(k.key_id != key.key_id for k in old):
                old.append(key)
        return cls(current, tuple(old))

    def pseudonyms(self, caller: str) -> dict[str, str]:
        """key id -> pseudonym of the number under that key (empty for an anonymous caller)."""
        out: dict[str, str] = {}
        for key in self.keys:
            value = key.pseudonym(caller)
            if value is not None:
                out[key.key_id] = value
        return out
