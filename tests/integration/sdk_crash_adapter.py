"""The adapter the SDK crash test runs in a process of its own (and SIGKILLs): the province's OA system, which
writes every report it is handed into its own table in the SDK's store transaction (``ctx.db``).

    python tests/integration/sdk_crash_adapter.py HOME
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from adapters.sdk import Adapter, AdapterSettings, Context


def main(home: str) -> None:
    adapter = Adapter("prov-220000-oa", AdapterSettings(system="prov-220000-oa", home=Path(home), max_batch=16))

    @adapter.handles("info.report", version=1)
    async def on_report(msg: Any, ctx: Context) -> None:
        ctx.db.execute("CREATE TABLE IF NOT EXISTS reports (message_id TEXT NOT NULL, redelivered INTEGER)")
        ctx.db.execute("INSERT INTO reports VALUES (?, ?)", (ctx.message_id, int(ctx.redelivered)))

    asyncio.run(adapter.run())


if __name__ == "__main__":
    main(sys.argv[1])
