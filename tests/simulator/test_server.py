"""The /retrieve server on 127.0.0.1 (port 0) over a real BM25 engine and fakes, hit with real clients:
wire format and errors, then load: many clients and a stalled one, batching, backpressure, shutdown."""

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence

import httpx
import pytest
from conftest import DATA

from zerosearch_lite.simulator.corpus import CorpusSearchEngine
from zerosearch_lite.simulator.engine import SearchEngine
from zerosearch_lite.simulator.server import RetrievalServer
from zerosearch_lite.simulator.types import Doc, SearchResult


@pytest.fixture(scope="module")
def corpus_engine(tmp_path_factory):
    return CorpusSearchEngine(DATA / "corpus_small.jsonl", index_dir=tmp_path_factory.mktemp("idx") / "small")


@pytest.fixture(scope="module")
def server(corpus_engine):
    with RetrievalServer(corpus_engine) as running:
        yield running


class FakeEngine(SearchEngine):
    """No ids or scores (like the simulator); records each call's queries and modes, and overlapping calls."""

    name = "fake"

    def __init__(self, delay: float = 0.0, fail: bool = False, fail_on: str | None = None):
        self.delay, self.fail, self.fail_on = delay, fail, fail_on
        self.modes: list = []
        self.calls: list[list[str]] = []
        self.active = self.most_active = 0

    def lookup(self, queries: Sequence[str], k: int = 5, *, mode=None, context=None) -> list[SearchResult]:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            self.calls.append(list(queries))
            time.sleep(self.delay)
            if self.fail or (self.fail_on is not None and any(self.fail_on in q for q in queries)):
                raise RuntimeError("model fell over\nwith a second line")
            self.modes.append(mode)
            return [
                SearchResult(q, [Doc(f"T{i}", f"{q} text {i}", "fake") for i in range(k + 2)])
                for q in queries
            ]
        finally:
            self.active -= 1


def post(server: RetrievalServer, body=None, **kwargs) -> httpx.Response:
    return (
        httpx.post(f"{server.url}/retrieve", json=body, **kwargs)
        if body is not None
        else httpx.post(f"{server.url}/retrieve", **kwargs)
    )


def burst(url: str, bodies: list[dict], *, keep_alive: bool = False, timeout: float = 30) -> list:
    """Send all bodies at once, each on its own connection (as `requests.post` does): responses or the
    transport error each one got, in order."""

    async def send_all():
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies) * keep_alive)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            return await asyncio.gather(
                *(client.post(f"{url}/retrieve", json=body) for body in bodies), return_exceptions=True
            )

    return asyncio.run(send_all())


