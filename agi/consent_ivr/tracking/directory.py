"""The operator's customer directory (CSV): the contact person and legal form of an existing
business customer, looked up by the caller's number for the tracking entry (BayLDA's list).

Only the columns `DIRECTORY_COLUMNS` are ever read; a malformed file is a `DirectoryError` whose
message names file and line, never a number (it ends up in logs).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from consent_ivr.evidence.pseudonym import normalise_number

DIRECTORY_COLUMNS = ("phone", "contact_person", "legal_form")


class DirectoryError(Exception):
    """The customer directory is missing or malformed; the message names file and line."""


@dataclass(frozen=True)
class Customer:
    contact_person: str
    legal_form: str


_DIRECTORY_CACHE: dict[str, tuple[tuple[int, int], dict[str, Customer]]] = {}


def load_directory(path: str | os.PathLike[str]) -> dict[str, Customer]:
    """The CSV directory (header ``phone,contact_person,legal_form``; other columns are never
    read) keyed by the normalised number. Cached until the file changes. Raises DirectoryError."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise DirectoryError(
            f"customer directory {name}: cannot read it ({exc.strerror or exc})"
        ) from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _DIRECTORY_CACHE.get(name)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with open(name, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DirectoryError(f"customer directory {name}: cannot read it ({exc})") from None
    if not rows:
        raise DirectoryError(f"customer directory {name}: empty; expected the header line")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in DIRECTORY_COLUMNS if c not in header]
    if missing:
        raise DirectoryError(
            f"customer directory {name}:1: missing column(s) {', '.join(missing)}; "
            f"expected the header {','.join(DIRECTORY_COLUMNS)}"
        )
    index = [header.index(c) for c in DIRECTORY_COLUMNS]
    out: dict[str, Customer] = {}
    first_line: dict[str, int] = {}
    # Messages name file and line, never the number: they end up in logs.
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DirectoryError(
                f"customer directory {name}:{line}: {len(row)} fields, expected {len(header)}"
            )
        phone, person, form = (row[i].strip() for i in index)
        number = normalise_number(phone)
        if number is None:
            raise DirectoryError(
                f"customer directory {name}:{line}: the phone column holds no number; "
                "expected digits with an optional leading +"
            )
        if number in out:
            raise DirectoryError(
                f"customer directory {name}:{line}: the phone number is listed twice "
                f"(first on line {first_line[number]})"
            )
        out[number] = Customer(person, form)
        first_line[number] = line
    _DIRECTORY_CACHE[name] = (stamp, out)
    return out
