"""The shipped systemd unit starts the server with options it has, and stops it in time."""

from __future__ import annotations

import configparser
import shlex

from consent_ivr.cli.main import parser
from consent_ivr.paths import PROJECT_ROOT
from consent_ivr.transports.fastagi.call import STOP_WRITE_WAIT

UNIT = PROJECT_ROOT / "asterisk-config" / "consent-ivr.service"
ENV_EXAMPLE = PROJECT_ROOT / "asterisk-config" / "consent-ivr.env.example"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser


def test_the_units_exec_start_is_a_valid_serve_command_line() -> None:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert argv[0].endswith("/.venv/bin/consent-ivr") and argv[1] == "serve"
    args = parser().parse_args(argv[1:])
    assert args.listen == "127.0.0.1:4573" and args.ga4_flush == 30 and args.store is None


def test_the_unit_waits_longer_than_the_drain_can_take() -> None:
    service = unit()["Service"]
    args = parser().parse_args(shlex.split(service["ExecStart"])[1:])
    assert float(service["TimeoutStopSec"]) > args.grace + STOP_WRITE_WAIT
    assert int(service["LimitNOFILE"]) > args.max_calls + 100
    assert service["KillSignal"] == "SIGTERM"


def test_the_environment_example_sets_the_required_key_and_store() -> None:
    names = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    assert {"CONSENT_IVR_HMAC_KEY_FILE", "CONSENT_IVR_STORE"} <= names
