"""Caller pseudonyms: HMAC-SHA256 of the normalised number under a key that never leaves the host.

The key comes from ``CONSENT_IVR_HMAC_KEY`` or the file named by ``CONSENT_IVR_HMAC_KEY_FILE``;
there is no default key. A record names the key by its id (a hash of the key), so a rotated key
leaves old records verifiable.

A number is normalised to E.164 (``+49891234567``) with the `phonenumbers` library, national
forms read in the default region ``CONSENT_IVR_DEFAULT_REGION`` (default ``DE``): ``089/123
45-67``, ``0049 89 1234567`` and ``+49891234567`` are one caller. What phonenumbers cannot read
keeps the legacy form (`normalise_number`: a leading ``+`` and the digits), which is also what
records written before E.164 hashed; a look-up (`Keyring.lookup`) tries both, in every form a
trunk may have delivered the number in. `phonenumbers` costs ~30 ms to import: it is imported
when a number is first hashed (the evidence write), never before the first prompt.
"""

from __future__ import annotations

import os
import time

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MIN_KEY_BYTES = 16

#: The region national numbers are read in unless ``CONSENT_IVR_DEFAULT_REGION`` names another.
DEFAULT_REGION = "DE"


class ConfigError(Exception):
    """A start-up configuration problem, with a message an administrator can act on."""


class PseudonymKey:
    """The HMAC key for caller pseudonyms and its public id (first 12 hex of its SHA-256).

    hashlib is imported on first use (the id, a pseudonym): process AGI validates the key before
    the first prompt but hashes only when it writes the record.
    """

    __slots__ = ("_key_id", "_secret", "region")

    def __init__(self, secret: bytes, region: str = DEFAULT_REGION) -> None:
        self._secret = bytes(secret)
        self._key_id: str | None = None
        #: where national numbers are read (ISO 3166 alpha-2, upper case)
        self.region = region

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
    def from_bytes(cls, secret: bytes, region: str = DEFAULT_REGION) -> PseudonymKey:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the HMAC key is {len(secret)} bytes; at least {MIN_KEY_BYTES} bytes are required"
            )
        return cls(secret, region)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PseudonymKey:
        env = os.environ if environ is None else environ
        region = region_from_environment(env)
        value = env.get("CONSENT_IVR_HMAC_KEY")
        if value:
            return cls.from_bytes(value.encode("utf-8"), region)
        key_file = env.get("CONSENT_IVR_HMAC_KEY_FILE")
        if key_file:
            return cls.from_bytes(_read_key_file(key_file, "the HMAC key file"), region)
        raise ConfigError(
            "no HMAC key for caller pseudonyms: set CONSENT_IVR_HMAC_KEY or "
            "CONSENT_IVR_HMAC_KEY_FILE (a file with at least 16 random bytes, e.g. "
            "`head -c 32 /dev/urandom | base64 > /etc/consent-ivr/hmac.key`)"
        )

    def pseudonym(self, caller: str) -> str | None:
        """HMAC-SHA256 of the number as E.164 (`canonical_number`); None for an absent or
        anonymous caller."""
        number = canonical_number(caller, self.region)
        return None if number is None else self.hash_number(number)

    def hash_number(self, number: str) -> str:
        """HMAC-SHA256 of an already normalised number."""
        import hmac

        return hmac.new(self.secret, number.encode("utf-8"), "sha256").hexdigest()

    def check_region(self) -> None:
        """ConfigError unless phonenumbers knows the region (imports it: not on the AGI start)."""
        import phonenumbers

        if self.region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                f"CONSENT_IVR_DEFAULT_REGION {self.region}: not a region the phone number rules"
                " know; expected a two-letter region code (ISO 3166), e.g. DE, AT, CH"
            )


def _read_key_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def region_from_environment(environ: Mapping[str, str]) -> str:
    """``CONSENT_IVR_DEFAULT_REGION`` (default DE), upper case; ConfigError unless it is two
    letters (whether phonenumbers knows it is `PseudonymKey.check_region`)."""
    value = (environ.get("CONSENT_IVR_DEFAULT_REGION") or DEFAULT_REGION).strip()
    if len(value) != 2 or not (value.isascii() and value.isalpha()):
        raise ConfigError(
            f"CONSENT_IVR_DEFAULT_REGION {value!r}: expected a two-letter region code (ISO 3166)"
            " for national numbers, e.g. DE"
        )
    return value.upper()


