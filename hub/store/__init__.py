"""PostgreSQL: the only package that imports asyncpg."""
