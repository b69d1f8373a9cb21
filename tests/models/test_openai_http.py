"""OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that gives canned answers: the request
fields, `n` handling, concurrency (bounded, faster than sequential), retries, timeouts, token ids, and
vLLM's runtime LoRA routes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import drain

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.models.backends.openai_http import OpenAIBackend
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

FAST_RETRY = {"retry_backoff": 0.01}  # the retry tests must not sleep for real backoffs
DOCS = "Doc 1: (A) alpha beta gamma\nDoc 2: (B) delta epsilon zeta\nDoc 3: (C) eta theta iota"
EOS = 2


class CannedServer:
    """`/v1/models`, `/v1/completions` (plain and SSE) and vLLM's LoRA routes; `mode` picks a misbehaviour,
    `delay` holds each completion that long. Records requests and the most requests in flight at once."""

    def __init__(self, mode: str = "ok", delay: float = 0.0, fail_first: int = 0):
        self.mode, self.delay, self.fail_first = mode, delay, fail_first
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.in_flight = self.peak_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            counted = False  # a POST counted in `in_flight` until its answer starts going out

            def done(self) -> None:
                """The request leaves `in_flight` before its answer is written: once the client has the answer
                it may send its next request, which must not find this one still counted."""
                if self.counted:
                    with server.lock:
                        server.in_flight -= 1
                    self.counted = False

            def send(self, status: int, body: bytes, content_type: str = "application/json",
                     headers: dict | None = None) -> None:
                self.done()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != "/v1/models" or server.mode == "no-models":
                    return self.send(404, b'{"error": {"message": "not found"}}')
                models = {"object": "list", "data": [{"id": "served-model", "max_model_len": 2048}]}
                self.send(200, json.dumps(models).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, body, dict(self.headers)))
                    failing = len(server.requests) <= server.fail_first
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                self.counted = True
                try:
                    self.answer(body, failing)
                finally:
                    self.done()

            def answer(self, body: dict, failing: bool) -> None:
                if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                    if server.mode == "no-lora":
                        return self.send(404, b'{"detail": "Not Found"}')
                    return self.send(200, b"Success: LoRA adapter updated.", "text/plain")
                if self.path == "/tokenize" and server.mode == "vllm-context":  # vLLM's, at the server root
                    words = len(str(body.get("prompt", "")).split())
                    return self.send(200, json.dumps({"count": words, "tokens": list(range(words))}).encode())
                if self.path != "/v1/completions":
                    return self.send(404, b"no such route")
                if failing:
                    if server.mode == "429":
                        return self.send(429, b'{"error": {"message": "busy"}}', headers={"Retry-After": "0"})
                    return self.send(503, b'{"error": {"message": "overloaded"}}')
                if server.mode == "500" or (server.mode == "bad-prompt" and body["prompt"] == "bad"):
                    return self.send(500, b'{"error": {"message": "model crashed\\nbadly", "code": 500}}')
                if server.mode == "garbage":
                    return self.send(200, b"{not json")
                if server.mode == "wrong-shape":
                    return self.send(200, b'{"choices": "none"}')
                if server.mode == "reject-n" and body["n"] != 1:  # llama.cpp's answer
                    message = {"error": {"code": 500, "message": "Only one completion choice is allowed"}}
                    return self.send(500, json.dumps(message).encode())
                if server.mode == "vllm-context":  # vLLM refuses prompt + max_tokens beyond max_model_len
                    prompt = body["prompt"]
                    prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt.split())
                    if prompt_tokens + body["max_tokens"] > 2048:
                        message = {"error": {"message": "This model's maximum context length is 2048 tokens."}}
                        return self.send(400, json.dumps(message).encode())
                time.sleep(server.delay)
                if body["stream"]:
                    return self.send(200, self.sse(), "text/event-stream")
                prompt = body["prompt"]
                n = 1 if server.mode == "ignore-n" else body["n"]
                # Text "prompt|sample|seed"; the first sample of each prompt stops, the others hit the limit.
                seed = body.get("seed")
                if server.mode == "docs":
                    choices = [{"text": DOCS, "index": s, "finish_reason": "stop"} for s in range(n)]
                elif server.mode == "vllm-ids":
                    choices = [self.vllm_choice(s) for s in range(n)]
                else:
                    choices = [{"text": f"{prompt}|{s}|{seed}", "index": s, "finish_reason": "length" if s else "stop"}
                               for s in range(n)]
                usage = {"prompt_tokens": 3, "completion_tokens": 10 * len(choices)}
                # Reversed: the client must order choices by index, not by arrival.
                answer = {"object": "text_completion", "choices": choices[::-1], "usage": usage}
                self.send(200, json.dumps(answer).encode())

            @staticmethod
            def vllm_choice(sample: int) -> dict:
                """vLLM's shape with `return_token_ids`/`logprobs`: sample 0 stopped on EOS (its id last), sample
                1 on a stop string (whose tokens stay)."""
                if sample == 0:
                    ids, stop_reason, finish = [11, 12, EOS], None, "stop"
                else:
                    ids, stop_reason, finish = [21, 22, 23], "</search>", "stop"
                logprobs = {"tokens": ["x"] * 3, "token_logprobs": [-0.5, -1.5, -0.25]}
                return {"text": f"sample {sample}", "index": sample, "finish_reason": finish,
                        "stop_reason": stop_reason, "token_ids": ids, "logprobs": logprobs}

            def sse(self) -> bytes:
                if server.mode == "cut-stream":  # the connection drops mid-answer: no finish, no [DONE]
                    return b'data: {"choices": [{"text": "<answer>Pa", "index": 0, "finish_reason": null}]}\n\n'
                events = [
                    ": keep-alive comment",
                    'data: {"choices": [{"text": "Hel", "index": 0, "finish_reason": null, "token_ids": [7]}]}',
                    ('data: {"choices": [{"text": "lo", "index": 0, "finish_reason": "length", "token_ids": [8],'
                     ' "stop_reason": null}]}'),
                    'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}',
                    "data: [DONE]",
                ]
                return "".join(f"{e}\n\n" for e in events).encode()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def last_body(self) -> dict:
        return self.requests[-1][1]

    def bodies(self, path: str = "/v1/completions") -> list[dict]:
        return [body for p, body, _ in self.requests if p == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_server() -> Iterator:
    started: list[CannedServer] = []

    def make(mode: str = "ok", **kwargs) -> CannedServer:
        started.append(CannedServer(mode, **kwargs))
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


def test_generate_sends_one_request_per_prompt_with_the_sampling_fields(server):
    backend = OpenAIBackend(server.url, api_key="sk-test")
    params = SamplingParams(
        max_tokens=7, temperature=0.3, top_p=0.9, stop=["</search>"], seed=5, grammar="root ::= x"
    )
    backend.generate(["a", "b"], params)
    bodies = sorted(server.bodies(), key=lambda b: b["prompt"])
    common = {
        "model": "served-model", "max_tokens": 7, "temperature": 0.3, "top_p": 0.9, "n": 1, "stream": False,
        "stop": ["</search>"], "seed": 5, "return_token_ids": True,
    }
    assert bodies == [{**common, "prompt": "a"}, {**common, "prompt": "b"}]
    assert all(headers["Authorization"] == "Bearer sk-test" for _, _, headers in server.requests)
    assert backend.supports_grammar is False
    OpenAIBackend(server.url, token_ids=False).generate(["a"], params)
    assert "return_token_ids" not in server.last_body  # for servers that refuse unknown fields


def test_token_id_prompts_are_sent_as_token_arrays(server):
    out = OpenAIBackend(server.url).generate([[5, 6, 7], "text"], SamplingParams())
    prompts = [b["prompt"] for b in server.bodies()]
    assert [5, 6, 7] in prompts and "text" in prompts  # the ids as a JSON array of ints
    assert out[0].text == "[5, 6, 7]|0|None" and out[1].text == "text|0|None"


def test_grammar_is_forwarded_only_when_asked(server):
    backend = OpenAIBackend(server.url, send_grammar=True)
    assert backend.supports_grammar is True
    backend.generate(["a"], SamplingParams(grammar='root ::= "yes"'))
    assert server.last_body["grammar"] == 'root ::= "yes"'  # llama.cpp's field
    assert server.last_body["structured_outputs"] == {"grammar": 'root ::= "yes"'}  # vLLM's
    backend.generate(["a"], SamplingParams())
    assert "grammar" not in server.last_body and "structured_outputs" not in server.last_body


def test_a_policy_decoded_under_the_protocol_sends_the_grammar(server):
    from zerosearch_lite.agent.config import AgentConfig
    from zerosearch_lite.agent.loop import Agent
    from zerosearch_lite.simulator.template import TemplateSearchEngine

    backend = OpenAIBackend(server.url)
    Agent(backend, TemplateSearchEngine(), AgentConfig(grammar="off", max_turns=1, min_searches=0)).run("q?")
    assert "grammar" not in server.last_body
    Agent(backend, TemplateSearchEngine(), AgentConfig(grammar="on", max_turns=2)).run("q?")
    assert "root" in server.last_body["grammar"]  # the protocol (min_searches, a closed turn) goes to the server


def test_requests_fit_the_context_window_the_server_reports(make_server):
    server = make_server("vllm-context")
    backend = OpenAIBackend(server.url)
    long_prompt = "a " * 700  # 1,400 bytes, 700 tokens on this server: with 1,445 more it would not fit
    params = SamplingParams(max_tokens=1445)  # a structured simulator call's budget for 5 documents
    assert backend.generate([long_prompt], params)[0].finish_reason == "stop"
    # The byte bound (1,408) would cut; the server's /tokenize counts 700, so 1,340 of the 1,445 go out.
    assert server.last_body["max_tokens"] == 2048 - 700 - 8
    assert sum(path == "/tokenize" for path, _, _ in server.requests) == 1
    backend.generate([[1] * 100], SamplingParams(max_tokens=4000))
    assert server.last_body["max_tokens"] == 2048 - 100  # token ids count exactly
    backend.generate(["short"], SamplingParams(max_tokens=7))
    assert server.last_body["max_tokens"] == 7
    assert sum(path == "/tokenize" for path, _, _ in server.requests) == 1  # short prompts are not counted
    no_tokenize = make_server("docs")  # reports the window, has no /tokenize: the byte bound is kept
    OpenAIBackend(no_tokenize.url).generate([long_prompt], params)
    assert no_tokenize.last_body["max_tokens"] == 2048 - 1400 - 8
    silent = make_server("no-models")  # lists no models, so no window: the budget goes as asked
    OpenAIBackend(silent.url).generate([long_prompt], params)
    assert silent.last_body["max_tokens"] == 1445
    backend.generate(["word " * 700], params)  # 3,500 bytes, past the window by the byte bound; 700 tokens
    assert server.last_body["max_tokens"] == 2048 - 700 - 8
    with pytest.raises(ZslError, match="maximum context length is 2048"):  # no room even counted exactly:
        backend.generate(["w " * 2100], params)  # sent as asked, and the server's refusal reported
    assert server.last_body["max_tokens"] == 1445


def test_each_prompt_of_a_call_sends_its_own_seed(make_server):
    server = make_server("ignore-n")
    OpenAIBackend(server.url).generate(["a", "a"], SamplingParams(seeds=(5, 9)))
    assert sorted(b["seed"] for b in server.bodies()) == [5, 9]  # two samples of "a", not one sample twice
    OpenAIBackend(server.url).generate(["b", "b"], SamplingParams(n=2, seeds=(20, 40)))
    assert sorted(b["seed"] for b in server.bodies() if b["prompt"] == "b") == [20, 21, 40, 41]  # + sample


def test_n_samples_are_prompt_major_with_usage(server):
    out = OpenAIBackend(server.url).generate(["a", "b"], SamplingParams(n=2, seed=1))
    assert [c.text for c in out] == ["a|0|1", "a|1|1", "b|0|1", "b|1|1"]
    assert [c.finish_reason for c in out] == ["stop", "length", "stop", "length"]
    assert all(c.prompt_tokens == 3 and c.completion_tokens == 10 for c in out)
    assert [b["n"] for b in server.bodies()] == [2, 2]


def test_server_that_ignores_n_gets_one_request_per_sample(make_server):
    server = make_server("ignore-n")
    out = OpenAIBackend(server.url).generate(["a", "b"], SamplingParams(n=3, seed=10))
    assert [c.text for c in out] == ["a|0|10", "a|0|11", "a|0|12", "b|0|10", "b|0|11", "b|0|12"]
    assert sorted(b["n"] for b in server.bodies()) == [1, 1, 1, 1, 3, 3]


def test_server_that_refuses_n_gets_one_request_per_sample(make_server):
    server = make_server("reject-n")
    backend = OpenAIBackend(server.url)
    out = backend.generate(["a"], SamplingParams(n=2, seed=10))
    assert [c.text for c in out] == ["a|0|10", "a|0|11"]
    backend.generate(["a"], SamplingParams(n=2, seed=10))  # remembered: no second refused request
    assert [body["n"] for body in server.bodies()] == [2, 1, 1, 1, 1]


def test_stop_sequences_are_cut_if_the_server_left_them(server):
    out = OpenAIBackend(server.url).generate(["say|stop"], SamplingParams(stop=["|"]))[0]
    assert out.text == "say" and out.finish_reason == "stop"


def test_token_ids_come_back_without_the_end_token(make_server):
    server = make_server("vllm-ids")
    eos_sample, stop_string_sample = OpenAIBackend(server.url).generate(["p"], SamplingParams(n=2))
    assert eos_sample.token_ids == [11, 12]  # EOS (stop_reason None) dropped
    assert stop_string_sample.token_ids == [21, 22, 23]  # the stop string's tokens stay
    assert (eos_sample.completion_tokens, stop_string_sample.completion_tokens) == (2, 3)
    # Servers that do not send ids (llama.cpp's OpenAI routes) leave them unknown.
    assert OpenAIBackend(make_server().url).generate(["p"], SamplingParams())[0].token_ids is None


def test_logprobs_when_asked_align_with_the_token_ids(make_server):
    server = make_server("vllm-ids")
    params = SamplingParams(n=2)
    params.logprobs = True  # type: ignore[attr-defined]  # the field the trainer's log-prob requests set
    eos_sample, stop_string_sample = OpenAIBackend(server.url).generate(["p"], params)
    assert server.last_body["logprobs"] == 0
    assert eos_sample.token_logprobs == [-0.5, -1.5]  # type: ignore[attr-defined]
    assert stop_string_sample.token_logprobs == [-0.5, -1.5, -0.25]  # type: ignore[attr-defined]
    OpenAIBackend(server.url).generate(["p"], SamplingParams())
    assert "logprobs" not in server.last_body


def test_stream_joins_chunks_and_token_ids(server):
    chunks, completion = drain(OpenAIBackend(server.url).stream("p", SamplingParams(max_tokens=2, n=3)))
    assert chunks == ["Hel", "lo"]
    assert completion.text == "Hello" and completion.finish_reason == "length"
    assert completion.token_ids == [7, 8]  # finished on length: nothing dropped
    assert (completion.prompt_tokens, completion.completion_tokens) == (4, 2)
    body = server.last_body
    assert body["stream"] is True and body["prompt"] == "p" and body["n"] == 1


def test_render_chat_uses_chatml_or_the_given_template(server):
    messages = [{"role": "user", "content": "hi"}]
    chatml = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert OpenAIBackend(server.url).render_chat(messages) == chatml
    template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    assert OpenAIBackend(server.url, chat_template=template).render_chat(messages) == "[hi]"


# --- concurrency --------------------------------------------------------------------------------------


def test_simulator_lookups_run_concurrently_and_bounded(make_server):
    """Acceptance: 32 simulator lookups with concurrency 8 against a server that takes `delay` a request
    finish in well under the sequential time, with never more than 8 requests in flight."""
    delay = 0.1
    server = make_server("docs", delay=delay)
    engine = SimulatedSearchEngine(OpenAIBackend(server.url, concurrency=8), structured=False)
    started = time.perf_counter()
    results = engine.lookup([f"query {i}" for i in range(32)], 3)
    seconds = time.perf_counter() - started
    sequential = 32 * delay
    print(f"32 lookups, concurrency 8: {seconds:.2f} s; sequential at least {sequential:.2f} s; "
          f"ratio {seconds / sequential:.2f}")
    assert all(len(r.docs) == 3 for r in results)
    assert len(server.bodies()) == 32
    assert server.peak_in_flight == 8
    assert seconds < 0.5 * sequential  # ideal 0.125; loose for a loaded machine


def test_concurrency_one_is_sequential(make_server):
    server = make_server("docs", delay=0.02)
    OpenAIBackend(server.url, concurrency=1).generate([f"q{i}" for i in range(6)], SamplingParams())
    assert server.peak_in_flight == 1


def test_a_failing_prompt_fails_the_call_without_running_the_rest(make_server):
    server = make_server("bad-prompt", delay=0.2)
    backend = OpenAIBackend(server.url, concurrency=2, retries=0)
    prompts = ["bad"] + [f"q{i}" for i in range(19)]
    started = time.perf_counter()
    with pytest.raises(ZslError, match="answered 500: model crashed badly"):
        backend.generate(prompts, SamplingParams())
    assert time.perf_counter() - started < 1.0  # not 20 / 2 × 0.2 s: the queued prompts were cancelled
    assert len(server.bodies()) <= 4


# --- failures: retries, timeouts, one-line errors -----------------------------------------------------


@pytest.mark.parametrize("mode", ["503", "429"])
def test_overload_answers_are_retried(make_server, mode):
    server = make_server(mode, fail_first=2)
    started = time.perf_counter()
    out = OpenAIBackend(server.url, model="m", retries=2, **FAST_RETRY).generate(["p"], SamplingParams())
    assert out[0].text == "p|0|None"
    assert len(server.bodies()) == 3
    assert time.perf_counter() - started < 1.5  # short backoff, and the 429's Retry-After: 0 is honoured


def test_overload_that_persists_is_a_one_line_error(make_server):
    server = make_server("503", fail_first=99)
    backend = OpenAIBackend(server.url, model="m", retries=1, **FAST_RETRY)
    with pytest.raises(ZslError, match=r"answered 503 \(after 2 attempts\): overloaded") as caught:
        backend.generate(["p"], SamplingParams())
    assert "\n" not in str(caught.value) and len(server.bodies()) == 2


def test_server_errors_are_not_retried(make_server):
    server = make_server("500")
    with pytest.raises(ZslError, match="answered 500"):
        OpenAIBackend(server.url, model="m", retries=3, **FAST_RETRY).generate(["p"], SamplingParams())
    assert len(server.bodies()) == 1


def test_slow_server_times_out_with_a_clear_error(make_server):
    server = make_server(delay=3.0)
    backend = OpenAIBackend(server.url, model="m", timeout=0.3, retries=2, **FAST_RETRY)
    started = time.perf_counter()
    with pytest.raises(ZslError, match=r"timed out after 0.3 s") as caught:
        backend.generate(["p", "q"], SamplingParams())
    assert time.perf_counter() - started < 2.0
    assert len(server.bodies()) == 2  # a read timeout is not retried: one request per prompt
    assert server.url in str(caught.value) and "\n" not in str(caught.value)


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


def test_a_stream_cut_off_mid_answer_is_an_error_not_a_finished_turn(make_server):
    stream = OpenAIBackend(make_server("cut-stream").url).stream("q", SamplingParams())
    with pytest.raises(ZslError, match="closed its event stream before finishing"):
        drain(stream)


def test_stream_error_status(make_server):
    server = make_server("500")
    with pytest.raises(ZslError, match="answered 500") as caught:
        drain(OpenAIBackend(server.url, model="m").stream("p", SamplingParams()))
    assert "\n" not in str(caught.value)


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{closed_port()}"
    backend = OpenAIBackend(url, model="m", retries=2, **FAST_RETRY)
    with pytest.raises(ZslError, match="failed after 3 attempts: connection refused") as caught:
        backend.generate(["p"], SamplingParams())
    assert url in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ZslError, match="connection refused"):
        drain(backend.stream("p", SamplingParams()))


def test_bad_url_and_bad_options_are_rejected(server):
    with pytest.raises(ZslError, match="not an http"):
        OpenAIBackend("ftp://example")
    with pytest.raises(ZslError, match="concurrency"):
        OpenAIBackend(server.url, model="m", concurrency=0)


# --- runtime LoRA (vLLM) ------------------------------------------------------------------------------


def adapter_folder(path, name: str):
    folder = path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_set_adapter_loads_a_fresh_name_runs_under_it_and_unloads_the_previous(server, tmp_path):
    backend = OpenAIBackend(server.url)
    first = backend.set_adapter(adapter_folder(tmp_path, "step-1"))
    again = backend.set_adapter(tmp_path / "step-1")  # the trainer may rewrite one folder every step
    assert again != first and server.bodies("/v1/unload_lora_adapter") == [{"lora_name": first}]
    first = again
    assert server.bodies("/v1/load_lora_adapter")[-1] == {"lora_name": first,
                                                           "lora_path": str((tmp_path / "step-1").resolve())}
    backend.generate(["p"], SamplingParams())
    assert server.bodies()[-1]["model"] == first and backend.model_id.startswith(first)
    second = backend.set_adapter(adapter_folder(tmp_path, "step-2"))
    assert second != first
    assert server.bodies("/v1/unload_lora_adapter")[-1] == {"lora_name": first}
    backend.generate(["p"], SamplingParams())
    assert server.bodies()[-1]["model"] == second
    assert backend.set_adapter(None) is None
    backend.generate(["p"], SamplingParams())
    assert server.bodies()[-1]["model"] == "served-model"
    assert server.bodies("/v1/unload_lora_adapter")[-1] == {"lora_name": second}


def test_runtime_lora_errors_say_what_to_do(make_server, tmp_path):
    backend = OpenAIBackend(make_server("no-lora").url)
    with pytest.raises(ZslError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        backend.set_adapter(adapter_folder(tmp_path, "step-1"))
    with pytest.raises(ZslError, match="not a peft adapter folder"):
        backend.set_adapter(tmp_path)
    assert backend.model == "served-model"  # a failed hand-over leaves the backend as it was
