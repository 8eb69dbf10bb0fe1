"""pyst2's `asterisk.agi`, imported without paying for two imports it does not need at start-up.

pyst2 imports, at module level, ``pprint`` (used only to dump the environment to stderr, which
`agi_process.ConsentAGI` switches off, and in a few error messages) and ``six`` (only for
``six.PY3``). On Python 3.11 pprint imports dataclasses, which imports inspect, ast and dis, and
six builds its whole compatibility table: together about 10 ms of every process-AGI call's dead
air, for nothing. So while pyst2 is imported, each of them that is not loaded yet is a stand-in
module whose other attributes load the real module on first use (six's stand-in answers ``PY3``
itself: true on every Python 3). The stand-ins stay only in pyst2's namespace (every later
``import pprint`` gets the real module), and pyst2's error paths still get the real
`pprint.pformat`. (`importlib.util.LazyLoader` does not help here: the import statement itself
reads the module's ``__spec__``, which makes a lazy module load at once.)
`tests/test_pyst2_wrapper.py` proves both halves.
"""

from __future__ import annotations

import sys
import types


class _Deferred(types.ModuleType):
    """A module whose missing attributes come from the real module of the same name."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # the import system's probes (__path__, ...): not the module's
            raise AttributeError(name)
        import importlib

        real = sys.modules.get(self.__name__)
        if real is None or real is self:
            sys.modules.pop(self.__name__, None)
            real = importlib.import_module(self.__name__)
        return getattr(real, name)


def _import_pyst2() -> types.ModuleType:
    stand_ins: dict[str, _Deferred] = {}
    for name in ("pprint", "six"):
        if name not in sys.modules:
            stand_ins[name] = sys.modules[name] = _Deferred(name)
    if "six" in stand_ins:
        setattr(stand_ins["six"], "PY3", sys.version_info[0] == 3)  # noqa: B010
    try:
        import asterisk.agi as pyst2_agi
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    module: types.ModuleType = pyst2_agi
    return module


_agi = _import_pyst2()
AGI = _agi.AGI
AGIHangup = _agi.AGIHangup
AGIInvalidCommand = _agi.AGIInvalidCommand
AGISIGPIPEHangup = _agi.AGISIGPIPEHangup
AGIUsageError = _agi.AGIUsageError

__all__ = ["AGI", "AGIHangup", "AGIInvalidCommand", "AGISIGPIPEHangup", "AGIUsageError"]
