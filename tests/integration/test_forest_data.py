"""The example adapter adapters/forest_data (the province's shared forest-resources database) on TestHub, in memory
and against the real services: a county bureau's ``request`` gets the typed ``data.response`` back, bound to its
query, signed end to end by the database system (the originator) and by the hub."""

from __future__ import annotations

from datetime import date

from adapters.forest_data.adapter import adapter as forest_data
from adapters.forest_data.mapping import answer
from adapters.sdk import to
from adapters.sdk.messages import DataQuery, DataResponse
from adapters.sdk.messages.data_query_v1 import Condition, Fields, Filter, OrderBy, Paging
from adapters.sdk.testing import TestHub

PROVINCE = "11220000013544357T"


def larch_query(*fields: str) -> DataQuery:
    return DataQuery(
        dataset="forest-resources",
        purpose="编制2027年度敦化市森林抚育作业计划",
        fields=Fields(field=list(fields or ("xiaoban_no", "dominant_species", "area_ha"))),
        filter=Filter(condition=[Condition(field="dominant_species", operator="eq", value="落叶松")]),
        order_by=[OrderBy(field="area_ha", direction="desc")],
        paging=Paging(offset=0, limit=50),
    )


def test_the_mapping_filters_orders_and_pages() -> None:
    r = answer(larch_query(), "0f5c1c1e-6a0e-4b7e-9d61-3c1f0a1b2c3d", as_of=date(2025, 12, 31))
    assert r.outcome == "ok" and r.total_count == 4
    assert r.rows is not None
    assert [row.cell[2] for row in r.rows.row] == ["14.2", "8.6", "5.3", "3.9"]  # area, descending (as numbers)
    bad = answer(
        larch_query("xiaoban_no", "owner_name"), "0f5c1c1e-6a0e-4b7e-9d61-3c1f0a1b2c3e", as_of=date(2025, 12, 31)
    )
    assert bad.outcome == "invalid-query" and "owner_name" in (bad.reason or "")
    bad.validate()  # an answer the hub accepts


async def test_a_county_asks_the_province_database_and_gets_the_typed_answer(mode: str) -> None:
    async with TestHub(forest_data) as hub:
        county = await hub.client("county-222403-oa")
        reply = await county.request(larch_query(), to=[to(PROVINCE, "prov-220000-data")], timeout=20)
    assert isinstance(reply.message, DataResponse)
    assert reply.message.outcome == "ok" and reply.message.total_count == 4
    assert reply.context.ref_to == reply.receipt.message_id  # bound to the query
    assert reply.context.sender.system == "prov-220000-data"
    assert reply.context.hub.system == "hub"
    assert reply.receipt.outcome == "accepted"


QID = "0f5c1c1e-6a0e-4b7e-9d61-3c1f0a1b2c3d"


def compare(field: str, operator: str, value: str, *, order: str | None = None) -> DataQuery:
    return DataQuery(
        dataset="forest-resources",
        purpose="编制2027年度敦化市森林抚育作业计划",
        fields=Fields(field=["xiaoban_no", field]),
        filter=Filter(condition=[Condition(field=field, operator=operator, value=value)]),  # type: ignore[arg-type]
        order_by=[OrderBy(field=field, direction=order)] if order else [],  # type: ignore[arg-type]
        paging=Paging(offset=0, limit=50),
    )


def test_a_comparison_value_that_is_not_a_number_is_an_invalid_query() -> None:
    """``area_ha gt 十公顷`` was read as ``gt 0`` and answered ok with every row; ``NaN`` raised InvalidOperation."""
    for value in ("十公顷", "NaN", "-Infinity", "sNaN", " "):
        r = answer(compare("area_ha", "gt", value), QID, as_of=date(2025, 12, 31))
        assert r.outcome == "invalid-query" and r.rows is None, (value, r.outcome, r.total_count)
        assert r.reason is not None and r.reason.startswith("条件的值不是数值") and f"area_ha={value}" in r.reason
        r.validate()  # an answer the hub accepts
    ok = answer(compare("area_ha", "ge", " 8.6 "), QID, as_of=date(2025, 12, 31))
    assert ok.outcome == "ok" and ok.total_count == 3


def test_an_unknown_figure_matches_no_comparison() -> None:
    """220183-021-006-02 has no stock figure (an empty cell): not ``< 100``, not ``!= 100``, not ``= 0``."""
    for operator, value, total in (("lt", "100", 0), ("ne", "100", 4), ("eq", "0", 0), ("le", "0", 0)):
        r = answer(compare("stock_m3", operator, value), QID, as_of=date(2025, 12, 31))
        cells = [row.cell[0] for row in r.rows.row] if r.rows else []
        assert r.outcome == "ok" and r.total_count == total, (operator, value, cells)
        assert "220183-021-006-02" not in cells
    # ordered by it: the unknown figure last either way, the known ones by their value
    for direction, stocks in (
        ("asc", ["402", "1032", "1278", "4410", ""]),
        ("desc", ["4410", "1278", "1032", "402", ""]),
    ):
        q = compare("stock_m3", "ge", "0", order=direction)
        assert q.filter is not None
        q.filter.condition = [Condition(field="xiaoban_no", operator="prefix", value="22")]
        r = answer(q, QID, as_of=date(2025, 12, 31))
        assert r.rows is not None and [row.cell[1] for row in r.rows.row] == stocks


async def test_a_nan_query_over_the_hub_gets_an_invalid_query_answer(mode: str) -> None:
    """The handler raised InvalidOperation: retried, dead-lettered, and the county only timed out."""
    async with TestHub(forest_data) as hub:
        county = await hub.client("county-222403-oa")
        reply = await county.request(compare("area_ha", "lt", "NaN"), to=[to(PROVINCE, "prov-220000-data")], timeout=20)
    assert isinstance(reply.message, DataResponse)
    assert reply.message.outcome == "invalid-query" and "area_ha=NaN" in (reply.message.reason or "")
