"""SQLite document cache for simulated searches (sqlite-utils, WAL).

Keyed by (model id, prompt version, mode, normalized query, k, context key): group rollouts that search
the same query cost one simulator call. Exact hits only; hits and misses are counted per row and per
process. Results without documents are never stored, so broken output cannot poison the cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ..storage import open_db, utc_now
from .types import Doc, SearchContext


def normalize_query(query: str) -> str:
    return re.sub(r"\s+", " ", query.strip().lower()).rstrip(" ?.!")


def context_key(context: SearchContext | None) -> str:
    if context is None or not context.question:
        return ""
    raw = json.dumps([context.question, list(context.golden_answers)])
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CacheKey:
    model_id: str
    prompt_version: str
    mode: str
    query: str  # normalized
    k: int
    context: str = ""

    def as_row(self) -> dict:
        return {
            "model_id": self.model_id,
            "prompt_version": self.prompt_version,
            "mode": self.mode,
            "query": self.query,
            "k": self.k,
            "context": self.context,
        }


PK = ("model_id", "prompt_version", "mode", "query", "k", "context")


def m001_documents(db) -> None:
    db["documents"].create(
        {
            "model_id": str,
            "prompt_version": str,
            "mode": str,
            "query": str,
            "k": int,
            "context": str,
            "docs": str,
            "hits": int,
            "created_at": str,
            "last_hit_at": str,
        },
        pk=PK,
    )


MIGRATIONS = [m001_documents]


class DocumentCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = open_db(self.path, MIGRATIONS)
        self.table = self.db["documents"]
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> list[Doc] | None:
        pk = tuple(key.as_row()[c] for c in PK)
        with self._lock:
            rows = list(self.table.rows_where(" and ".join(f"[{c}] = ?" for c in PK), pk))
            if not rows:
                self.misses += 1
                return None
            self.hits += 1
            self.table.update(pk, {"hits": rows[0]["hits"] + 1, "last_hit_at": utc_now()})
        try:
            return [Doc(**d) for d in json.loads(rows[0]["docs"])]
        except (json.JSONDecodeError, TypeError):
            return None

    def put(self, key: CacheKey, docs: list[Doc]) -> None:
        if not docs:
            return
        row = key.as_row() | {
            "docs": json.dumps([d.to_dict() for d in docs]),
            "hits": 0,
            "created_at": utc_now(),
            "last_hit_at": "",
        }
        with self._lock:
            self.table.upsert(row, pk=PK)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict:
        return {"rows": self.table.count, "hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate}

    def clear(self) -> None:
        with self._lock:
            self.table.delete_where()

    def close(self) -> None:
        """Close the database; the last connection's close folds the WAL into the main file. Waits for a
        `get` or `put` in progress (the lock), so no write is cut short; closing twice does nothing."""
        with self._lock:
            self.db.conn.close()
