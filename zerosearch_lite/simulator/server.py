"""A Search-R1-compatible retrieval server over any `SearchEngine`: `POST /retrieve`, `GET /health`.

Starlette on uvicorn (asyncio: a slow or stalled client costs a socket, never a worker thread); concurrent
requests are answered by batched engine calls on one engine thread (`batching.py`); every knob is a field
of `ServeConfig`. Must not crash on a bad request, must not call the engine from two threads at once
(simulated engines hold one model), and must not let waiting work grow without bound.

Request `{"queries": [...], "topk": k, "return_scores": bool}` (topk defaults to 3, Search-R1's launch
default). Response, as Search-R1's `retrieval_server.py` answers: with scores
`{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`, without `{"result": [[{"id",
"contents"}, ...], ...]}`. Engines with ids and scores (`PassageRetriever`: BM25, a remote /retrieve)
pass theirs through; for others the id is a hash of the contents and the score is 1/rank, so that
callers sorting by score keep the engine's order. Errors are `{"error": "one line"}`: 422 for a body
that is not valid JSON or breaks the model or the limits, 411/413 for a chunked or oversized body, 408
for a body not received within the read timeout, 404 for an unknown path, 405 (with `Allow`) for a wrong
method, 500 when the engine fails (that request only), and 503 with `Retry-After` when the queue is full
or the server is stopping. `GET /health` answers from the event loop, never waiting for the engine:
`{"status", "engine", "queue_depth", "in_flight", ...}`, with 503 and status "down" if the batcher stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..errors import ZslError, first_problem
from .batching import EngineBatcher, QueueFull, ShuttingDown
from .contents import Passage, PassageRetriever, join_contents
from .engine import SearchEngine
from .types import Mode

if TYPE_CHECKING:
    from starlette.applications import Starlette

DEFAULT_TOPK = 3
MAX_TOPK = 50


class ServeConfig(BaseModel):
    """Every knob of `zsl serve` (and of `RetrievalServer`), with its default and bounds."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind (loopback by default; 0.0.0.0 for all).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    mode: Mode = Field(
        "useful", description="Documents a simulated engine serves: useful or noisy (real engines ignore it)."
    )
    batch_window_ms: float = Field(
        5.0, ge=0, le=1000,
        description="How long a request waits for others to share its engine call (0: only those already queued).",
    )
    max_batch_queries: int = Field(
        64, ge=1, le=4096, description="Most queries answered by one engine call (1 turns batching off)."
    )
    queue_limit: int = Field(
        256, ge=1, le=100_000,
        description="Requests that may wait for the engine; past it a request gets 503 with Retry-After.",
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After seconds sent with a 503.")
    answer_timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="Longest a request waits for its answer before a 503."
    )
    read_timeout_s: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds a client has to send a request's head, and again its body; a stalled or "
        "half-sent request is dropped after it.",
    )
    keep_alive_s: float = Field(5.0, gt=0, le=3600, description="Idle seconds before a kept-alive connection closes.")
    shutdown_timeout_s: float = Field(
        30.0, ge=0, le=3600,
        description="On SIGTERM or Ctrl-C, how long queued and running requests get to finish before they "
        "are answered 503.",
    )
    backlog: int = Field(
        2048, ge=16, le=65535, description="Listen backlog: connections the kernel holds until accepted."
    )
    # Search-R1's rollout sends every search of a generation step in one request, often hundreds.
    max_request_queries: int = Field(512, ge=1, le=4096, description="Most queries in one request.")
    max_query_chars: int = Field(512, ge=1, le=1 << 20, description="Longest query, in characters.")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="Largest request body, in bytes.")


