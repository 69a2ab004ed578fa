"""省林草局森林资源共享数据库适配器 — the province's shared forest-resources database, answering ``data.query`` over
the hub with ``data.response``. The smallest complete adapter written on ``adapters.sdk``: ``mapping.py`` is the
pure part (a query → the rows it selects → a response), ``adapter.py`` the wiring."""
