"""Soak: several processes and threads on one memory file, then every acknowledged memory checked.

    .venv/bin/python bench/soak.py                       # 4 processes x 4 threads for 60 s
    .venv/bin/python bench/soak.py --kills 100           # then SIGKILL processes at random points

Each worker process runs threads that mix, for 60 s (or until killed): manual adds and searches on
users that every process shares, with_fast_memory calls (the scripted model states a preference,
its memory is written before create returns), with_memory calls (the turn is queued, extracted in
the background), and, on a user of its own, add / update / delete / clear against a model of what
the user must hold. Every acknowledged write is logged after it returns. Afterwards a fresh process
embeds and extracts whatever was left, and the checks run: every acknowledged memory present, none
stored twice, each private user exactly as its model says (runs without kills), PRAGMA
integrity_check ok, and no exception reached a caller (nor an error reached the log). Loopback only:
the model is the scripted stand-in on 127.0.0.1; embeddings are the real local model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

SHARED_USERS = ("shared-a", "shared-b")


class ErrorLog(logging.Handler):
    """Counts what the library logs at ERROR: a memory it could not keep is an error here."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:300])


def work(args: argparse.Namespace) -> None:
    """One worker process: ``--threads`` threads until ``--seconds`` pass (or SIGKILL)."""
    import openai

    from headroom.memory import LocalEmbedder, open_memory, with_fast_memory, with_memory

    errors = ErrorLog()
    logging.getLogger("headroom.memory").addHandler(errors)
    embedder = LocalEmbedder()
    log = open(args.log, "a", buffering=1)
    lock = threading.Lock()
    launch = args.launch

    def ack(**entry: object) -> None:
        with lock:
            log.write(json.dumps(entry) + "\n")

    def model() -> openai.OpenAI:
        return openai.OpenAI(base_url=args.base_url, api_key="x", max_retries=0)

    background = with_memory(model(), user_id=f"bg-{launch}", db_path=args.db, extraction_model="m", embedder=embedder)
    stop = time.monotonic() + args.seconds

    def thread(t: int) -> None:
        rng = random.Random(launch * 100 + t)
        shared = rng.choice(SHARED_USERS)
        manual = open_memory(shared, args.db, embedder=embedder)
        fast = with_fast_memory(model(), user_id=shared, db_path=args.db, embedder=embedder)
        private = open_memory(f"private-{launch}-{t}", args.db, embedder=embedder)
        expected: dict[str, str] = {}  # the private user's memories, id -> text, as they must be
        n = 0
        while time.monotonic() < stop:
            n += 1
            op = rng.choice(["add", "search", "fast", "fast", "background", "private"])
            try:
                if op == "add":
                    memory = manual.add(f"Keeps note {launch} {t} {n} in the ledger")
                    ack(kind="add", user=shared, id=memory.id, text=memory.text)
                elif op == "search":
                    for memory, _ in manual.search(f"note {n} ledger", top_k=5):
                        assert memory.user_id == shared, memory
                elif op == "fast":
                    text = f"I prefer tool {launch} {t} {n}."
                    answer = fast.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
                    assert "<memory" not in (answer.choices[0].message.content or "")
                    ack(kind="fast", user=shared, text=f"Prefers tool {launch} {t} {n}")
                elif op == "background":
                    text = f"I prefer library {launch} {t} {n}."
                    background.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
                    ack(kind="background", user=f"bg-{launch}", text=f"Prefers library {launch} {t} {n}")
                else:
                    action = rng.choice(["add", "add", "update", "delete", "clear"])
                    if action == "add" or not expected:
                        memory = private.add(f"Private fact {launch} {t} {n}")
                        expected[memory.id] = memory.text
                    elif action == "update":
                        target = rng.choice(sorted(expected))
                        expected[target] = private.update(target, text=f"Private fact {launch} {t} {n} revised").text
                    elif action == "delete":
                        target = rng.choice(sorted(expected))
                        assert private.delete(target)
                        del expected[target]
                    else:
                        private.clear()
                        expected.clear()
                    ack(kind="private", user=private.user_id, state=expected)
            except Exception as exc:  # noqa: BLE001 - every exception that reaches a caller is counted
                ack(kind="error", op=op, error=f"{type(exc).__name__}: {exc}"[:300])
        for handle in (manual, fast, private):
            handle.close()

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    print("ready", flush=True)  # the driver kills only processes that are at work
    for t in threads:
        t.join()
    background.close()
    for record in errors.records:
        ack(kind="logged-error", error=record)


def spawn(args: argparse.Namespace, launch: int, seconds: float, log: Path, base_url: str) -> subprocess.Popen:
    command = [sys.executable, __file__, "--work", "--db", args.db, "--base-url", base_url, "--log", str(log),
               "--launch", str(launch), "--threads", str(args.threads), "--seconds", str(seconds)]
    return subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, text=True)


