"""The settings file read into process AGI's environment (`consent_ivr.envfile`): systemd's
``NAME=value`` lines as data, never as shell code."""

from __future__ import annotations

from pathlib import Path

from consent_ivr.envfile import ENV_FILE_VARIABLE, apply, parse


def test_name_value_lines_comments_quotes_and_spaces_read_as_systemd_reads_them() -> None:
    text = (
        "# a comment\n"
        "; another\n"
        "\n"
        "CONSENT_IVR_STORE=/var/lib/consent-ivr/evidence.sqlite3\n"
        "  CONSENT_IVR_LOG_LEVEL = debug  \n"
        'CONSENT_IVR_GA4_API_SECRET="se cret \\"x\\" \\\\ $HOME"\n'
        "CONSENT_IVR_NOTE='$(touch /tmp/x) `id`'\n"
        "EMPTY=\n"
        "CONSENT_IVR_LOG_LEVEL=info\n"  # a later line wins
    )
    settings, ignored = parse(text)
    assert settings == {
        "CONSENT_IVR_STORE": "/var/lib/consent-ivr/evidence.sqlite3",
        "CONSENT_IVR_LOG_LEVEL": "info",
        "CONSENT_IVR_GA4_API_SECRET": 'se cret "x" \\ $HOME',
        "CONSENT_IVR_NOTE": "$(touch /tmp/x) `id`",
        "EMPTY": "",
    }
    assert ignored == []


def test_shell_code_is_kept_as_text_or_ignored_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = (
        f"A=$(touch {marker})\n"  # a value: kept as the text it is
        f"`touch {marker}`\n"
        f"$(touch {marker})=1\n"
        f"touch {marker}; B=1\n"
        f'C="x" ; touch {marker}\n'
        "D='unclosed\n"
        "export E=1\n"
        "1F=1\n"
        "no equals sign\n"
    )
    settings, ignored = parse(text)
    assert settings == {"A": f"$(touch {marker})"}
    assert ignored == [2, 3, 4, 5, 6, 7, 8, 9]
    assert not marker.exists()


def test_the_file_named_by_the_variable_wins_over_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "consent-ivr.env"
    env_file.write_text("CONSENT_IVR_STORE=/from/the/file\nbad line\n")
    environ = {ENV_FILE_VARIABLE: str(env_file), "CONSENT_IVR_STORE": "/installed", "X": "1"}
    error, warnings = apply(environ)
    assert error is None
    assert warnings == [f"{env_file}:2: line ignored: expected NAME=value"]
    assert environ["CONSENT_IVR_STORE"] == "/from/the/file" and environ["X"] == "1"


def test_no_variable_or_no_file_is_no_error_and_changes_nothing(tmp_path: Path) -> None:
    environ = {"CONSENT_IVR_STORE": "/installed"}
    assert apply(environ) == (None, [])
    environ[ENV_FILE_VARIABLE] = str(tmp_path / "absent.env")
    assert apply(environ) == (None, [])
    assert environ["CONSENT_IVR_STORE"] == "/installed"


def test_a_file_that_exists_but_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "consent-ivr.env"  # a folder: open() fails as it fails without rights
    folder.mkdir()
    error, _ = apply({ENV_FILE_VARIABLE: str(folder)})
    assert error == f"cannot read the settings file {folder}: Is a directory"


def test_a_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    env_file = tmp_path / "consent-ivr.env"
    env_file.write_bytes(b"A=\xff\n")
    environ = {ENV_FILE_VARIABLE: str(env_file)}
    assert apply(environ) == (f"settings file {env_file} is not UTF-8 text", [])
    assert "A" not in environ