class RetrieveRequest(BaseModel):
    """The body of `POST /retrieve`; bounds come from the server's `ServeConfig` (validation context)."""

    model_config = ConfigDict(extra="ignore")  # Search-R1 clients may send fields we do not use

    queries: list[str] = Field(min_length=1, description="Search queries, answered in order.")
    # Strict: `true`, `"2"` or `"yes"` is a client's bug to report, not a value to guess.
    topk: int = Field(DEFAULT_TOPK, ge=1, le=MAX_TOPK, strict=True, description="Documents per query.")
    return_scores: bool = Field(False, strict=True, description="Wrap each document as {document, score}.")

    @field_validator("queries")
    @classmethod
    def _bounded(cls, queries: list[str], info: ValidationInfo) -> list[str]:
        config = (info.context or {}).get("config") or ServeConfig()
        if len(queries) > config.max_request_queries:
            raise ValueError(f"at most {config.max_request_queries} queries per request, got {len(queries)}")
        for i, query in enumerate(queries):
            if len(query) > config.max_query_chars:
                raise ValueError(
                    f"query {i} has {len(query)} characters; the limit is {config.max_query_chars}"
                )
        return queries


class RequestError(Exception):
    """An answer other than 200: its status, one-line message and headers."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None, close: bool = False,
                 allow: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.retry_after = retry_after
        self.close = close  # the body was not (fully) read: its bytes must not parse as the next request
        self.allow = allow  # the methods of the route, for a 405


def _one_line(exc: ValidationError) -> str:
    problem = first_problem(exc)
    return f"body is {problem}" if problem.startswith("not valid JSON") else problem


def _content_id(contents: str) -> str:
    # Stable across calls, so a client can tell a repeated document from a new one.
    return hashlib.sha1(contents.encode()).hexdigest()[:16]


class RetrievalService:
    """Validation, batching and response shaping; the HTTP layer only moves bytes."""

    def __init__(
        self,
        engine: SearchEngine,
        config: ServeConfig,
        *,
        owns_engine: bool = False,
        say: Callable[[str], None] | None = None,
    ):
        self.engine = engine
        self.config = config
        self.owns_engine = owns_engine
        self.say = say or (lambda message: None)  # progress lines for a person (the CLI's stderr)
        self.batcher: EngineBatcher | None = None  # made in the server's event loop, by `open()`
        self.engine_closed = False
        self.answered = 0
        self.rejected = 0  # 503s for a full queue

    def parse(self, body: bytes) -> RetrieveRequest:
        try:
            return RetrieveRequest.model_validate_json(body, context={"config": self.config})
        except ValidationError as exc:
            raise RequestError(422, _one_line(exc)) from None

    def passages(self, queries: list[str], k: int) -> list[list[Passage]]:
        """One engine call for a batch of queries (runs on the engine thread)."""
        if isinstance(self.engine, PassageRetriever):
            return self.engine.retrieve(queries, k)
        results = self.engine.lookup_requests([(query, self.config.mode, None) for query in queries], k)
        found = []
        for result in results:
            contents = [join_contents(doc.title, doc.text) for doc in result.docs[:k]]
            found.append([Passage(_content_id(c), c, 1.0 / rank) for rank, c in enumerate(contents, 1)])
        return found

    def open(self) -> None:
        self.batcher = EngineBatcher(
            self.passages,
            window_s=self.config.batch_window_ms / 1000,
            max_queries=self.config.max_batch_queries,
            queue_limit=self.config.queue_limit,
        )
        self.batcher.start()

    def begin_shutdown(self) -> None:
        if self.batcher is not None:
            self.say(
                f"stopping: {self.batcher.in_flight} requests in flight get up to "
                f"{self.config.shutdown_timeout_s:g} s to finish"
            )
            self.batcher.begin_shutdown(self.config.shutdown_timeout_s)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.owns_engine:
            await asyncio.to_thread(self.close_engine)
            self.say(f"stopped; the {self.engine.name} engine is closed")

    def close_engine(self) -> None:
        if not self.engine_closed:
            self.engine_closed = True
            self.engine.close()

    async def retrieve(self, body: bytes) -> dict[str, Any]:
        request = self.parse(body)
        assert self.batcher is not None, "the server's lifespan opens the service"
        retry_after = self.config.retry_after_s
        try:
            async with asyncio.timeout(self.config.answer_timeout_s):
                found = await self.batcher.submit(request.queries, request.topk)
        except QueueFull as exc:
            self.rejected += 1
            raise RequestError(503, f"server busy: {exc}; retry later", retry_after=retry_after) from None
        except ShuttingDown as exc:
            raise RequestError(503, str(exc), retry_after=retry_after, close=True) from None
        except TimeoutError:
            raise RequestError(
                503, f"no answer from the {self.engine.name} engine within {self.config.answer_timeout_s:g} s",
                retry_after=retry_after,
            ) from None
        except Exception as exc:  # noqa: BLE001 - one failing request must not take the server down
            raise RequestError(500, f"{self.engine.name} engine failed: {type(exc).__name__}: {exc}") from None
        self.answered += 1
        return {"result": [self._shape(hits, request) for hits in found]}

    @staticmethod
    def _shape(hits: list[Passage], request: RetrieveRequest) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for rank, hit in enumerate(hits[: request.topk], 1):
            document = {"id": hit.id or _content_id(hit.contents), "contents": hit.contents}
            if request.return_scores:
                items.append({"document": document, "score": hit.score if hit.score is not None else 1.0 / rank})
            else:
                items.append(document)
        return items

    def health(self) -> dict[str, Any]:
        """The server's state for `GET /health`; a status other than ok/stopping answers 503."""
        batcher = self.batcher
        if batcher is not None and batcher.closing:
            status = "stopping"
        elif batcher is not None and not batcher.running:
            status = "down"  # the batcher's task ended: no request would be answered
        else:
            status = "ok"
        return {
            "status": status,
            "engine": self.engine.name,
            "queue_depth": len(batcher.waiting) if batcher else 0,
            "in_flight": batcher.in_flight if batcher else 0,
            "queue_limit": self.config.queue_limit,
            "engine_calls": batcher.engine_calls if batcher else 0,
            "answered": self.answered,
            "rejected": self.rejected,
        }


