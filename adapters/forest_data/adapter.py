"""The adapter: ``hub adapter run adapters.forest_data.adapter --config settings.toml``.

One handler: a ``data.query`` from any bureau the routes allow → the ``data.response`` it returns is sent back as
the reply (bound to the query by RefToMessageId and RequestHash, signed with this system's key). Queries that
name unknown fields get an ``invalid-query`` answer, not a refusal: the asker learns what to fix."""

from __future__ import annotations

from datetime import date

from adapters.forest_data.mapping import answer
from adapters.sdk import Adapter, Context
from adapters.sdk.messages import DataQuery, DataResponse

SYSTEM = "prov-220000-data"
#: The inventory's reference date (二类调查数据截至日期).
AS_OF = date(2025, 12, 31)

adapter = Adapter(SYSTEM)


@adapter.handles(DataQuery)
async def on_query(query: DataQuery, ctx: Context) -> DataResponse:
    return answer(query, ctx.message_id, as_of=AS_OF)
