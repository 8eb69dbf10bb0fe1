"""Positioned findings about a flow file — `file:line:col: [R<n>] error|warning: what; fix` — the
one error type of flow loading, and the map from flow parts to their place in the file."""

from __future__ import annotations

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Literal

    Severity = Literal["error", "warning"]


class Diagnostic(Record):
    """One finding about a flow file, positioned at a YAML node (1-based line and column).

    `message` says what is wrong, `expected` what would be right (how to fix it); both are plain
    language for flow authors. `rule` is the requirement it enforces (``R1`` … ``R19``), empty
    for a schema error. Warnings do not stop a flow from loading.
    """

    path: str
    line: int
    col: int
    message: str
    expected: str
    severity: Severity = "error"
    rule: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        rule = f"{self.rule} " if self.rule else ""
        return (
            f"{self.path}:{self.line}:{self.col}: {rule}{self.severity}: {self.message};"
            f" {self.expected}"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "rule": self.rule or None,
            "severity": self.severity,
            "message": self.message,
            "fix": self.expected,
        }


class FlowError(Exception):
    """A flow file could not be loaded; `diagnostics` lists every problem found (errors first
    by position, warnings interleaved by position). `str()` is one diagnostic per line."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


class SourceMap:
    """Where each part of a flow stands in its file: dotted names (``prompt.who.say.de``,
    ``purpose.ga_linkage.recipients``, ``key.accept``, ``notice``) -> (line, column). A lookup
    falls back to the nearest enclosing part that has a position, then to the top of the file."""

    def __init__(self) -> None:
        self.positions: dict[str, tuple[int, int]] = {}

    def set(self, name: str, line: int, col: int) -> None:
        self.positions.setdefault(name, (line, col))

    def at(self, name: str) -> tuple[int, int]:
        while name:
            found = self.positions.get(name)
            if found is not None:
                return found
            name = name.rpartition(".")[0]
        return (1, 1)
