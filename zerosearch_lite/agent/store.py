"""The session store: every question asked, its trajectories (with documents) and the voted answer.

One SQLite file (sqlite-utils, WAL) with `sessions` and `trajectories` tables, full-text search over
questions and answers, schema migrations in order. Callers get dataclasses back, never raw rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..storage import open_db, utc_now
from .schema import TrajectoryModel
from .types import Trajectory
from .voting import Vote


def m001_sessions(db) -> None:
    db["sessions"].create(
        {
            "id": int,
            "question": str,
            "answer": str,
            "votes": str,
            "samples": int,
            "policy": str,
            "engine": str,
            "seconds": float,
            "created_at": str,
        },
        pk="id",
    )
    db["trajectories"].create(
        {
            "id": int,
            "session_id": int,
            "sample": int,
            "answer": str,
            "finished": int,
            "stop_reason": str,
            "searches": int,
            "prompt_tokens": int,
            "completion_tokens": int,
            "seconds": float,
            "data": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
    )
    db["trajectories"].create_index(["session_id"])
    db["sessions"].enable_fts(["question", "answer"], create_triggers=True)


MIGRATIONS = [m001_sessions]


@dataclass
class SessionRecord:
    id: int
    question: str
    answer: str | None
    votes: dict[str, int]
    samples: int
    policy: str
    engine: str
    seconds: float
    created_at: str
    trajectories: list[Trajectory] | None = None


class SessionStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = open_db(self.path, MIGRATIONS)

    def save(
        self,
        trajectories: Sequence[Trajectory],
        vote: Vote,
        *,
        policy: str,
        engine: str,
        seconds: float,
    ) -> int:
        """Store one asked question with all its samples in a single transaction; returns the session id."""
        question = trajectories[0].question
        with self.db.conn:
            session_id = self.db["sessions"].insert(
                {
                    "question": question,
                    "answer": vote.answer,
                    "votes": json.dumps(vote.counts),
                    "samples": len(trajectories),
                    "policy": policy,
                    "engine": engine,
                    "seconds": round(seconds, 3),
                    "created_at": utc_now(),
                }
            ).last_pk
            self.db["trajectories"].insert_all(
                {
                    "session_id": session_id,
                    "sample": i,
                    "answer": t.answer,
                    "finished": int(t.finished),
                    "stop_reason": t.stop_reason,
                    "searches": len(t.searches),
                    "prompt_tokens": t.usage.prompt_tokens,
                    "completion_tokens": t.usage.completion_tokens,
                    "seconds": round(t.seconds, 3),
                    "data": TrajectoryModel.from_trajectory(t, with_transcript=True).model_dump_json(),
                }
                for i, t in enumerate(trajectories)
            )
        return int(session_id)

    def _record(self, row: dict) -> SessionRecord:
        return SessionRecord(
            id=row["id"],
            question=row["question"],
            answer=row["answer"],
            votes=json.loads(row["votes"] or "{}"),
            samples=row["samples"],
            policy=row["policy"],
            engine=row["engine"],
            seconds=row["seconds"],
            created_at=row["created_at"],
        )

    def list(self, limit: int = 50, query: str | None = None) -> list[SessionRecord]:
        """The latest sessions, or those whose question or answer holds every word of `query`."""
        match = fts_words(query or "")
        if match:
            rows = self.db["sessions"].search(match, limit=limit, order_by="id desc")
        else:
            rows = self.db["sessions"].rows_where(order_by="id desc", limit=limit)
        return [self._record(r) for r in rows]

    def get(self, session_id: int) -> SessionRecord | None:
        rows = list(self.db["sessions"].rows_where("id = ?", [session_id]))
        if not rows:
            return None
        record = self._record(rows[0])
        record.trajectories = [
            TrajectoryModel.model_validate_json(r["data"]).to_trajectory()
            for r in self.db["trajectories"].rows_where("session_id = ?", [session_id], order_by="sample")
        ]
        return record

    def delete(self, session_id: int) -> bool:
        with self.db.conn:
            self.db["trajectories"].delete_where("session_id = ?", [session_id])
            existed = bool(list(self.db["sessions"].rows_where("id = ?", [session_id])))
            if existed:
                self.db["sessions"].delete(session_id)
        return existed

    def count(self) -> int:
        return self.db["sessions"].count


def fts_words(text: str) -> str:
    """An FTS5 query matching every whitespace-separated word of `text`, each quoted as an FTS5 string (inner
    quotes doubled), so any text is words to find, never query syntax ('"', AND, NOT, *, parentheses)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
