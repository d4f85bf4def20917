"""Alembic environment: vpool hands in its own connection (see vpool.store.db.migrate)."""

from alembic import context

from vpool.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations through vpool.store.db.migrate(), which passes a connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
