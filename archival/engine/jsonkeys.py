"""Primary keys as JSON (recovery state, ledger) and back as SQL parameters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import overload


@overload
def to_json(key: None) -> None: ...
@overload
def to_json(key: Sequence) -> list: ...
def to_json(key: Sequence | None) -> list | None:
    if key is None:
        return None
    out = []
    for value in key:
        if isinstance(value, (dt.date, dt.datetime, dt.time)):
            out.append(value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat())
        elif isinstance(value, Decimal):
            out.append(str(value))
        elif isinstance(value, bytes):
            out.append(value.hex())
        else:
            out.append(value)
    return out