def normalise_number(caller: str) -> str | None:
    """The legacy form: a leading + and the digits; None when nothing identifying is left (e.g.
    `unknown`). Records written before E.164 hashed this form of the number as delivered."""
    text = caller.strip()
    digits = "".join(c for c in text if c.isdigit())
    if not digits:
        return None
    return ("+" if text.startswith("+") else "") + digits


def _parse(caller: str, region: str) -> Any:
    """The number as phonenumbers reads it (national forms in `region`), or None if it cannot or
    the result is not a possible number. Never raises for any text."""
    import phonenumbers  # an ImportError is an installation fault: let it be seen

    try:
        number = phonenumbers.parse(caller.strip(), region)
        return number if phonenumbers.is_possible_number(number) else None
    except Exception:  # NumberParseException, or whatever odd text provokes: the legacy form
        return None


def is_valid_number(caller: str, region: str = DEFAULT_REGION) -> bool:
    """Whether the caller id is a valid phone number by phonenumbers' rules. A placeholder a
    trunk sends for a withheld number ("0", "00000", "Restricted 0") has a pseudonym but is no
    one's: many callers would share it, so it must never find one of them another's decision."""
    number = _parse(caller, region)
    if number is None:
        return False
    import phonenumbers

    return bool(phonenumbers.is_valid_number(number))


def _read(caller: str, region: str) -> tuple[str | None, Any, str | None]:
    """(legacy form, phonenumbers' reading or None, E.164 or None) of a caller id: one parse."""
    legacy = normalise_number(caller)
    number = _parse(caller, region) if legacy is not None else None
    if number is None:
        return legacy, None, None
    import phonenumbers

    return (
        legacy,
        number,
        str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)),
    )


def canonical_number(caller: str, region: str = DEFAULT_REGION) -> str | None:
    """The number as E.164 (``+49891234567``) when phonenumbers can read it, else its legacy
    form (`normalise_number`); None when nothing identifying is left."""
    legacy, _number, e164 = _read(caller, region)
    return e164 or legacy


def number_forms(caller: str, region: str = DEFAULT_REGION) -> list[str]:
    """Every form this caller's records may have been hashed in: E.164 first (what the engine
    writes: `canonical_number`), then the legacy form of the number as typed and of the forms a
    trunk delivers it in (``+49891234567``, ``0049891234567``, ``49891234567``, national
    ``0891234567``)."""
    forms: list[str] = []

    def add(form: str | None) -> None:
        if form and form not in forms:
            forms.append(form)

    legacy, number, e164 = _read(caller, region)
    add(e164 or legacy)
    add(legacy)
    if number is None or e164 is None:
        return forms
    import phonenumbers

    add(normalise_number(e164))
    add(e164.removeprefix("+"))
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    idd = meta and (meta.preferred_international_prefix or meta.international_prefix)
    if idd and idd.isdigit():  # the region's international dialling prefix, e.g. 00
        add(idd + e164.removeprefix("+"))
    if number.country_code == phonenumbers.country_code_for_region(region):
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        add(normalise_number(national))
    return forms


def warm_up(region: str) -> None:
    """Import phonenumbers and load the region's rules (process AGI: while the first prompt
    plays, so the decision does not wait for them)."""
    canonical_number("+1", region)
    canonical_number("0", region)


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
        current.check_region()
        old: list[PseudonymKey] = []
        for name in (env.get("CONSENT_IVR_HMAC_OLD_KEY_FILES") or "").split(":"):
            if not name.strip():
                continue
            what = "the old HMAC key file (CONSENT_IVR_HMAC_OLD_KEY_FILES)"
            key = PseudonymKey.from_bytes(_read_key_file(name, what), current.region)
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

    def lookup(self, caller: str) -> list[tuple[str, str]]:
        """(key id, pseudonym) of every form of the number (`number_forms`) under every key:
        what a data-subject request searches for. The current key's E.164 pseudonym is first."""
        out: list[tuple[str, str]] = []
        forms = number_forms(caller, self.current.region)
        for key in self.keys:
            for form in forms:
                pair = (key.key_id, key.hash_number(form))
                if pair not in out:
                    out.append(pair)
        return out
