"""Load benchmark for `zsl serve` (issue 15): many concurrent clients against a real server on 127.0.0.1.

    python bench/serve_load.py load stalled overload          # BM25 over the bundled corpus
    python bench/serve_load.py simulated --sim-backends llama.cpp transformers

Scenarios (the server is a separate `zsl serve` process, as a trainer would meet it, except `simulated`):
  load       --clients (200) clients send --requests (2,000) single-query requests, a new connection each
             (as `requests.post` does): failures by kind, throughput, p50 / p99 latency.
  stalled    the same with 40 clients and one stalled half-sent request beside them (headers sent, body
             never finished); reports whether the server dropped that connection.
  overload   --queue-limit 8 with 64 clients firing at once, no retries: counts 200 / 503 (with and without
             Retry-After) / other statuses while /health is polled every 50 ms, then a calm round that must
             fully succeed.
  simulated  the simulated engine on the embedded model, per backend: --sim-requests (16) concurrent
             single-query requests, batched (one engine call) vs unbatched (--max-batch-queries 1): wall
             time and generated tokens/s (counted by wrapping the backend's `generate`). No cache.
Bounded: every loop has a fixed request count and every request a timeout; it stops by itself.
`--baseline-server PATH` runs an older server.py (its `serve(engine, host=, port=)`) instead of ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "corpus_small.jsonl"
QUESTIONS = ROOT / "tests" / "data" / "hotpot_small.jsonl"

BASELINE_LAUNCH = """
import importlib.util, sys
from zerosearch_lite.simulator.corpus import CorpusSearchEngine
spec = importlib.util.spec_from_file_location("zerosearch_lite.simulator._baseline_server", sys.argv[1])
module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
module.serve(CorpusSearchEngine(sys.argv[2], index_dir=sys.argv[3]), host="127.0.0.1", port=int(sys.argv[4]))
"""


def questions() -> list[str]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    return [row["question"] for row in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`zsl serve --engine corpus` (or a baseline server.py) in a subprocess, waited for on /health."""

    def __init__(self, args: argparse.Namespace, **options: object):
        self.port = free_port()
        self.index = tempfile.mkdtemp(prefix="zsl-bench-index-")
        env = os.environ | {"ZSL_HOME": tempfile.mkdtemp(prefix="zsl-bench-home-")}
        if args.baseline_server:
            command = [sys.executable, "-c", BASELINE_LAUNCH, args.baseline_server, str(CORPUS),
                       str(Path(self.index) / "idx"), str(self.port)]
        else:
            command = [sys.executable, "-m", "zerosearch_lite.cli", "serve", "--engine", "corpus",
                       "--corpus", str(CORPUS), "--port", str(self.port)]
            for name, value in options.items():
                command += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("server did not answer /health within 120 s")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def summary(latencies: list[float], outcomes: Counter, seconds: float) -> str:
    ok = outcomes.get("200", 0)
    failed = sum(outcomes.values()) - ok
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    else:
        p50 = p99 = latencies[0] if latencies else float("nan")
    return (
        f"{sum(outcomes.values())} requests, {failed} failed {dict(outcomes)}; {seconds:.2f} s, "
        f"{ok / seconds:.0f} ok req/s; latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )


async def one_request(client: httpx.AsyncClient, url: str, query: str, topk: int = 3) -> tuple[str, float, dict]:
    started = time.perf_counter()
    try:
        response = await client.post(f"{url}/retrieve", json={"queries": [query], "topk": topk})
        outcome = str(response.status_code)
        headers = dict(response.headers)
    except httpx.HTTPError as exc:
        outcome, headers = type(exc).__name__, {}
    return outcome, time.perf_counter() - started, headers


async def run_clients(url: str, clients: int, requests: int, keep_alive: bool) -> tuple[list[float], Counter, float]:
    queries = questions()
    next_index = iter(range(requests))
    latencies: list[float] = []
    outcomes: Counter = Counter()
    # One pool, `clients` connections; without keep-alive each request opens a fresh connection, as
    # `requests.post` does. (One shared client: building one per coroutine costs the loop ~20 ms each.)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients if keep_alive else 0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in next_index:
            outcome, seconds, _ = await one_request(client, url, queries[i % len(queries)])
            outcomes[outcome] += 1
            if outcome == "200":
                latencies.append(seconds)

    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return latencies, outcomes, time.perf_counter() - started


def open_stalled(url: str) -> socket.socket:
    """A request whose head is sent and whose body never finishes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"queries\": [\"Ed")
    return sock


def stalled_closed(sock: socket.socket) -> str:
    sock.settimeout(0.5)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "still open"
    except OSError as exc:
        return f"closed ({type(exc).__name__})"
    finally:
        sock.close()
    return f"answered {data.split(b' ', 2)[1].decode()} and closed" if data else "closed"


def scenario_load(args: argparse.Namespace, *, clients: int, requests: int, stalled: bool) -> None:
    server = ServerProcess(args)
    try:
        sock = open_stalled(server.url) if stalled else None
        opened = time.monotonic()
        latencies, outcomes, seconds = asyncio.run(run_clients(server.url, clients, requests, args.keep_alive))
        label = f"{clients} clients" + (" + 1 stalled half-sent request" if stalled else "")
        print(f"[{'stalled' if stalled else 'load'}] {label}: {summary(latencies, outcomes, seconds)}")
        if sock is not None:
            # Past the server's read timeout (10 s by default) a stalled request must have been dropped.
            time.sleep(max(0.0, opened + args.stalled_wait - time.monotonic()))
            print(f"[stalled] the stalled connection {args.stalled_wait:g} s after it was opened: "
                  f"{stalled_closed(sock)}")
    finally:
        server.close()


async def overload_round(url: str, clients: int, per_client: int) -> dict:
    queries = questions()
    outcomes: Counter = Counter()
    health_latencies: list[float] = []
    health_failures = 0
    done = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        for i in range(per_client):
            outcome, _, headers = await one_request(client, url, queries[(offset + i) % len(queries)])
            if outcome == "503":
                outcome += " +Retry-After" if "retry-after" in headers else " no Retry-After"
            outcomes[outcome] += 1

    async def health_loop() -> None:
        nonlocal health_failures
        async with httpx.AsyncClient(timeout=10) as client:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    ok = (await client.get(f"{url}/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                health_latencies.append(time.perf_counter() - started)
                health_failures += not ok
                await asyncio.sleep(0.05)

    poller = asyncio.create_task(health_loop())
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, c) for c in range(clients)))
        seconds = time.perf_counter() - started
    done.set()
    await poller
    return {
        "outcomes": dict(outcomes),
        "seconds": round(seconds, 2),
        "health_polls": len(health_latencies),
        "health_failures": health_failures,
        "health_max_ms": round(max(health_latencies, default=0) * 1000, 1),
    }


def scenario_overload(args: argparse.Namespace) -> None:
    options = {} if args.baseline_server else {
        "queue_limit": args.queue_limit, "max_batch_queries": args.overload_max_batch
    }
    server = ServerProcess(args, **options)
    try:
        burst = asyncio.run(overload_round(server.url, args.overload_clients, args.overload_per_client))
        print(f"[overload] queue limit {args.queue_limit}, {args.overload_clients} clients x "
              f"{args.overload_per_client}: {burst}")
        calm = asyncio.run(overload_round(server.url, 4, 10))
        print(f"[overload] after the burst, 4 clients x 10: {calm['outcomes']}")
    finally:
        server.close()


class TokenCounter:
    """Wraps a backend's `generate` to add up the tokens it wrote."""

    def __init__(self, backend):
        self.tokens = 0
        self.calls = 0
        original = backend.generate

        def generate(prompts, params):
            completions = original(prompts, params)
            self.calls += 1
            self.tokens += sum(c.completion_tokens for c in completions)
            return completions

        backend.generate = generate


def scenario_simulated(args: argparse.Namespace) -> None:
    from zerosearch_lite.simulator.factory import build_engine
    from zerosearch_lite.simulator.server import RetrievalServer

    queries = questions()[: args.sim_requests]
    for backend_name in args.sim_backends:
        loaded = time.perf_counter()
        engine = build_engine("simulated", simulator_backend=backend_name, use_cache=False)
        print(f"[simulated] {backend_name}: loaded in {time.perf_counter() - loaded:.1f} s")
        counter = TokenCounter(engine.backend)
        for label, max_batch in (("batched", 64), ("unbatched", 1)):
            counter.tokens = counter.calls = 0
            settings = {"max_batch_queries": max_batch, "batch_window_ms": 50, "answer_timeout_s": 3600}
            with RetrievalServer(engine, **settings) as server:

                async def burst(url: str = server.url) -> list[str]:
                    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
                    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
                        results = await asyncio.gather(*(one_request(client, url, q, args.k) for q in queries))
                    return [outcome for outcome, _, _ in results]

                started = time.perf_counter()
                outcomes = asyncio.run(burst())
                seconds = time.perf_counter() - started
            print(f"[simulated] {backend_name} {label}: {len(queries)} concurrent requests, k={args.k}: "
                  f"{seconds:.1f} s wall, {counter.calls} generate calls, {counter.tokens} tokens, "
                  f"{counter.tokens / seconds:.1f} tokens/s; statuses {dict(Counter(outcomes))}")
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+", choices=["load", "stalled", "overload", "simulated"])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stalled-clients", type=int, default=40)
    parser.add_argument("--stalled-requests", type=int, default=400)
    parser.add_argument("--stalled-wait", type=float, default=11.0, help="When to look at the stalled socket.")
    parser.add_argument("--keep-alive", action="store_true", help="Reuse one connection per client.")
    parser.add_argument("--queue-limit", type=int, default=8)
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-per-client", type=int, default=5)
    parser.add_argument("--overload-max-batch", type=int, default=64, help="--max-batch-queries in overload.")
    parser.add_argument("--sim-backends", nargs="+", default=["llama.cpp", "transformers"])
    parser.add_argument("--sim-requests", type=int, default=16)
    parser.add_argument("-k", type=int, default=3, help="Documents per simulated query.")
    parser.add_argument("--baseline-server", help="Path of an older server.py to measure instead of ours.")
    args = parser.parse_args()
    for name in args.scenarios:
        if name == "load":
            scenario_load(args, clients=args.clients, requests=args.requests, stalled=False)
        elif name == "stalled":
            scenario_load(args, clients=args.stalled_clients, requests=args.stalled_requests, stalled=True)
        elif name == "overload":
            scenario_overload(args)
        else:
            scenario_simulated(args)


if __name__ == "__main__":
    main()
