"""Pure: a ``data.query`` against the database's rows → a ``data.response``. No I/O.

The demo database holds sub-compartments (小班) of the forest-resources inventory; a real deployment reads the
province's inventory database instead (the shape of the answer stays the same)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation

from adapters.sdk.messages import DataQuery, DataResponse
from adapters.sdk.messages.data_response_v1 import Column, Columns, Row, Rows

#: (name, 中文标签, type) of every column the database offers.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("xiaoban_no", "小班号", "string"),
    ("division", "行政区划", "string"),
    ("dominant_species", "优势树种", "string"),
    ("age_class", "龄组", "string"),
    ("area_ha", "面积（公顷）", "decimal"),
    ("stock_m3", "蓄积量（立方米）", "decimal"),
)
_TYPES = {name: kind for name, _, kind in COLUMNS}

#: The demo inventory (二类调查 2025 年末数), one dict per sub-compartment.
ROWS: tuple[dict[str, str], ...] = (
    {"xiaoban_no": "220183-017-032-04", "division": "220183", "dominant_species": "落叶松", "age_class": "中龄林",
     "area_ha": "14.2", "stock_m3": "1278"},
    {"xiaoban_no": "220112-005-011-07", "division": "220112", "dominant_species": "落叶松", "age_class": "近熟林",
     "area_ha": "8.6", "stock_m3": "1032"},
    {"xiaoban_no": "220183-021-006-02", "division": "220183", "dominant_species": "落叶松", "age_class": "幼龄林",
     "area_ha": "5.3", "stock_m3": ""},
    {"xiaoban_no": "220183-009-014-01", "division": "220183", "dominant_species": "红松", "age_class": "成熟林",
     "area_ha": "21.7", "stock_m3": "4410"},
    {"xiaoban_no": "222403-031-002-05", "division": "222403", "dominant_species": "落叶松", "age_class": "中龄林",
     "area_ha": "3.9", "stock_m3": "402"},
)  # fmt: skip


def _number(text: str) -> Decimal | None:
    """A finite decimal, or None: empty, not a number, NaN or Infinity."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _value(field: str, text: str) -> Decimal | str | None:
    """A cell or a condition's value as compared: a decimal column's as a number (None when unknown or not one)."""
    if _TYPES.get(field) == "decimal":
        return _number(text)
    return text


def _sort_key(field: str, row: dict[str, str], desc: bool) -> tuple[bool, Decimal | str]:
    """Unknown numbers last in either direction; a descending order of numbers by their negation."""
    value = _value(field, row[field])
    if value is None:
        return (True, Decimal(0))
    if isinstance(value, Decimal) and desc:
        return (False, -value)
    return (False, value)


def bad_values(query: DataQuery) -> list[str]:
    """``field value`` of every comparison of a decimal column whose value is not a finite number."""
    conditions = query.filter.condition if query.filter else []
    return [
        f"{c.field}={c.value}"
        for c in conditions
        if _TYPES.get(c.field) == "decimal" and c.operator != "prefix" and _number(c.value) is None
    ]


def _matches(row: dict[str, str], query: DataQuery) -> bool:
    f = query.filter
    if f is None:
        return True
    if f.division_code and row["division"] not in f.division_code:
        return False
    for c in f.condition:
        if c.field not in row:
            return False
        have, want = _value(c.field, row[c.field]), _value(c.field, c.value)
        if c.operator == "prefix":
            ok = str(row[c.field]).startswith(c.value)
        elif have is None or want is None:  # an unknown figure (an empty cell) matches no comparison
            ok = False
        else:
            ok = {
                "eq": have == want,
                "ne": have != want,
                "lt": have < want,  # type: ignore[operator]
                "le": have <= want,  # type: ignore[operator]
                "gt": have > want,  # type: ignore[operator]
                "ge": have >= want,  # type: ignore[operator]
            }[c.operator]
        if not ok:
            return False
    return True


def unknown_fields(query: DataQuery) -> list[str]:
    asked = list(query.fields.field) if query.fields else []
    asked += [c.field for c in (query.filter.condition if query.filter else [])]
    asked += [o.field for o in query.order_by]
    return sorted({f for f in asked if f not in _TYPES})


def answer(query: DataQuery, query_id: str, rows: Iterable[dict[str, str]] = ROWS, *, as_of: date) -> DataResponse:
    """The response to ``query``: its rows (filtered, ordered, one page), or ``invalid-query`` with the reason."""
    bad = unknown_fields(query)
    if query.dataset != "forest-resources" or bad:
        why = f"未知字段 unknown fields: {', '.join(bad)}" if bad else f"本库不提供 {query.dataset} 数据集"
        return DataResponse(query_message_id=query_id, dataset=query.dataset, outcome="invalid-query", reason=why)
    if not_numbers := bad_values(query):
        why = f"条件的值不是数值 not a number: {', '.join(not_numbers)}"[:2000]
        return DataResponse(query_message_id=query_id, dataset=query.dataset, outcome="invalid-query", reason=why)
    try:
        chosen = [r for r in rows if _matches(r, query)]
        for order in reversed(query.order_by):
            chosen.sort(key=lambda r, f=order.field, d=order.direction == "desc": _sort_key(f, r, d))  # type: ignore[misc]
    except InvalidOperation as exc:  # a comparison the checks above let through: the asker gets an answer
        why = f"无法比较条件的值 a value cannot be compared ({type(exc).__name__})"
        return DataResponse(query_message_id=query_id, dataset=query.dataset, outcome="invalid-query", reason=why)
    names: Sequence[str] = list(query.fields.field) if query.fields else [c[0] for c in COLUMNS]
    page = chosen[query.paging.offset : query.paging.offset + query.paging.limit]
    labels = {name: (label, kind) for name, label, kind in COLUMNS}
    return DataResponse(
        query_message_id=query_id,
        dataset="forest-resources",
        outcome="ok",
        as_of=as_of,
        total_count=len(chosen),
        offset=query.paging.offset,
        columns=Columns(column=[Column(name=n, label=labels[n][0], type=labels[n][1]) for n in names]),  # type: ignore[arg-type]
        rows=Rows(row=[Row(cell=[r[n] for n in names]) for r in page]) if page else None,
    )