async def _read_body(request: Any, config: ServeConfig) -> bytes:
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        raise RequestError(411, "send a Content-Length; chunked bodies are not supported", close=True)
    length = int(request.headers.get("content-length") or 0)  # the HTTP parser rejects a malformed one
    if length > config.max_body_bytes:
        raise RequestError(413, f"request body over {config.max_body_bytes} bytes", close=True)
    try:
        async with asyncio.timeout(config.read_timeout_s):
            return await request.body()
    except TimeoutError:
        raise RequestError(
            408, f"request body not received within {config.read_timeout_s:g} s", close=True
        ) from None


def build_app(service: RetrievalService) -> Starlette:
    """The ASGI app: routes, JSON errors, and a lifespan that opens and closes the service."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def retrieve(request: Any) -> JSONResponse:
        body = await _read_body(request, service.config)
        return JSONResponse(await service.retrieve(body))

    async def health(request: Any) -> JSONResponse:
        answer = service.health()
        return JSONResponse(answer, 503 if answer["status"] == "down" else 200)

    async def request_error(request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        if exc.close:
            headers["Connection"] = "close"
        if exc.allow:
            headers["Allow"] = exc.allow
        return JSONResponse({"error": exc.message}, exc.status, headers=headers)

    async def no_route(request: Any, exc: Exception) -> JSONResponse:
        path = request.url.path.rstrip("/") or "/"
        return await request_error(request, RequestError(404, f"no route {request.method} {path}"))

    async def wrong_method(request: Any, exc: Exception) -> JSONResponse:
        """A known path asked with another method: 405 and the route's methods in `Allow`."""
        path = request.url.path.rstrip("/") or "/"
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
        message = f"method {request.method} not allowed on {path}; use {allow or 'another method'}"
        return await request_error(request, RequestError(405, message, allow=allow))

    async def internal_error(request: Any, exc: Exception) -> JSONResponse:
        return await request_error(request, RequestError(500, f"internal error: {type(exc).__name__}: {exc}"))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        service.open()
        try:
            yield
        finally:
            await service.close()

    routes = [Route(path, retrieve, methods=["POST"]) for path in ("/retrieve", "/retrieve/")]
    routes += [Route(path, health, methods=["GET"]) for path in ("/health", "/health/")]
    return Starlette(
        routes=routes,
        exception_handlers={RequestError: request_error, 404: no_route, 405: wrong_method, Exception: internal_error},
        lifespan=lifespan,
    )


