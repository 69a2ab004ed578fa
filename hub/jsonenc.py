"""JSON encoders built once and called many times.

``json.JSONEncoder.encode`` builds a new C encoder object (``c_make_encoder``) on every call: about 1.1 µs of the
2.7 µs it takes for a typical evidence detail here. The hub encodes five small objects a message (evidence
details, the evidence hashes' field lists, the decision line), so ``encoder`` builds the C encoder once and calls
it. The text is exactly ``json.JSONEncoder(**options).encode(obj)``'s (tests/unit/test_jsonenc.py compares them).
The one difference: no check for circular references (the objects here are fresh dicts and lists of strings and
numbers; a cycle would end in RecursionError instead of ValueError). Where CPython's C accelerator is missing,
``encoder`` returns the JSONEncoder's own ``encode``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

__all__ = ["encoder"]


def encoder(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    separators: tuple[str, str] | None = None,
    allow_nan: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> Callable[[Any], str]:
    """A function that returns ``json.JSONEncoder(...same options...).encode(obj)``."""
    py = json.JSONEncoder(
        sort_keys=sort_keys,
        ensure_ascii=ensure_ascii,
        separators=separators,
        allow_nan=allow_nan,
        default=default,
        check_circular=False,
    )
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:
        return py.encode
    # What JSONEncoder.iterencode hands the C encoder (the C string escapers where the accelerator exists).
    strings = _json_encoder.encode_basestring_ascii if ensure_ascii else _json_encoder.encode_basestring
    c_encode = make(
        None, py.default, strings, None, py.key_separator, py.item_separator, sort_keys, py.skipkeys, allow_nan
    )
    join = "".join
    py_encode = py.encode

    def encode(obj: Any) -> str:
        if obj.__class__ is str:
            return py_encode(obj)
        return join(c_encode(obj, 0))

    return encode
