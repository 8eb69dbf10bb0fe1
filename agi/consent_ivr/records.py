"""Immutable record classes: declared like `typing.NamedTuple`, built without importing typing.

Process AGI starts one Python per call, and every millisecond before the first prompt is dead
air on the line. The engine's events and actions and the flow model are small immutable records;
as frozen dataclasses they cost ``import dataclasses`` (it pulls in ``inspect``, ``ast``, ``dis``:
about 7 ms here) plus about 0.9 ms per class, ~35 classes; ``typing.NamedTuple`` costs ``import
typing`` (2.4 ms) plus 0.2 ms per class. `Record` is the same class syntax, checked by mypy as
``typing.NamedTuple``, that at run time makes a plain `collections.namedtuple` (0.07 ms per class)
and copies the class body's methods, properties and docstring onto it, as ``typing`` does. The
frozen-record benefits stay: immutable, equality by class and value, hashable and picklable
when the fields are, ``_replace`` and ``_asdict``, always true; and a record is built and read
faster than a frozen dataclass on the server's hot path. `tests/test_records.py` holds the
run-time class to this, and to the behaviour of ``typing.NamedTuple`` otherwise.

Use::

    class Play(Record):
        prompt_id: str
        offset: int = 0

Fields are the class annotations in order; a field with a default must follow those without. A
record is still a tuple (it unpacks, indexes and has a length); a record class has no base but
`Record`, and its methods cannot use zero-argument ``super()``.
"""

from __future__ import annotations

import collections

__all__ = ["Record"]

#: mypy treats any ``TYPE_CHECKING`` name as true; importing the real one would import typing.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    _NOT_COPIED = frozenset({"__annotations__", "__module__", "__qualname__", "__slots__"})

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_record_root"):
                return super().__new__(mcls, name, bases, namespace)
            if bases != (Record,):
                raise TypeError(f"{name}: a Record class cannot inherit from another class")
            fields = list(namespace.get("__annotations__", {}))
            defaults = []
            for f in fields:
                if f in namespace:
                    defaults.append(namespace[f])
                elif defaults:
                    raise TypeError(f"{name}: field {f} without a default after one with one")
            cls = collections.namedtuple(
                name, fields, defaults=defaults, module=namespace.get("__module__")
            )
            for key, value in namespace.items():
                if key not in _NOT_COPIED and key not in fields:
                    setattr(cls, key, value)
            cls.__qualname__ = namespace.get("__qualname__", name)
            # Unlike a plain tuple (and like a dataclass): equal only to a record of the same
            # class, and always true (a record without fields is not an empty, false tuple).
            cls.__eq__ = _eq
            cls.__ne__ = _ne
            cls.__hash__ = _hash
            cls.__bool__ = _true
            return cls

    def _eq(self, other):
        return type(other) is type(self) and tuple.__eq__(self, other)

    def _ne(self, other):
        return type(other) is not type(self) or tuple.__ne__(self, other)

    def _hash(self):
        return hash((type(self).__qualname__, tuple.__hash__(self)))

    def _true(self):
        return True

    Record = _RecordMeta("Record", (), {"_record_root": True, "__module__": __name__})
