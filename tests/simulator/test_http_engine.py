"""`HttpSearchEngine` against our server (round trip, a restart) and against canned servers (shapes, errors,
retries with backoff, Retry-After and a total deadline)."""

import json
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import DATA

from zerosearch_lite.errors import ZslError
from zerosearch_lite.simulator.corpus import CorpusSearchEngine
from zerosearch_lite.simulator.http_engine import HttpSearchEngine
from zerosearch_lite.simulator.server import RetrievalServer


@pytest.fixture(scope="module")
def corpus_engine(tmp_path_factory):
    return CorpusSearchEngine(DATA / "corpus_small.jsonl", index_dir=tmp_path_factory.mktemp("idx") / "small")


def as_bytes(body: bytes | str | dict) -> bytes:
    return json.dumps(body).encode() if isinstance(body, dict) else body if isinstance(body, bytes) else body.encode()


@contextmanager
def canned_server(status: int, body: bytes | str | dict, delay: float = 0.0):
    """Answers every POST with the same status and body; records the request bodies it got."""
    with scripted_server([(status, body, {})], delay=delay) as served:
        yield served


@contextmanager
def scripted_server(answers: list[tuple[int, bytes | str | dict, dict]], delay: float = 0.0):
    """Answers the n-th POST with the n-th (status, body, headers), the last one again once they run out;
    records the request bodies and when each arrived."""
    requests: list[dict] = []
    arrivals: list[float] = []

    class Canned(BaseHTTPRequestHandler):
        def do_POST(self):
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            arrivals.append(time.monotonic())
            status, body, headers = answers[min(len(requests), len(answers)) - 1]
            payload = as_bytes(body)
            time.sleep(delay)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests, arrivals
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_round_trip_through_our_server_matches_the_corpus_engine(corpus_engine):
    queries = ["Scott Derrickson", "Laleli Mosque", ""]
    with RetrievalServer(corpus_engine) as running:
        remote = HttpSearchEngine(running.url)
        results = remote.lookup(queries, 4)
        passages = remote.retrieve(queries, 4)
        remote.close()
    local = corpus_engine.lookup(queries, 4)
    assert [[(d.title, d.text) for d in r.docs] for r in results] == [
        [(d.title, d.text) for d in r.docs] for r in local
    ]
    assert results[0].docs[0].title == "Scott Derrickson" and results[0].docs[0].source == "http"
    assert results[2].docs == [] and results[0].seconds > 0 and results[0].cache_hit is False
    assert passages == corpus_engine.retrieve(queries, 4)  # ids and scores survive the trip


def test_large_batches_are_split_under_the_server_limit(corpus_engine):
    with RetrievalServer(corpus_engine, max_request_queries=4) as running:
        docs = HttpSearchEngine(f"{running.url}/retrieve", batch_size=4).search(["Ed Wood"] * 10, 2)
    assert len(docs) == 10 and all(len(d) == 2 and d[0].title == "Ed Wood (film)" for d in docs)


def test_bare_documents_and_title_text_documents_are_read():
    bare = {
        "result": [[{"id": "7", "contents": '"Ed Wood"\nEdward Davis Wood Jr.'}, {"contents": "no title"}]]
    }
    with canned_server(200, bare) as (url, requests, _):
        hits = HttpSearchEngine(url).retrieve(["q"], 5)[0]
    assert requests == [{"queries": ["q"], "topk": 5, "return_scores": True}]
    assert [(h.id, h.score) for h in hits] == [("7", None), (None, None)]
    assert [h.to_doc("http").title for h in hits] == ["Ed Wood", ""]
    bm25_style = {
        "result": [
            [
                {
                    "document": {"title": "Ed Wood", "text": "a film", "contents": '"Ed Wood"\na film'},
                    "score": 12.5,
                },
                {"document": {"title": "T", "text": "only text"}, "score": 3},
            ]
        ]
    }
    with canned_server(200, bm25_style) as (url, _, _):
        docs = HttpSearchEngine(url).search(["q"], 5)[0]
    assert [(d.title, d.text) for d in docs] == [("Ed Wood", "a film"), ("T", "only text")]


def test_more_documents_than_asked_are_cut_to_k():
    many = {"result": [[{"id": str(i), "contents": f"doc {i}"} for i in range(9)]]}
    with canned_server(200, many) as (url, _, _):
        assert len(HttpSearchEngine(url).search(["q"], 3)[0]) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on exit: nobody listens there


def test_closed_port_is_a_zsl_error_naming_the_url():
    port = free_port()
    with pytest.raises(ZslError, match=f"http://127.0.0.1:{port}/retrieve unreachable"):
        HttpSearchEngine(f"http://127.0.0.1:{port}", retry_deadline=0).search(["q"], 3)


