"""The one error type of flow loading: positioned diagnostics, `file:line:col: what; expected`."""

from __future__ import annotations

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Literal

    Severity = Literal["error", "warning"]


class Diagnostic(Record):
    """One finding about a flow file, positioned at a YAML node (1-based line and column).

    `message` says what is wrong, `expected` what would be right; both are plain language for
    flow authors. Warnings do not stop a flow from loading.
    """

    path: str
    line: int
    col: int
    message: str
    expected: str
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}:{self.col}: {prefix}{self.message}; {self.expected}"


class FlowError(Exception):
    """A flow file could not be loaded; `diagnostics` lists every problem found (errors first
    by position, warnings interleaved by position). `str()` is one diagnostic per line."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]
