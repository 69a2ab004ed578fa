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
