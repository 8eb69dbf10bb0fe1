"""`Record` at run time behaves as `typing.NamedTuple` does for the same class body."""

from __future__ import annotations

import pickle
import typing

import pytest

from consent_ivr.engine import PlayEnded, WaitTimedOut
from consent_ivr.records import Record


class Sample(Record):
    """A sample record."""

    name: str
    count: int = 0
    tag: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}#{self.count}"

    def bumped(self) -> Sample:
        return self._replace(count=self.count + 1)


class Reference(typing.NamedTuple):
    """A sample record."""

    name: str
    count: int = 0
    tag: str | None = None


def test_fields_defaults_and_construction_match_typing_namedtuple() -> None:
    assert Sample._fields == Reference._fields == ("name", "count", "tag")
    assert Sample._field_defaults == Reference._field_defaults == {"count": 0, "tag": None}
    s = Sample("a", tag="x")
    assert tuple(s) == tuple(Reference("a", tag="x")) == ("a", 0, "x")
    assert repr(s) == "Sample(name='a', count=0, tag='x')"
    assert s._asdict() == {"name": "a", "count": 0, "tag": "x"}
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_the_class_body_methods_properties_and_docstring_are_kept() -> None:
    s = Sample("a", 2)
    assert s.label == "a#2"
    assert s.bumped() == Sample("a", 3)
    assert Sample.__doc__ == "A sample record."
    assert Sample.__qualname__ == "Sample"
    assert Sample.__module__ == __name__


def test_records_are_immutable_hashable_and_picklable() -> None:
    s = Sample("a", 1)
    with pytest.raises(AttributeError):
        s.count = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.other = 1  # type: ignore[attr-defined]
    assert hash(s) == hash(Sample("a", 1))
    assert pickle.loads(pickle.dumps(s)) == s
    assert type(pickle.loads(pickle.dumps(s))) is Sample


def test_a_field_without_default_after_one_with_default_is_refused() -> None:
    with pytest.raises(TypeError, match="after one with one"):

        class Bad(Record):
            first: int = 0
            second: int


def test_a_record_has_no_other_base_class() -> None:
    with pytest.raises(TypeError, match="cannot inherit"):

        class Mixed(Record, Exception):  # type: ignore[misc]
            extra: int = 0


def test_records_equal_only_records_of_their_class_and_are_always_true() -> None:
    from consent_ivr.engine import Answer, Done, Failed, RecordFailed

    assert Done(5) != WaitTimedOut(5) and Done(5) != (5,)
    assert Failed(1, "x") != RecordFailed(1, "x")
    assert Done(5) == Done(5) and hash(Done(5)) == hash(Done(5))
    assert len({Done(5), WaitTimedOut(5)}) == 2
    assert PlayEnded(at_ms=1, endpos=2) != WaitTimedOut(1)
    assert bool(Answer()) is True  # a record without fields is not an empty, false tuple
