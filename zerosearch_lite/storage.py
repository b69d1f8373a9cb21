"""Opening the project's SQLite files and applying their schema migrations.

Each store (sessions, document cache, run metrics) lists its migrations as an ordered list of small
functions; each runs once and is recorded in a `_migrations(name, applied_at)` table, as in `llm`.
"""

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlite_utils

from .errors import ZslError

Migration = Callable[[sqlite_utils.Database], None]


def open_db(path: str | Path, migrations: Sequence[Migration]) -> sqlite_utils.Database:
    """Open (or create) a SQLite file in WAL mode and bring its schema up to date."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False, timeout=30))
        db.enable_wal()
        apply_migrations(db, migrations)
    except sqlite3.DatabaseError as exc:
        raise ZslError(f"cannot open database {path}: {exc}") from None
    return db


def open_db_readonly(path: str | Path) -> sqlite_utils.Database:
    """Open an existing SQLite file for reading only: no WAL switch, no migrations, no write lock.

    Readers that poll a file another process is writing (a run's metrics while it trains) use this, so
    they never contend with the writer for the locks that creating the schema takes."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                               timeout=30)
    except sqlite3.DatabaseError as exc:
        raise ZslError(f"cannot open database {path}: {exc}") from None
    return sqlite_utils.Database(conn)


def apply_migrations(db: sqlite_utils.Database, migrations: Sequence[Migration]) -> list[str]:
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for migration in migrations:
        if migration.__name__ in done:
            continue
        with db.conn:
            migration(db)
            db["_migrations"].insert(
                {"name": migration.__name__, "applied_at": dt.datetime.now(dt.UTC).isoformat()}
            )
        applied.append(migration.__name__)
    return applied


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