def in_thread(function, *args):
    """Run `function(*args)` on a thread; returns a callable that joins it and gives its result."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(function(*args)), daemon=True)
    thread.start()

    def result(timeout: float = 60):
        thread.join(timeout)
        assert box, "the thread did not finish"
        return box[0]

    return result


def half_sent(url: str, payload: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(payload)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


DOCS = (  # what the fake simulator writes: two documents the parser accepts
    "Doc 1: Alpha is a small town in the north of the country, known for its mills.\n"
    "Doc 2: Beta is a river that runs past Alpha and into the sea near the old port."
)
HALF_HEAD = b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Le"
HALF_BODY = b'POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"queries": ["Ed'


def test_health_reports_engine_queue_and_in_flight(server):
    response = httpx.get(f"{server.url}/health")
    health = response.json()
    assert response.status_code == 200 and health["status"] == "ok" and health["engine"] == "corpus"
    assert health["queue_depth"] == 0 and health["in_flight"] == 0 and health["queue_limit"] == 256


def test_retrieve_with_scores_matches_search_r1_shape(server, corpus_engine):
    body = {"queries": ["Scott Derrickson", "Laleli Mosque"], "topk": 3, "return_scores": True}
    response = post(server, body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    result = response.json()["result"]
    assert len(result) == 2 and [len(items) for items in result] == [3, 3]
    first = result[0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"] == {"id": "hotpot_1", "contents": corpus_engine.corpus.contents[1]}
    scores = [item["score"] for item in result[0]]
    assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) and s > 0 for s in scores)


def test_retrieve_without_scores_returns_bare_documents(server):
    result = post(server, {"queries": ["Ed Wood"], "topk": 2, "return_scores": False}).json()["result"]
    assert len(result[0]) == 2 and all(set(doc) == {"id", "contents"} for doc in result[0])


def test_topk_defaults_to_three_and_empty_queries_get_empty_lists(server):
    result = post(server, {"queries": ["Ed Wood", ""]}).json()["result"]
    assert len(result[0]) == 3 and result[1] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"queries": []},
        {"queries": "not a list"},
        {"queries": [1, 2]},
        {"queries": ["q"] * 513},
        {"queries": ["x" * 513]},
        {"queries": ["q"], "topk": 0},
        {"queries": ["q"], "topk": 51},
        {"queries": ["q"], "topk": "many"},
        ["a", "list"],
    ],
    ids=["missing", "empty", "string", "ints", "too-many", "too-long", "topk-0", "topk-51", "topk-str", "list"],
)
def test_bad_bodies_get_422_with_one_line_error_and_the_server_survives(server, body):
    response = post(server, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_limit_messages_say_the_limit(server):
    assert "at most 512 queries" in post(server, {"queries": ["q"] * 513}).json()["error"]
    assert "limit is 512" in post(server, {"queries": ["x" * 513]}).json()["error"]
    assert post(server, {"queries": ["x" * 512], "topk": 50}).status_code == 200


def test_not_json_and_unknown_routes(server):
    response = post(server, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"].startswith("body is not valid JSON")
    assert post(server, content=b"").status_code == 422
    assert httpx.get(f"{server.url}/nothing").status_code == 404
    assert httpx.post(f"{server.url}/nothing", json={}).json()["error"] == "no route POST /nothing"
    assert httpx.post(f"{server.url}/retrieve/", json={"queries": ["Ed Wood"]}).status_code == 200


def test_a_wrong_method_on_a_known_route_is_405_with_allow(server):
    for method, path, allowed in (("GET", "/retrieve", "POST"), ("DELETE", "/retrieve/", "POST"),
                                  ("POST", "/health", "GET")):
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == 405, (method, path)
        assert allowed in response.headers["allow"] and "\n" not in response.json()["error"]
        assert response.json()["error"].startswith(f"method {method} not allowed on {path.rstrip('/')}")


@pytest.mark.parametrize(
    "extra",
    [{"topk": True}, {"topk": "2"}, {"topk": 2.5}, {"return_scores": "yes"}, {"return_scores": 1},
     {"return_scores": "true"}],
    ids=["topk-true", "topk-numeric-str", "topk-fraction", "scores-yes", "scores-1", "scores-true-str"],
)
def test_topk_and_return_scores_are_strict(server, extra):
    response = post(server, {"queries": ["Ed Wood"]} | extra)
    assert response.status_code == 422, response.text
    assert next(iter(extra)) in response.json()["error"]


def test_configurable_limits_and_body_size(corpus_engine):
    with RetrievalServer(corpus_engine, max_request_queries=2, max_query_chars=10, max_body_bytes=1024) as small:
        assert post(small, {"queries": ["a", "b", "c"]}).status_code == 422
        assert post(small, {"queries": ["12345678901"]}).status_code == 422
        assert post(small, {"queries": ["Ed Wood"]}).status_code == 200
        too_big = post(small, content=b" " * 2000)
        assert too_big.status_code == 413 and too_big.headers["connection"] == "close"
        chunked = post(small, content=iter([b'{"queries": ', b'["Ed Wood"]}']))
        assert chunked.status_code == 411 and "Content-Length" in chunked.json()["error"]
        assert httpx.get(f"{small.url}/health").status_code == 200


def test_engine_without_scores_gets_rank_scores_content_ids_and_its_mode():
    engine = FakeEngine()
    with RetrievalServer(engine, mode="noisy") as running:
        result = post(running, {"queries": ["q"], "topk": 3, "return_scores": True}).json()["result"][0]
    assert [item["score"] for item in result] == [1.0, 0.5, pytest.approx(1 / 3)]  # cut to topk, order kept
    assert result[0]["document"]["contents"] == '"T0"\nq text 0'
    assert len({item["document"]["id"] for item in result}) == 3 and engine.modes == ["noisy"]


def test_engine_failure_is_a_500_json_error_and_the_server_survives():
    with RetrievalServer(FakeEngine(fail=True)) as running:
        response = post(running, {"queries": ["q"]})
        assert response.status_code == 500
        assert response.json()["error"] == "fake engine failed: RuntimeError: model fell over with a second line"
        assert httpx.get(f"{running.url}/health").json()["status"] == "ok"


def test_engine_calls_are_serialized():
    engine = FakeEngine(delay=0.02)
    with RetrievalServer(engine, max_batch_queries=1) as running:
        responses = burst(running.url, [{"queries": [f"q{i}"]} for i in range(6)])
    assert [r.status_code for r in responses] == [200] * 6 and engine.most_active == 1
    assert len(engine.calls) == 6  # max_batch_queries=1: one request per call


def test_keep_alive_connection_serves_several_requests(server):
    with httpx.Client() as client:
        for query in ("Ed Wood", "Shirley Temple", "Animorphs"):
            assert client.post(f"{server.url}/retrieve", json={"queries": [query]}).status_code == 200


def test_stop_without_start_does_not_hang(corpus_engine):
    RetrievalServer(corpus_engine).stop()


# --- under load -------------------------------------------------------------------------------------------


def test_many_concurrent_clients_beside_a_stalled_request_lose_nothing(server):
    stalled = half_sent(server.url, HALF_BODY)
    try:
        for round_ in range(2):
            bodies = [{"queries": [f"Ed Wood {round_} {i}"]} for i in range(120)]
            responses = burst(server.url, bodies)
            failed = [r if isinstance(r, Exception) else r.status_code for r in responses
                      if isinstance(r, Exception) or r.status_code != 200]
            assert failed == [], f"round {round_}: {len(failed)} of 120 failed: {failed[:3]}"
            assert all(r.json()["result"][0] for r in responses)
    finally:
        stalled.close()


def test_stalled_half_sent_requests_are_dropped_after_the_read_timeout(corpus_engine):
    with RetrievalServer(corpus_engine, read_timeout_s=0.4) as running:
        head, body = half_sent(running.url, HALF_HEAD), half_sent(running.url, HALF_BODY)
        for sock in (head, body):
            sock.settimeout(3)
        started = time.monotonic()
        assert read_to_close(head) == b""  # closed without an answer: there is no request to answer
        answer = read_to_close(body)
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within 0.4 s" in answer
        assert time.monotonic() - started < 2.5
        head.close(), body.close()
        assert post(running, {"queries": ["Ed Wood"]}).status_code == 200


def test_concurrent_requests_share_one_engine_call_and_get_their_own_answers():
    engine = FakeEngine()
    with RetrievalServer(engine, batch_window_ms=400) as running:
        responses = burst(running.url, [{"queries": [f"q{i}", f"r{i}"], "topk": 2} for i in range(6)])
        calls = httpx.get(f"{running.url}/health").json()["engine_calls"]
    assert [r.status_code for r in responses] == [200] * 6
    assert calls == 1 and len(engine.calls) == 1 and sorted(engine.calls[0]) == sorted(
        [f"{p}{i}" for i in range(6) for p in "qr"]
    )
    for i, response in enumerate(responses):
        result = response.json()["result"]
        assert [item["contents"] for item in result[0]] == [f'"T0"\nq{i} text 0', f'"T1"\nq{i} text 1']
        assert result[1][0]["contents"] == f'"T0"\nr{i} text 0'


def test_a_failing_query_fails_only_its_own_request_in_a_batch():
    engine = FakeEngine(fail_on="boom")
    with RetrievalServer(engine, batch_window_ms=300) as running:
        responses = burst(running.url, [{"queries": [q]} for q in ("a", "boom", "c", "d")])
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert responses[1].json()["error"].startswith("fake engine failed: RuntimeError")
    assert responses[2].json()["result"][0][0]["contents"] == '"T0"\nc text 0'
    assert len(engine.calls[0]) == 4  # the batch was tried together first


def test_past_the_queue_limit_requests_get_503_with_retry_after_while_health_answers():
    engine = FakeEngine(delay=0.1)
    with RetrievalServer(engine, queue_limit=2, max_batch_queries=1, batch_window_ms=0) as running:
        sent = threading.Event()
        pending = in_thread(lambda: (burst(running.url, [{"queries": [f"q{i}"]} for i in range(24)]), sent.set())[0])
        health: list[tuple[int, dict, float]] = []
        while not sent.is_set():
            started = time.perf_counter()
            answer = httpx.get(f"{running.url}/health", timeout=2)
            health.append((answer.status_code, answer.json(), time.perf_counter() - started))
            time.sleep(0.02)
        responses = pending()
        after = post(running, {"queries": ["after"]})
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503} and statuses.count(503) >= 10
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "server busy" in refused.json()["error"]
    assert all(code == 200 for code, _, _ in health) and max(seconds for _, _, seconds in health) < 0.5
    assert max(h["in_flight"] for _, h, _ in health) >= 1 and max(h["queue_depth"] for _, h, _ in health) <= 2
    assert after.status_code == 200


def wait_for_in_flight(url: str, count: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while httpx.get(f"{url}/health").json()["in_flight"] < count:
        assert time.monotonic() < deadline, f"{count} requests never were in flight together"
        time.sleep(0.01)


def test_stop_under_load_finishes_or_cleanly_fails_in_flight_requests_and_closes_the_cache(tmp_path):
    from zerosearch_lite.models.backends.fake import FakeBackend
    from zerosearch_lite.simulator.cache import DocumentCache
    from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

    def slow_docs(prompt: str) -> str:
        time.sleep(0.15)
        return DOCS

    cache_path = tmp_path / "doc_cache.db"
    engine = SimulatedSearchEngine(FakeBackend(default=slow_docs), cache=DocumentCache(cache_path))
    running = RetrievalServer(engine, owns_engine=True, max_batch_queries=1, shutdown_timeout_s=0.5).start()
    pending = in_thread(burst, running.url, [{"queries": [f"query {i}"], "topk": 2} for i in range(12)])
    wait_for_in_flight(running.url, 12)
    running.stop()  # the path SIGTERM takes, without the signal
    responses = pending()
    statuses = [r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "server stopped" in response.json()["error"]
    assert not (tmp_path / "doc_cache.db-wal").exists()  # closed cleanly: the WAL was folded in
    with pytest.raises(sqlite3.ProgrammingError):  # closed by the server that owned the engine
        engine.cache.db.execute("select 1")
    reopened = DocumentCache(cache_path)
    assert reopened.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    rows = list(reopened.table.rows)
    assert 1 <= len(rows) <= statuses.count(200) + 1  # + the one generating when time ran out
    assert all(len(json.loads(row["docs"])) == 2 for row in rows)


SERVE_SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    from zerosearch_lite.models.backends.fake import FakeBackend
    from zerosearch_lite.simulator.cache import DocumentCache
    from zerosearch_lite.simulator.server import ServeConfig, serve
    from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

    def slow_docs(prompt):
        time.sleep(0.2)
        return {DOCS!r}

    engine = SimulatedSearchEngine(FakeBackend(default=slow_docs), cache=DocumentCache(sys.argv[1]))
    config = ServeConfig(port=int(sys.argv[2]), max_batch_queries=1, shutdown_timeout_s=20)
    serve(engine, config, say=lambda line: print(line, file=sys.stderr, flush=True))
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the server did not come up")


def test_sigterm_during_load_completes_in_flight_requests_and_leaves_a_clean_cache(tmp_path):
    cache_path, port = tmp_path / "doc_cache.db", free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(cache_path), str(port)],
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
        pending = in_thread(burst, url, [{"queries": [f"query {i}"], "topk": 2} for i in range(6)])
        wait_for_in_flight(url, 5)
        process.send_signal(signal.SIGTERM)
        responses = pending()
        returncode = process.wait(timeout=30)
    finally:
        process.kill()
    log = process.stderr.read()
    assert [r.status_code for r in responses] == [200] * 6, log  # all in flight: finished, not dropped
    assert returncode == -signal.SIGTERM and "stopped; the simulated engine is closed" in log
    assert not (tmp_path / "doc_cache.db-wal").exists()  # closed cleanly: the WAL was folded in
    db = sqlite3.connect(cache_path)
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from documents").fetchone()[0] == 6


def serve_app():
    import typer

    from zerosearch_lite.simulator.cli import serve_command

    app = typer.Typer()
    app.command()(serve_command)
    return app


def test_zsl_serve_builds_the_http_engine_from_url_and_the_config_from_its_options(monkeypatch):
    from typer.testing import CliRunner

    from zerosearch_lite.simulator import server as server_module

    served: list = []
    monkeypatch.setattr(server_module, "serve", lambda engine, config, say: served.append((engine, config)))
    result = CliRunner().invoke(serve_app(), ["--engine", "http", "--url", "http://127.0.0.1:9/retrieve",
                                              "--port", "0", "--queue-limit", "16", "--batch-window-ms", "2.5"])
    assert result.exit_code == 0, result.output
    (engine, config), = served
    assert engine.name == "http" and engine.url == "http://127.0.0.1:9/retrieve"
    assert (config.port, config.queue_limit, config.batch_window_ms, config.mode) == (0, 16, 2.5, "useful")


def test_zsl_serve_rejects_bad_settings_in_one_line():
    from typer.testing import CliRunner

    from zerosearch_lite.errors import ZslError

    missing_url = CliRunner().invoke(serve_app(), ["--engine", "http"])
    assert isinstance(missing_url.exception, ZslError) and "needs --url" in str(missing_url.exception)
    bad_limit = CliRunner().invoke(serve_app(), ["--engine", "http", "--url", "http://127.0.0.1:1",
                                                 "--queue-limit", "0"])
    assert isinstance(bad_limit.exception, ZslError)
    assert str(bad_limit.exception) == "invalid --queue-limit: Input should be greater than or equal to 1"


# --- the batcher's runner survives ------------------------------------------------------------------------


def test_a_request_that_times_out_while_its_batch_gathers_does_not_stop_the_batcher():
    # The only waiting request gives up inside the 500 ms window: the window ends with nothing queued.
    with RetrievalServer(FakeEngine(), batch_window_ms=500, answer_timeout_s=0.2, max_batch_queries=2) as running:
        assert post(running, {"queries": ["alone"]}).status_code == 503
        time.sleep(0.6)
        assert httpx.get(f"{running.url}/health").json()["status"] == "ok"
        response = post(running, {"queries": ["a", "b"]})  # a full batch: answered without waiting
        assert response.status_code == 200, response.text
        assert response.json()["result"][1][0]["contents"] == '"T0"\nb text 0'


def test_an_unexpected_error_in_one_batch_fails_that_batch_only():
    from zerosearch_lite.simulator.batching import EngineBatcher

    class Flaky(EngineBatcher):
        def _answer_batch(self, jobs):
            if self.engine_calls == 1:
                raise RuntimeError("a bug in the first batch")
            return super()._answer_batch(jobs)

    async def scenario():
        batcher = Flaky(lambda queries, k: [[] for _ in queries], window_s=0, max_queries=8, queue_limit=8)
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="a bug in the first batch"):
                await asyncio.wait_for(batcher.submit(["a"], 3), 2)
            assert await asyncio.wait_for(batcher.submit(["b"], 3), 2) == [[]]
            assert batcher.in_engine == []
        finally:
            await batcher.close()

    asyncio.run(scenario())


def test_health_is_503_when_the_batcher_has_stopped():
    with RetrievalServer(FakeEngine()) as running:
        runner = running.service.batcher._runner
        runner.get_loop().call_soon_threadsafe(runner.cancel)
        deadline = time.monotonic() + 5
        while not runner.done():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = httpx.get(f"{running.url}/health")
        assert response.status_code == 503 and response.json()["status"] != "ok"
