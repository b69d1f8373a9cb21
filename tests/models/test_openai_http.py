"""OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that gives canned answers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import drain

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.models.backends.openai_http import OpenAIBackend
from zerosearch_lite.models.loading import load_backend


class CannedServer:
    """`/v1/models` and `/v1/completions` (plain and SSE); `mode` picks a misbehaviour; records requests."""

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != "/v1/models" or server.mode == "no-models":
                    return self.send(404, b'{"error": {"message": "not found"}}')
                models = {"object": "list", "data": [{"id": "served-model", "max_model_len": 2048}]}
                self.send(200, json.dumps(models).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body, dict(self.headers)))
                if self.path != "/v1/completions":
                    return self.send(404, b"no such route")
                if server.mode == "500":
                    return self.send(500, b'{"error": {"message": "model crashed\\nbadly", "code": 500}}')
                if server.mode == "garbage":
                    return self.send(200, b"{not json")
                if server.mode == "wrong-shape":
                    return self.send(200, b'{"choices": "none"}')
                if server.mode == "reject-n" and body["n"] != 1:  # llama.cpp's answer
                    message = {"error": {"code": 500, "message": "Only one completion choice is allowed"}}
                    return self.send(500, json.dumps(message).encode())
                if body["stream"]:
                    return self.send(200, self.sse(), "text/event-stream")
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                n = 1 if server.mode == "ignore-n" else body["n"]
                # Text "prompt|sample|seed"; the first sample of each prompt stops, the others hit the limit.
                seed = body.get("seed")
                choices = [
                    {"text": f"{p}|{s}|{seed}", "index": i * n + s, "finish_reason": "length" if s else "stop"}
                    for i, p in enumerate(prompts)
                    for s in range(n)
                ]
                usage = {"prompt_tokens": 3 * len(prompts), "completion_tokens": 10 * len(choices)}
                # Reversed: the client must order choices by index, not by arrival.
                answer = {"object": "text_completion", "choices": choices[::-1], "usage": usage}
                self.send(200, json.dumps(answer).encode())

            def sse(self) -> bytes:
                events = [
                    ": keep-alive comment",
                    'data: {"choices": [{"text": "Hel", "index": 0, "finish_reason": null}]}',
                    'data: {"choices": [{"text": "lo", "index": 0, "finish_reason": "length"}]}',
                    'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}',
                    "data: [DONE]",
                ]
                return "".join(f"{e}\n\n" for e in events).encode()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def last_body(self) -> dict:
        return self.requests[-1][1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_server() -> Iterator:
    started: list[CannedServer] = []

    def make(mode: str = "ok") -> CannedServer:
        started.append(CannedServer(mode))
        return started[-1]

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server) -> CannedServer:
    return make_server()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connecting is refused
    return port


def test_base_url_and_model_discovery(server, make_server):
    backend = load_backend(server.url)
    assert isinstance(backend, OpenAIBackend)
    assert backend.base_url == server.url + "/v1"
    assert backend.model == "served-model" and backend.context_size == 2048
    assert OpenAIBackend(server.url + "/v1/").base_url == server.url + "/v1"
    assert OpenAIBackend(server.url, model="mine").model == "mine"
    assert OpenAIBackend(make_server("no-models").url).model == "default"
    assert OpenAIBackend(f"http://127.0.0.1:{closed_port()}").model == "default"


def test_generate_sends_the_sampling_fields(server):
    backend = OpenAIBackend(server.url, api_key="sk-test")
    params = SamplingParams(
        max_tokens=7, temperature=0.3, top_p=0.9, stop=["</search>"], seed=5, grammar="root ::= x"
    )
    backend.generate(["a", "b"], params)
    path, body, headers = server.requests[-1]
    assert path == "/v1/completions"
    assert body == {
        "model": "served-model", "prompt": ["a", "b"], "max_tokens": 7, "temperature": 0.3, "top_p": 0.9,
        "n": 1, "stream": False, "stop": ["</search>"], "seed": 5,
    }
    assert headers["Authorization"] == "Bearer sk-test"
    assert backend.supports_grammar is False


def test_grammar_is_forwarded_only_when_asked(server):
    backend = OpenAIBackend(server.url, send_grammar=True)
    assert backend.supports_grammar is True
    backend.generate(["a"], SamplingParams(grammar='root ::= "yes"'))
    assert server.last_body["grammar"] == 'root ::= "yes"'
    backend.generate(["a"], SamplingParams())
    assert "grammar" not in server.last_body


def test_n_samples_are_prompt_major_with_usage(server):
    out = OpenAIBackend(server.url).generate(["a", "b"], SamplingParams(n=2, seed=1))
    assert [c.text for c in out] == ["a|0|1", "a|1|1", "b|0|1", "b|1|1"]
    assert [c.finish_reason for c in out] == ["stop", "length", "stop", "length"]
    assert all(c.prompt_tokens == 3 and c.completion_tokens == 10 for c in out)
    assert server.last_body["n"] == 2


def test_server_that_ignores_n_gets_one_request_per_sample(make_server):
    server = make_server("ignore-n")
    out = OpenAIBackend(server.url).generate(["a", "b"], SamplingParams(n=3, seed=10))
    assert [c.text for c in out] == ["a|0|10", "a|0|11", "a|0|12", "b|0|10", "b|0|11", "b|0|12"]
    assert [body["n"] for _, body, _ in server.requests] == [3, 1, 1]


def test_server_that_refuses_n_gets_one_request_per_sample(make_server):
    server = make_server("reject-n")
    backend = OpenAIBackend(server.url)
    out = backend.generate(["a"], SamplingParams(n=2, seed=10))
    assert [c.text for c in out] == ["a|0|10", "a|0|11"]
    backend.generate(["a"], SamplingParams(n=2, seed=10))  # remembered: no second refused request
    assert [body["n"] for _, body, _ in server.requests] == [2, 1, 1, 1, 1]


def test_stop_sequences_are_cut_if_the_server_left_them(server):
    out = OpenAIBackend(server.url).generate(["say|stop"], SamplingParams(stop=["|"]))[0]
    assert out.text == "say" and out.finish_reason == "stop"


def test_stream_joins_chunks(server):
    chunks, completion = drain(OpenAIBackend(server.url).stream("p", SamplingParams(max_tokens=2, n=3)))
    assert chunks == ["Hel", "lo"]
    assert completion.text == "Hello" and completion.finish_reason == "length"
    assert (completion.prompt_tokens, completion.completion_tokens) == (4, 2)
    body = server.last_body
    assert body["stream"] is True and body["prompt"] == "p" and body["n"] == 1


def test_render_chat_uses_chatml_or_the_given_template(server):
    messages = [{"role": "user", "content": "hi"}]
    chatml = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert OpenAIBackend(server.url).render_chat(messages) == chatml
    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    assert OpenAIBackend(server.url, chat_template=template).render_chat(messages) == "[hi]"


@pytest.mark.parametrize(
    "mode,cause",
    [
        ("500", "answered 500: model crashed badly"),
        ("garbage", "invalid JSON"),
        ("wrong-shape", "unexpected completion body"),
    ],
)
def test_bad_answers_are_one_line_errors(make_server, mode, cause):
    server = make_server(mode)
    backend = OpenAIBackend(server.url, model="m")
    with pytest.raises(ZslError, match=cause) as caught:
        backend.generate(["p"], SamplingParams())
    message = str(caught.value)
    assert "\n" not in message and f"{server.url}/v1/completions" in message


def test_stream_error_status(make_server):
    server = make_server("500")
    with pytest.raises(ZslError, match="answered 500") as caught:
        drain(OpenAIBackend(server.url, model="m").stream("p", SamplingParams()))
    assert "\n" not in str(caught.value)


def test_connection_refused():
    url = f"http://127.0.0.1:{closed_port()}"
    backend = OpenAIBackend(url, model="m")
    with pytest.raises(ZslError, match="connection refused") as caught:
        backend.generate(["p"], SamplingParams())
    assert url in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ZslError, match="connection refused"):
        drain(backend.stream("p", SamplingParams()))


def test_bad_url_is_rejected():
    with pytest.raises(ZslError, match="not an http"):
        OpenAIBackend("ftp://example")
