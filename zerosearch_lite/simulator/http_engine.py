"""`HttpSearchEngine`: a client of a Search-R1-style `POST /retrieve` endpoint (ours or Search-R1's).

Turns remote passages into `Doc`s with the same title/text split as the corpus engine. Connection
failures and 503/429 answers are retried with backoff (honouring `Retry-After`) until a total deadline,
so a trainer survives a restarting or busy server; then, as for every other failure (a read timeout,
non-2xx answers, malformed bodies), a one-line `ZslError` naming the URL. Must not hide failures.

Accepts both response shapes (`{"document", "score"}` items, or bare documents) and documents carrying
`contents` or `title`/`text` (Search-R1's BM25 server sends the latter beside `contents`). Batches
larger than `batch_size` are split, so a server's batch limit (512 on ours) never rejects a caller.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ZslError, first_problem
from .contents import Passage, join_contents
from .engine import PassageEngine


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    contents: str | None = None
    title: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> _Document:
        if self.contents is None and self.text is None:
            raise ValueError('a document needs "contents" or "text"')
        return self

    def passage(self, score: float | None) -> Passage:
        contents = (
            self.contents if self.contents is not None else join_contents(self.title or "", self.text or "")
        )
        return Passage(None if self.id is None else str(self.id), contents, score)


class _Scored(BaseModel):
    model_config = ConfigDict(extra="ignore")

    document: _Document
    score: float | None = None


# Scored first: a bare document never has a "document" key, so the order decides nothing else.
_Item = Annotated[_Scored | _Document, Field(union_mode="left_to_right")]


class _Response(BaseModel):
    result: list[list[_Item]]


# Failures after which the server may come back: nothing was answered (refused, reset, closed early).
# A read timeout is not among them: the server has the request, and sending it again doubles its work.
RETRYABLE_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError)
RETRYABLE_STATUSES = (429, 503)


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the delta form; an HTTP date is treated as absent)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _error_detail(response: httpx.Response) -> str:
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error") or payload.get("detail"), str):
        return payload.get("error") or payload["detail"]
    return response.text[:200] or response.reason_phrase


class HttpSearchEngine(PassageEngine):
    name = "http"
    source = "http"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        batch_size: int = 64,
        retry_deadline: float = 60.0,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
    ):
        """`timeout` bounds one attempt; `retry_deadline` bounds all retries of one request (0: no retry);
        waits between tries start at `backoff` seconds and double up to `max_backoff`."""
        base = url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ZslError(f"search server URL must start with http:// or https://, got {url!r}")
        # A bare host:port means its /retrieve, so `--url http://127.0.0.1:8000` works as users type it.
        self.url = base if base.endswith("/retrieve") else f"{base}/retrieve"
        self.timeout = timeout
        self.batch_size = max(1, batch_size)
        self.retry_deadline = max(0.0, retry_deadline)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.client = httpx.Client(timeout=timeout)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Passages with the server's ids and scores (None where it sent none)."""
        queries = list(queries)
        if k < 1:
            return [[] for _ in queries]
        found: list[list[Passage]] = []
        for start in range(0, len(queries), self.batch_size):
            found.extend(self._post(queries[start : start + self.batch_size], k))
        return found

    def _send(self, body: dict[str, Any]) -> httpx.Response:
        """POST until a final answer, retrying what a restarting or busy server causes."""
        started = time.monotonic()
        give_up_at = started + self.retry_deadline
        delay = self.backoff
        tries = 0
        while True:
            tries += 1
            server_wait: float | None = None
            try:
                response = self.client.post(self.url, json=body)
            except RETRYABLE_ERRORS as exc:
                failure = f"unreachable ({type(exc).__name__}: {exc})"
            except httpx.TimeoutException:
                raise ZslError(f"search server {self.url} timed out after {self.timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise ZslError(f"search server {self.url} unreachable ({type(exc).__name__}: {exc})") from None
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                failure = f"answered HTTP {response.status_code}: {_error_detail(response)}"
                server_wait = _retry_after(response)
            # Jittered, so that many rollout workers refused together do not come back together.
            wait = random.uniform(delay / 2, delay)
            if server_wait is not None:
                wait = max(wait, server_wait)
            if time.monotonic() + wait > give_up_at:
                spent = time.monotonic() - started
                tried = f" (gave up after {tries} tries in {spent:.1f} s)" if tries > 1 else ""
                raise ZslError(f"search server {self.url} {failure}{tried}")
            time.sleep(wait)
            delay = min(self.max_backoff, delay * 2)

    def _post(self, queries: list[str], k: int) -> list[list[Passage]]:
        response = self._send({"queries": queries, "topk": k, "return_scores": True})
        if not response.is_success:
            raise ZslError(
                f"search server {self.url} answered HTTP {response.status_code}: {_error_detail(response)}"
            )
        try:
            payload = _Response.model_validate_json(response.content)
        except ValidationError as exc:
            raise ZslError(f"search server {self.url} sent a malformed response ({first_problem(exc)})") from None
        if len(payload.result) != len(queries):
            raise ZslError(
                f"search server {self.url} answered {len(payload.result)} of {len(queries)} queries"
            )
        return [
            [
                item.document.passage(item.score) if isinstance(item, _Scored) else item.passage(None)
                for item in items[:k]
            ]
            for items in payload.result
        ]

    def close(self) -> None:
        self.client.close()
