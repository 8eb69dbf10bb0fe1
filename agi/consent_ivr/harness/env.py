"""The environment block of a simulated call: its keys in Asterisk's order and a lab call's values.

The channel (``channel.py``) starts from :data:`DEFAULT_ENV` and the overrides a test or command
gives; the session (``core.py``) writes the block in the order of :data:`ENV_KEYS`.
"""

from __future__ import annotations

#: The keys of the environment block, in the order ``setup_env`` writes them (§1.3).
ENV_KEYS: tuple[str, ...] = (
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
)

#: The env block of a lab call, before the overrides (``agi_request`` is computed).
DEFAULT_ENV: dict[str, str] = {
    "agi_channel": "PJSIP/100-00000001",
    "agi_language": "en",
    "agi_type": "PJSIP",
    "agi_uniqueid": "1700000000.42",
    "agi_version": "22.10.1",
    "agi_callerid": "5551234",
    "agi_calleridname": "Lab Caller",
    "agi_callingpres": "0",
    "agi_callingani2": "0",
    "agi_callington": "0",
    "agi_callingtns": "0",
    "agi_dnid": "1000",
    "agi_rdnis": "unknown",
    "agi_context": "ivr",
    "agi_extension": "s",
    "agi_priority": "3",
    "agi_enhanced": "0.0",
    "agi_accountcode": "",
    "agi_threadid": "140066948486848",
}
