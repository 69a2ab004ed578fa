"""Commands that wire the pure packages to the store and the broker (``hub directory …``, ``hub routes …``).

They live here, beside ``hub.cli``, and not inside ``hub.directory`` or ``hub.routing``: those packages stay pure
(no PostgreSQL, no RabbitMQ, no command line), which ``tests/unit/test_purity.py`` checks import by import.
"""
