"""Validation of trunk constructor options, shared by every trunk module.

Bad options fail when the trunk is built, before any data is read, with a message
naming the option.
"""

from __future__ import annotations


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is an integer ``>= minimum``.

    Booleans are refused (``True`` is an ``int`` in Python, never a size).
    """
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
