"""The memory server's added latency: the same chat call straight to the upstream and through
``headroom-memory serve``, at 1, 10 and 50 concurrent clients, beside the library's own overhead.

    .venv/bin/python bench/proxy.py [--requests 200] [--concurrency 1,10,50]

The upstream is the scripted stand-in (HTTP/1.1, connections kept alive, as real model servers
keep them) and the server a real ``headroom-memory serve``, each in its own process on 127.0.0.1;
clients are threads of this process, each with its own API key (so its own memory user) and 20
memories already stored. Every call asks something its memories answer, so the server searches,
injects, instructs the model and strips the block. Added latency = proxied - direct, per percentile.

The target (added p50 <= the library's own overhead + 2 ms) is measured at one client with the
three calls interleaved (direct, through ``with_fast_memory`` in process, through the server), so
a machine that speeds up or slows down during the run moves all three alike. The table then runs
each path on its own at every concurrency; requests per second are counted over each whole run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import openai

from headroom.memory import LocalEmbedder, open_memory, with_fast_memory
from headroom.server._config import ServerConfig, user_of

SECRET = "bench-secret"
FACTS = ["I prefer Rust for systems work.", "We use PostgreSQL for everything.", "I am a data engineer at a bank.",
         "I love hiking in the Alps.", "I prefer dark mode in every editor."]
MEMORIES = [f"{fact} ({k})" if k else fact for k in range(4) for fact in FACTS]
QUESTIONS = ["Which language should I use for a new CLI tool?", "What database fits my next project?",
             "Any weekend plans you would suggest?", "How should I set up my editor?"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read() if process.stderr else "exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def interleaved(upstream_url: str, proxy_url: str, library: openai.OpenAI, calls: int) -> dict[str, np.ndarray]:
    """Latencies (ms) of the same question straight to the upstream, through the library and
    through the server, one after the other, ``calls`` times."""
    paths = {"direct": openai.OpenAI(base_url=upstream_url, api_key="k", max_retries=0), "library": library,
             "proxied": openai.OpenAI(base_url=proxy_url, api_key="key-0", max_retries=0)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(calls):
        messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        for name, sdk in paths.items():
            started = time.perf_counter()
            sdk.chat.completions.create(model="m", messages=messages)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: np.array(values) for name, values in times.items()}


def run(base_url: str, clients: int, requests: int) -> tuple[np.ndarray, float]:
    """Latencies (ms) of ``requests`` calls per client, and requests per second over the run; a
    failed call fails the benchmark (its figures would hide it)."""
    times: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        sdk = openai.OpenAI(base_url=base_url, api_key=f"key-{n}", max_retries=0)
        mine = []
        for i in range(requests):
            question = QUESTIONS[i % len(QUESTIONS)]
            started = time.perf_counter()
            try:
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": question}])
            except openai.APIError as exc:
                errors.append(exc)
                return
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} clients failed, first: {errors[0]!r}")
    return np.array(times), len(times) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="calls per client (divided by clients above 10)")
    parser.add_argument("--concurrency", default="1,10,50")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    workdir = tempfile.mkdtemp()
    db = os.path.join(workdir, "memory.db")
    env = {**os.environ, "HEADROOM_SERVER_SECRET": SECRET, "HEADROOM_MEMORY_DB": db}
    embedder = LocalEmbedder()
    for n in range(max(levels)):  # 20 memories per user, stored before the server starts
        user = user_of({"authorization": f"Bearer key-{n}"}, ServerConfig(upstream="", secret=SECRET.encode()))
        with open_memory(user, db, embedder=embedder) as memory:
            memory.add_many(MEMORIES)
    upstream = subprocess.Popen([sys.executable, "-c", (
        "from headroom._scripted_server import ScriptedServer; import time; "
        "s = ScriptedServer(keep_alive=True).start(); print(s.base_url, flush=True); time.sleep(1e9)")],
        stdout=subprocess.PIPE, text=True)
    upstream_url = upstream.stdout.readline().strip()  # type: ignore[union-attr]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "headroom.cli", "serve", "--upstream", upstream_url,
                               "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", server)
        proxy_url = f"http://127.0.0.1:{port}/v1"
        run(proxy_url, 1, 20)  # warm: the model, connections, each user's index
        run(upstream_url, 1, 20)

        library = with_fast_memory(openai.OpenAI(base_url=upstream_url, api_key="k", max_retries=0), "key-lib",
                                   db_path=os.path.join(workdir, "library.db"), embedder=embedder)
        library.memory.add_many(MEMORIES)  # the same 20 as each server user
        interleaved(upstream_url, proxy_url, library, 20)  # warm
        paired = interleaved(upstream_url, proxy_url, library, args.requests * 2)
        d50, d99 = np.percentile(paired["direct"], [50, 99])
        l50, l99 = np.percentile(paired["library"], [50, 99])
        p50, p99 = np.percentile(paired["proxied"], [50, 99])
        print(f"one client, interleaved ({args.requests * 2} calls each): direct p50 {d50:.2f} ms; library's own "
              f"overhead p50 {l50 - d50:.2f} / p99 {l99 - d99:.2f} ms; server's added p50 {p50 - d50:.2f} / "
              f"p99 {p99 - d99:.2f} ms; target p50 <= {l50 - d50 + 2:.2f} ms: "
              f"{'met' if p50 - d50 <= l50 - d50 + 2 else 'NOT met'}")
        print("clients  direct p50/p99 ms  proxied p50/p99 ms  added p50/p99 ms  proxied req/s")
        for clients in levels:
            per_client = max(args.requests // max(clients // 10, 1), 20) if clients > 10 else args.requests
            direct, _ = run(upstream_url, clients, per_client)
            proxied, rps = run(proxy_url, clients, per_client)
            d50, d99 = np.percentile(direct, [50, 99])
            p50, p99 = np.percentile(proxied, [50, 99])
            print(f"{clients:7d}  {d50:7.2f} / {d99:7.2f}  {p50:8.2f} / {p99:8.2f}  {p50 - d50:7.2f} / {p99 - d99:7.2f}"
                  f"  {rps:8.1f}", flush=True)
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(30)
        upstream.wait(30)


if __name__ == "__main__":
    main()