def finish_leftovers(db: str, base_url: str, bg_users: set[str]) -> None:
    """What killed processes left: rows without vectors, queued turns. A new process takes them up."""
    import openai

    from headroom.memory import LocalEmbedder, open_memory, with_memory

    embedder = LocalEmbedder()
    with open_memory(SHARED_USERS[0], db, embedder=embedder) as memory:
        assert memory.flush(timeout=300), "deferred embeddings did not finish"
    for user in sorted(bg_users):
        client = with_memory(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0), user_id=user,
                             db_path=db, extraction_model="m", embedder=embedder)
        assert client.memory.flush(timeout=300), f"extractions of {user} did not finish"
        client.close()


def left_behind(db: str) -> dict[str, int]:
    """What the workers left undone when they ended or were killed: the next process's work."""
    connection = sqlite3.connect(db)
    rows = connection.execute("SELECT count(*) FROM memories WHERE embedding IS NULL AND superseded_by IS NULL")
    jobs = connection.execute("SELECT count(*) FROM extraction_jobs")
    return {"rows_without_vectors": rows.fetchone()[0], "queued_extractions": jobs.fetchone()[0]}


def check(db: str, entries: list[dict], exact_private: bool) -> dict[str, object]:
    connection = sqlite3.connect(db)
    integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    live = connection.execute("SELECT user_id, id, text, embedding IS NULL FROM memories "
                              "WHERE superseded_by IS NULL").fetchall()
    unembedded = sum(1 for row in live if row[3])
    by_text = Counter((user, text) for user, _, text, _ in live)
    ids = {(user, id_) for user, id_, _, _ in live}
    acknowledged = [e for e in entries if e["kind"] in ("add", "fast", "background")]
    missing = [e for e in acknowledged if by_text[(e["user"], e["text"])] == 0
               or (e["kind"] == "add" and (e["user"], e["id"]) not in ids)]
    duplicated = [key for key, count in by_text.items() if count > 1]
    private_wrong = []
    if exact_private:
        final: dict[str, dict] = {}
        for e in entries:
            if e["kind"] == "private":
                final[e["user"]] = e["state"]
        for user, state in final.items():
            held = {id_: text for u, id_, text, _ in live if u == user}
            if held != state:
                private_wrong.append(user)
    errors = [e for e in entries if e["kind"] in ("error", "logged-error")]
    return {"integrity_check": integrity, "acknowledged": len(acknowledged),
            "by_kind": dict(Counter(e["kind"] for e in entries)), "missing": len(missing),
            "duplicated": len(duplicated),
            "private_users_checked": len({e["user"] for e in entries if e["kind"] == "private"}) if exact_private else 0,
            "private_users_wrong": len(private_wrong), "errors_reaching_callers_or_logs": len(errors),
            "unembedded_after": unembedded, "examples": (missing[:3], duplicated[:3], errors[:3])}


def drive(args: argparse.Namespace) -> int:
    from headroom._scripted_server import ScriptedServer

    workdir = Path(tempfile.mkdtemp(prefix="headroom-soak-"))
    args.db = args.db or str(workdir / "soak.db")
    log = workdir / "acks.jsonl"
    launches = 0
    started = time.monotonic()
    with ScriptedServer() as server:
        if args.kills:
            kills, rng = 0, random.Random(7)
            while kills < args.kills:
                procs = []
                for _ in range(args.processes):
                    launches += 1
                    procs.append(spawn(args, launches, 3600, log, server.base_url))
                for proc in procs:
                    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                for proc in procs:  # each dies at a random point of its work, the others working on
                    time.sleep(rng.uniform(0.2, 2.5))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                print(f"  {kills} kills, {time.monotonic() - started:.0f} s", flush=True)
        else:
            procs = []
            for _ in range(args.processes):
                launches += 1
                procs.append(spawn(args, launches, args.seconds, log, server.base_url))
            for proc in procs:
                proc.wait(timeout=args.seconds + 600)
                if proc.returncode != 0:
                    print(f"worker exited with {proc.returncode}")
        run_seconds = time.monotonic() - started
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        left = left_behind(args.db)
        finish_leftovers(args.db, server.base_url, {e["user"] for e in entries if e["kind"] == "background"})
    result = check(args.db, entries, exact_private=not args.kills)
    result.update(left_for_the_next_process=left, processes=args.processes, threads=args.threads, launches=launches, kills=args.kills,
                  run_seconds=round(run_seconds, 1), db=args.db)
    print(json.dumps(result, indent=2))
    healthy = (result["integrity_check"] == "ok" and not result["missing"] and not result["duplicated"]
               and not result["private_users_wrong"] and not result["errors_reaching_callers_or_logs"])
    print("HEALTHY" if healthy else "NOT HEALTHY")
    return 0 if healthy else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL this many worker processes instead")
    parser.add_argument("--db", help="memory file (default: a new temporary one)")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--launch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        work(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
