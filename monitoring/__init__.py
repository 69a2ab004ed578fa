"""The ops monitoring page (运维监控页面, issue 15): an aiohttp application served over HTTPS by ``hub ops``.

``app`` (the frame: templates, security headers, error pages, the pages' modules), ``auth`` (sessions, roles,
CSRF, the record of operators' actions), ``roles`` (三员分立 plus the duty operator, as a table), ``server``
(``start_ops``), ``views`` (the pages), ``metrics`` (``/metrics``, ``/health``, ``/ready``, ``/api/overview``).
Operators and sessions live in PostgreSQL (``hub.store.operators``); the page runs no SQL of its own.
"""
