"""Opening the store: one engine per process, schema brought up to date by Alembic."""

import fcntl
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"

# PostgreSQL advisory locks are named by a 64-bit key: vpool's placement, and its schema upgrades.
PLACEMENT_KEY = zlib.crc32(b"vpool placement")
MIGRATION_KEY = zlib.crc32(b"vpool migration")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the API read while the task runner writes; NORMAL sync is safe under WAL.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=20, max_overflow=20)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call at every start, and from two
    processes at once (a standby starting beside the control plane on a new database): one
    migrates while the other waits, then finds the schema at the newest revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _one_migration_at_a_time(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def _one_migration_at_a_time(engine: Engine) -> Iterator[None]:
    """SQLite runs DDL outside the transaction, so a lock file beside the database stands in
    for PostgreSQL's advisory lock."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Store:
    """The engine and a session factory; services open one short session per unit of work."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False, class_=Session)
        self._placing = threading.Lock()

    @contextmanager
    def placement_lock(self, s: Session) -> Iterator[None]:
        """One placement at a time on this database, whichever process asks, so two never book
        the same free space: from here to the session's commit (or rollback) no other placement
        reads the pool. One control plane holds a database today (services/lease.py); this is
        what lets API replicas place beside it later. PostgreSQL takes its advisory lock; on
        SQLite a write that changes nothing takes the database's write lock, which holds other
        processes off the file (they wait up to busy_timeout). The thread lock queues this
        process's own threads in Python instead of in the database."""
        with self._placing:
            if self.engine.dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLACEMENT_KEY})
            else:
                s.execute(text("UPDATE settings SET value = value WHERE 0 = 1"))
            yield

    def close(self) -> None:
        self.engine.dispose()
