"""Concurrent requests of the OpenAI-compatible backend: 32 simulator lookups (`SimulatedSearchEngine` over
`OpenAIBackend`) sent one at a time and then `--concurrency` at a time, and the ratio of the two times.

By default the server is a stand-in on 127.0.0.1 that answers every completion after `--delay` seconds,
however many are in flight: the behaviour of a vLLM server (continuous batching) below its batch limit, so
the ratio shows what the client's concurrency is worth, not a model's speed. `--url` points at a real
server instead (vLLM, llama.cpp with `--parallel N`), where the ratio also depends on how well it batches.

    python bench/http_concurrency.py                       # stand-in server, delay 0.25 s
    python bench/http_concurrency.py --url http://127.0.0.1:8000/v1 --lookups 64 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zerosearch_lite.models.backends.openai_http import OpenAIBackend
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

DOCS = "".join(f"Doc {i}: (Title {i}) document {i} of five, about the benchmark query.\n" for i in range(1, 6))


def start_delay_server(delay: float) -> tuple[ThreadingHTTPServer, str]:
    """A server that answers `/v1/models` at once and each `/v1/completions` after `delay` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def send(self, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.send({"object": "list", "data": [{"id": "delay-server"}]})

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay)
            choices = [{"text": DOCS, "index": s, "finish_reason": "stop"} for s in range(request.get("n", 1))]
            self.send({"choices": choices, "usage": {"prompt_tokens": 100, "completion_tokens": 320}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def timed_lookups(url: str, lookups: int, concurrency: int, k: int) -> tuple[float, int]:
    backend = OpenAIBackend(url, concurrency=concurrency)
    engine = SimulatedSearchEngine(backend, structured=False)
    started = time.perf_counter()
    results = engine.lookup([f"benchmark query number {i}" for i in range(lookups)], k)
    seconds = time.perf_counter() - started
    backend.close()
    return seconds, sum(len(r.docs) for r in results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A real OpenAI-compatible server instead of the stand-in.")
    parser.add_argument("--delay", type=float, default=0.25, help="Stand-in server: seconds per request.")
    parser.add_argument("--lookups", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        server, url = start_delay_server(args.delay)
        print(f"stand-in server, {args.delay:g} s a request however many run at once")
    try:
        sequential, docs_one = timed_lookups(url, args.lookups, 1, args.k)
        concurrent, docs_many = timed_lookups(url, args.lookups, args.concurrency, args.k)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    print(f"{args.lookups} simulator lookups (k {args.k}) against {url}")
    print(f"  concurrency 1: {sequential:6.2f} s  ({docs_one} documents)")
    print(f"  concurrency {args.concurrency}: {concurrent:6.2f} s  ({docs_many} documents)")
    ideal = max(1 / args.concurrency, 1 / args.lookups)
    print(f"  ratio {concurrent / sequential:.3f} (ideal {ideal:.3f})")


if __name__ == "__main__":
    main()
