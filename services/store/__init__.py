"""The conversation store: every call's event, extraction, decision trace, action attempts and dead letters
in SQL (SQLite by default, PostgreSQL in production), kept beyond Kafka's retention.

    settings.py    where the database is and how long rows are kept
    models.py      the tables (SQLAlchemy 2 declarative); migrations/ (Alembic) creates them
    db.py          engine, sessions and migrations
    writer.py      idempotent upserts of records read from Kafka (the recorder's side)
    queries.py     what the query API, the CLI and the console read
    tokens.py      API bearer tokens (hashed at rest) and the audit table
    prune.py       the retention job

Written by the recorder only; read by the query API (services/api), the CLI and the console.
"""
