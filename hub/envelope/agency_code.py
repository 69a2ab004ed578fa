"""GB 32100-2015 unified social credit code (统一社会信用代码): 18 characters, the last a check character.

Structure: 1 registration authority, 1 organ type, 6 administrative division (GB/T 2260), 9 organisation code,
1 check character. Government organs start with ``11``. The XSD checks the alphabet and length; this module
checks the check character, which a pattern cannot express.
"""

from __future__ import annotations

from functools import lru_cache

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def check_character(first17: str) -> str:
    """The check character for the first 17 characters of a code."""
    if len(first17) != 17:
        raise ValueError("a unified social credit code has 17 characters before its check character")
    try:
        total = sum(_VALUE[c] * w for c, w in zip(first17, _WEIGHTS, strict=True))
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not allowed in a unified social credit code") from None
    return ALPHABET[(31 - total % 31) % 31]


@lru_cache(maxsize=65536)
def is_valid(code: str) -> bool:
    """True when ``code`` is 18 characters of the GB 32100 alphabet with a correct check character.

    Cached: a province has a few thousand agency codes and every message repeats them."""
    if len(code) != 18 or any(c not in _VALUE for c in code):
        return False
    return check_character(code[:17]) == code[17]


def complete(first17: str) -> str:
    """``first17`` followed by its check character (used to make demo and test codes)."""
    return first17 + check_character(first17)
