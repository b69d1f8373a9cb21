"""`EngineBatcher`: gathers concurrent retrieval requests into one engine call, on one engine thread.

Lives in the server's event loop: requests wait a few milliseconds for others to join them, then one
call answers the batch, so a simulated engine generates them together and the document cache serves a
duplicate once. Must not know HTTP, and must never run two engine calls at once (a simulated engine
holds one model): every call goes through a single worker thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .contents import Passage

Answer = Callable[[list[str], int], list[list[Passage]]]  # (queries, k) -> passages per query


class QueueFull(Exception):
    """More requests are waiting than the queue allows; the caller should retry later."""


class ShuttingDown(Exception):
    """The server is stopping: no new work is taken, and work not done by the deadline is dropped."""


@dataclass(eq=False)  # identity: two requests with the same queries are still two jobs
class _Job:
    queries: list[str]
    topk: int
    future: asyncio.Future
    arrived: float  # loop time


class EngineBatcher:
    """Run `run()` as a task of the loop that calls `submit()`; `close()` ends it."""

    def __init__(self, answer: Answer, *, window_s: float, max_queries: int, queue_limit: int):
        self.answer = answer
        self.window_s = window_s
        self.max_queries = max_queries
        self.queue_limit = queue_limit
        self.waiting: deque[_Job] = deque()
        self.in_engine: list[_Job] = []
        self.engine_calls = 0
        self.closing = False
        self._arrived = asyncio.Event()
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="zsl-engine")
        self._runner: asyncio.Task | None = None

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.in_engine)

    async def submit(self, queries: list[str], topk: int) -> list[list[Passage]]:
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        if len(self.waiting) >= self.queue_limit:
            raise QueueFull(f"{len(self.waiting)} requests are waiting for the engine (the limit)")
        loop = asyncio.get_running_loop()
        job = _Job(queries, topk, loop.create_future(), loop.time())
        self.waiting.append(job)
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # timed out or abandoned: not worth an engine call any more
            if job in self.waiting:
                self.waiting.remove(job)
            raise

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="zsl-batcher")

    @property
    def running(self) -> bool:
        """Whether the runner task is alive (started and not ended): if not, nothing will be answered."""
        return self._runner is not None and not self._runner.done()

    async def _run(self) -> None:
        """Forever: wait for work, gather a batch, answer it. Survives any one batch's failure."""
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather(loop)
            if not self.waiting:  # every waiting request gave up during the window
                continue
            self.in_engine = self._take(self.waiting[0].topk)
            try:
                await self._run_batch(loop, self.in_engine)
            except Exception as exc:  # noqa: BLE001 - a bug in one batch fails that batch, not the server
                _fail(self.in_engine, exc)
            finally:
                self.in_engine = []

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        """One engine call on the engine thread, its outcomes handed to the waiting requests."""
        self.engine_calls += 1
        outcomes = await loop.run_in_executor(self._engine_thread, self._answer_batch, jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():  # failed at the shutdown deadline, or its client went away
                continue
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the oldest request has waited `window_s`, or until a full batch is queued."""
        first = self.waiting[0]
        deadline = first.arrived + self.window_s
        while sum(len(j.queries) for j in self.waiting if j.topk == first.topk) < self.max_queries:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self, topk: int) -> list[_Job]:
        """The oldest requests with this topk, up to `max_queries` queries (always at least one request):
        one engine call answers one k, since k shapes a simulator's prompt and its cache key."""
        taken: list[_Job] = []
        kept: deque[_Job] = deque()
        count = 0
        for job in self.waiting:
            if job.topk == topk and (not taken or count + len(job.queries) <= self.max_queries):
                taken.append(job)
                count += len(job.queries)
            else:
                kept.append(job)
        self.waiting = kept
        return taken

    def _answer_batch(self, jobs: list[_Job]) -> list[list[list[Passage]] | Exception]:
        """On the engine thread. If the batch fails, each request is retried alone, so one bad query
        fails only its own request."""
        queries = [query for job in jobs for query in job.queries]
        try:
            found = self.answer(queries, jobs[0].topk)
            if len(found) != len(queries):
                raise RuntimeError(f"the engine answered {len(found)} of {len(queries)} queries")
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per request
            if len(jobs) == 1:
                return [exc]
            return [self._answer_alone(job) for job in jobs]
        outcomes: list[list[list[Passage]] | Exception] = []
        start = 0
        for job in jobs:
            outcomes.append(found[start : start + len(job.queries)])
            start += len(job.queries)
        return outcomes

    def _answer_alone(self, job: _Job) -> list[list[Passage]] | Exception:
        try:
            found = self.answer(job.queries, job.topk)
        except Exception as exc:  # noqa: BLE001 - reported to this request only
            return exc
        if len(found) != len(job.queries):
            return RuntimeError(f"the engine answered {len(found)} of {len(job.queries)} queries")
        return found

    def begin_shutdown(self, deadline_s: float) -> None:
        """Take no new work; what is queued or running still gets `deadline_s` seconds to finish."""
        self.closing = True
        asyncio.get_running_loop().call_later(deadline_s, self._fail_unfinished)

    def _fail_unfinished(self) -> None:
        _fail([*self.waiting, *self.in_engine], ShuttingDown("the server stopped before this request was answered"))
        self.waiting.clear()

    async def close(self) -> None:
        """Fail what is left, then wait for the engine call in progress (a thread cannot be interrupted),
        so that the engine can be closed safely afterwards."""
        self.closing = True
        self._fail_unfinished()
        if self._runner is not None:
            self._runner.cancel()
        await asyncio.to_thread(self._engine_thread.shutdown, wait=True)


def _fail(jobs: list[_Job], error: BaseException) -> None:
    """Answer every request of `jobs` not answered yet with `error`."""
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)
