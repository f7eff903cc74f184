"""Durations and sizes, as every call of this SDK takes them.

A duration is a number of seconds (int or float, as Python's own timeouts are) or a string with a
unit, as the CLI takes it: "500ms", "30s", "2m", "1h" (no unit: seconds). A size is a number of
bytes (int) or a string with a unit: "512m", "1g", "1.5g" (k, m, g, t, powers of 1024).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Optional, Union

Duration = Union[int, float, str]
Size = Union[int, str]

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"ms": 1, "": 1000, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _u in enumerate("kmgt", start=1):
    for _s in (_u, _u + "b", _u + "ib"):
        _SIZE_UNITS[_s] = 1024 ** _i


def duration_ms(value: Any, what: str) -> int:
    """Milliseconds of a duration; ValueError / TypeError naming `what` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{what} must be a number of seconds or a string such as '30s', not {type(value).__name__}")
    if isinstance(value, str):
        m = _NUMBER.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _DURATION_UNITS:
            raise ValueError(f"{what} {value!r} is not a duration: use a number of seconds or a string "
                             "with a unit (ms, s, m, h), e.g. '30s'")
        return round(float(m.group(1)) * _DURATION_UNITS[unit])
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}")
    return round(value * 1000)


def size(value: Any, what: str) -> Union[int, str]:
    """A size as the API takes it (a byte count, or the string as written once checked)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} must be a number of bytes or a string such as '1g', not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value}")
        return value
    m = _NUMBER.match(value)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS or (_SIZE_UNITS[unit] == 1 and "." in m.group(1)):
        raise ValueError(f"{what} {value!r} is not a size: use a number of bytes or a string with a unit "
                         "(k, m, g, t), e.g. '512m'")
    return value.strip()


def renamed(new: str, new_value: Any, old: str, old_value: Optional[int]) -> Any:
    """The value of `new` (seconds), or else the deprecated `old` one (milliseconds) in seconds."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"give {new} or {old} (deprecated), not both")
    warnings.warn(f"{old} is deprecated: use {new} (seconds, or a string such as '30s')", DeprecationWarning,
                  stacklevel=3)
    if isinstance(old_value, bool) or not isinstance(old_value, (int, float)):
        raise TypeError(f"{old} must be a number of milliseconds")
    return old_value / 1000