def _uvicorn_server(app: Starlette, config: ServeConfig, on_shutdown: Callable[[], None]) -> Any:
    """uvicorn's server with two additions: a deadline for each request's head, and a hook that starts
    the service's shutdown clock the moment uvicorn stops accepting."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        # uvicorn's only timer is keep-alive: armed after a response, restarted by every byte, and not
        # armed before the first request, so a client that sends half a request head keeps its socket.
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            self._arm_head_deadline()  # first: super() may start a pipelined request
            super().on_response_complete()

        def _arm_head_deadline(self) -> None:
            self.loop.call_later(config.read_timeout_s, self._head_overdue, self.cycle)

        def _head_overdue(self, cycle: Any) -> None:
            if self.cycle is cycle and not self.transport.is_closing():  # no new request head since
                self.transport.close()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            on_shutdown()
            await super().shutdown(sockets=sockets)

    uv_config = uvicorn.Config(
        app,
        http=Protocol,
        loop="asyncio",
        lifespan="on",
        log_config=None,  # leave the process's logging alone (tests, the TUI)
        log_level="warning",
        access_log=False,
        server_header=False,
        headers=[("server", "zerosearch-lite")],
        backlog=config.backlog,
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]
        # A margin past ours: by then the service has answered every request (503 at its own deadline).
        timeout_graceful_shutdown=config.shutdown_timeout_s + 2,  # type: ignore[arg-type]
    )
    return Server(uv_config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ZslError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class RetrievalServer:
    """The server on a background thread (tests, the TUI) or in the foreground (`serve`).

    `RetrievalServer(engine, port=0, mode="noisy")`: keyword overrides are `ServeConfig` fields; the
    port defaults to 0 here (a free port, see `.url`). The socket is bound at construction. The engine
    is closed on stop only when `owns_engine` (the CLI's server owns it; a test's engine outlives it).
    """

    def __init__(
        self,
        engine: SearchEngine,
        config: ServeConfig | None = None,
        *,
        owns_engine: bool = False,
        say: Callable[[str], None] | None = None,
        **overrides: Any,
    ):
        base = config or ServeConfig(port=0)
        self.config = ServeConfig.model_validate(base.model_dump() | overrides) if overrides else base
        self.service = RetrievalService(engine, self.config, owns_engine=owns_engine, say=say)
        self.socket = _bind(self.config.host, self.config.port)
        self.server = _uvicorn_server(build_app(self.service), self.config, self.service.begin_shutdown)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def run(self) -> None:
        """Serve in this thread until `stop()` or, in the main thread, SIGINT / SIGTERM (graceful)."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> Self:
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, name="zsl-retrieval", daemon=True)
            self.thread.start()
            deadline = time.monotonic() + timeout
            while not self.server.started:
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    raise ZslError(f"the retrieval server on {self.url} did not start")
                time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to `shutdown_timeout_s`), then return."""
        if self.thread is not None:
            self.server.should_exit = True
            self.thread.join()
            self.thread = None
        self.socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    engine: SearchEngine, config: ServeConfig | None = None, *, say: Callable[[str], None] | None = None
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then shut down gracefully and close the engine.

    After a graceful stop uvicorn re-raises the signal it caught, so a SIGTERM still ends the process
    with that signal (what process managers expect); the engine and its cache are closed before that.
    A second Ctrl-C skips the wait and the closing (SQLite's transactions still leave no partial row).
    """
    config = config or ServeConfig()
    server = RetrievalServer(engine, config, owns_engine=True, say=say)
    if say is not None:
        say(
            f"serving {engine.name} on {server.url}/retrieve (Ctrl-C or SIGTERM stops; requests in flight "
            f"get up to {config.shutdown_timeout_s:g} s)"
        )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.socket.close()