def test_zsl_search_waits_for_an_unreachable_server_only_as_long_as_asked(zsl_home):
    from typer.testing import CliRunner

    from zerosearch_lite.cli import app

    url = f"http://127.0.0.1:{free_port()}/retrieve"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["search", "q", "--engine", "http", "--url", url, "--http-retry-s", "0.5"])
    assert isinstance(result.exception, ZslError) and time.monotonic() - started < 5  # the CLI prints it in one line
    assert f"{url} unreachable" in str(result.exception) and "gave up after" in str(result.exception)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, b"<html>not json</html>", "malformed response"),
        (200, {"result": "nope"}, "malformed response"),
        (200, {"result": [[{"score": 1.0}]]}, "malformed response"),
        (200, {"result": [[], []]}, "answered 2 of 1 queries"),
        (503, {"error": "index loading"}, "answered HTTP 503: index loading"),
        (500, b"Internal\nServer Error", "answered HTTP 500: Internal Server Error"),
    ],
    ids=["html", "wrong-shape", "no-document", "count", "503-json", "500-text"],
)
def test_bad_answers_are_zsl_errors_naming_the_url(status, body, message):
    with canned_server(status, body) as (url, requests, _), pytest.raises(ZslError, match=message) as info:
        HttpSearchEngine(url, retry_deadline=0).search(["q"], 3)
    assert f"{url}/retrieve" in str(info.value) and "\n" not in str(info.value)
    assert len(requests) == 1


def test_timeout_is_a_zsl_error_and_is_not_retried():
    slow = canned_server(200, {"result": [[]]}, delay=1.0)
    with slow as (url, requests, _), pytest.raises(ZslError, match="timed out after 0.2 s"):
        HttpSearchEngine(url, timeout=0.2).search(["q"], 3)
    assert len(requests) == 1  # the server has it: sending it again would double its work


def test_url_forms():
    assert HttpSearchEngine("http://127.0.0.1:8000").url == "http://127.0.0.1:8000/retrieve"
    assert HttpSearchEngine("http://127.0.0.1:8000/retrieve/").url == "http://127.0.0.1:8000/retrieve"
    with pytest.raises(ZslError, match="must start with http"):
        HttpSearchEngine("127.0.0.1:8000")
    assert HttpSearchEngine("http://127.0.0.1:1").search([], 3) == []  # nothing to ask: no request


ANSWER = {"result": [[{"id": "1", "contents": '"Ed Wood"\na film'}]]}


def test_503_is_retried_after_the_servers_retry_after():
    answers = [(503, {"error": "busy"}, {"Retry-After": "1"}), (200, ANSWER, {})]
    with scripted_server(answers) as (url, requests, arrivals):
        docs = HttpSearchEngine(url, backoff=0.01).search(["q"], 3)[0]
    assert [d.title for d in docs] == ["Ed Wood"] and len(requests) == 2
    assert arrivals[1] - arrivals[0] >= 0.95  # the server's second, not the 10 ms backoff


def test_connection_failures_back_off_until_the_deadline_then_fail_in_one_line():
    port = free_port()
    engine = HttpSearchEngine(f"http://127.0.0.1:{port}", retry_deadline=0.8, backoff=0.05, max_backoff=0.2)
    started = time.monotonic()
    with pytest.raises(ZslError) as info:
        engine.search(["q"], 3)
    seconds, message = time.monotonic() - started, str(info.value)
    assert 0.4 < seconds < 1.5 and "\n" not in message
    assert message.startswith(f"search server http://127.0.0.1:{port}/retrieve unreachable (ConnectError")
    tries = int(message.split("gave up after ")[1].split(" tries")[0])
    assert 4 <= tries <= 12  # backoff 0.05 doubling to 0.2 s within 0.8 s, not a busy loop


def test_a_retry_after_past_the_deadline_fails_at_once():
    answers = [(503, {"error": "index loading"}, {"Retry-After": "30"})]
    started = time.monotonic()
    with scripted_server(answers) as (url, requests, _), pytest.raises(ZslError, match="503: index loading"):
        HttpSearchEngine(url, retry_deadline=2).search(["q"], 3)
    assert time.monotonic() - started < 1 and len(requests) == 1


def test_a_restarting_server_is_waited_for(corpus_engine):
    first = RetrievalServer(corpus_engine).start()
    url = first.url
    port = int(url.rsplit(":", 1)[1])
    first.stop()
    client = HttpSearchEngine(url, retry_deadline=20, backoff=0.05)
    box: list = []
    thread = threading.Thread(target=lambda: box.append(client.search(["Ed Wood"], 2)))
    thread.start()
    time.sleep(0.8)  # the client is retrying against a closed port meanwhile
    with RetrievalServer(corpus_engine, port=port):
        thread.join(20)
    assert box and [d.title for d in box[0][0]] == [d.title for d in corpus_engine.search(["Ed Wood"], 2)[0]]
