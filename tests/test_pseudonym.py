"""Caller numbers become one pseudonym whatever form they come in: E.164 in a default region."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_ivr.evidence.pseudonym import ConfigError, Keyring, PseudonymKey, normalise_number

KEY = PseudonymKey.from_bytes(b"pseudonym-test-key-0123456789")


def legacy_pseudonym(key: PseudonymKey, caller: str) -> str:
    """What the engine wrote before numbers were read as E.164: the HMAC of `normalise_number`."""
    number = normalise_number(caller)
    assert number is not None
    return hmac.new(key.secret, number.encode(), "sha256").hexdigest()


def test_national_international_and_formatted_forms_share_one_pseudonym() -> None:
    forms = [
        "+49891234567",
        "089/1234567",
        "089/123 45-67",
        "0891234567",
        "0049891234567",
        "+49 (89) 123 45-67",
        "0049 89 1234567",
    ]
    assert {KEY.pseudonym(form) for form in forms} == {legacy_pseudonym(KEY, "+49891234567")}


#: Real German area codes (without the trunk 0) and a mobile prefix.
AREAS = ["89", "30", "40", "221", "911", "6151", "176", "151"]


@st.composite
def german_number(draw: st.DrawFn) -> tuple[str, str, str]:
    """(area code, subscriber number, a separator) of a possible German number."""
    area = draw(st.sampled_from(AREAS))
    subscriber = draw(st.from_regex(r"[1-9][0-9]{5,6}", fullmatch=True))
    separator = draw(st.sampled_from(["", " ", "/", "-", " / "]))
    return area, subscriber, separator


@given(german_number())
def test_every_written_form_of_a_german_number_is_one_e164_pseudonym(
    number: tuple[str, str, str],
) -> None:
    area, subscriber, sep = number
    e164 = f"+49{area}{subscriber}"
    half = len(subscriber) // 2
    forms = [
        f"0{area}{sep}{subscriber}",
        f"0{area}{sep}{subscriber[:half]} {subscriber[half:]}",
        f"(0{area}) {subscriber}",
        f"+49 {area}{sep}{subscriber}",
        f"0049{area}{subscriber}",
        f"+49 (0) {area} {subscriber}",
    ]
    assert {KEY.pseudonym(form) for form in forms} == {legacy_pseudonym(KEY, e164)}


@given(st.text(max_size=300))
def test_any_caller_text_gives_a_pseudonym_or_none_and_never_raises(text: str) -> None:
    value = KEY.pseudonym(text)
    if normalise_number(text) is None:  # nothing identifying: anonymous, unknown, empty
        assert value is None
    else:
        assert value is not None and len(value) == 64


def test_a_number_phonenumbers_cannot_read_keeps_its_legacy_form() -> None:
    for odd in ("1", "*31#089", "1" * 40, "+0", "+999 123"):
        assert KEY.pseudonym(odd) == legacy_pseudonym(KEY, odd), odd


def test_the_default_region_reads_national_numbers_and_is_configurable() -> None:
    env = {"CONSENT_IVR_HMAC_KEY": "k" * 32}
    de = PseudonymKey.from_environment(env)
    at = PseudonymKey.from_environment({**env, "CONSENT_IVR_DEFAULT_REGION": "at"})
    assert de.region == "DE" and at.region == "AT"
    assert de.pseudonym("0316 123456") == de.pseudonym("+49316123456")
    assert at.pseudonym("0316 123456") == at.pseudonym("+43316123456")
    assert at.pseudonym("+49891234567") == de.pseudonym("0891234567")  # international: any


@pytest.mark.parametrize("region", ["germany", "D", "1X", "ÄÖ"])
def test_a_malformed_default_region_is_a_clear_configuration_error(region: str) -> None:
    env = {"CONSENT_IVR_HMAC_KEY": "k" * 32, "CONSENT_IVR_DEFAULT_REGION": region}
    with pytest.raises(ConfigError, match="two-letter region code") as info:
        PseudonymKey.from_environment(env)
    assert "\n" not in str(info.value)


def test_a_region_phonenumbers_does_not_know_is_refused_where_numbers_are_looked_up() -> None:
    env = {"CONSENT_IVR_HMAC_KEY": "k" * 32, "CONSENT_IVR_DEFAULT_REGION": "XX"}
    with pytest.raises(ConfigError, match="XX"):
        Keyring.from_environment(env)


def test_a_look_up_tries_the_e164_form_and_the_forms_older_records_were_written_in() -> None:
    ring = Keyring(KEY)
    tried = {pseudonym for _key_id, pseudonym in ring.lookup("089/123 45-67")}
    for form in ("+49891234567", "0891234567", "0049891234567", "49891234567", "089/1234567"):
        assert legacy_pseudonym(KEY, form) in tried, form
    assert ring.lookup("anonymous") == []


@given(st.one_of(st.text(max_size=40), st.from_regex(r"\+?[0-9 ()/-]{0,20}", fullmatch=True)))
def test_a_look_up_tries_first_the_pseudonym_a_record_is_written_under(text: str) -> None:
    # number_forms parses the number once; the form it puts first must stay the engine's
    tried = [pseudonym for _key_id, pseudonym in Keyring(KEY).lookup(text)]
    written = KEY.pseudonym(text)
    if written is None:
        assert tried == []
    else:
        assert tried[0] == written
        assert legacy_pseudonym(KEY, normalise_number(text) or "") in tried
