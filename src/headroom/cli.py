"""The ``headroom-memory`` command: see, search, fix, export and forget what is remembered.

Every data command takes ``--db PATH`` (default ``$HEADROOM_MEMORY_DB``, else
``~/.headroom/memory.db``). Output is a table in a terminal and JSON lines when piped or with
``--json``. Exit codes: 0 done; 1 the memory refused (bad input, storage, embedding model); 2 a
usage error; 4 no such memory or user.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import click

__all__ = ["main"]

EXIT_REFUSED = 1
EXIT_NOT_FOUND = 4
_BATCH = 256


class _Context:
    def __init__(self, db: str | None, embedding_model: str | None, as_json: bool | None) -> None:
        self.db = db
        self.embedding_model = embedding_model
        self.as_json = as_json if as_json is not None else not sys.stdout.isatty()
        self._embedder: Any = None
        self._store: Any = None

    def embedder(self) -> Any:
        if self._embedder is None:
            from headroom.memory._backends import embedder_for

            self._embedder = embedder_for(self.db, True, self.embedding_model)
        return self._embedder

    def store(self) -> Any:
        if self._store is None:
            from headroom.memory._backends import open_store

            embedder = self.embedder()
            self._store = open_store(self.db, embedding_model=embedder.name, embedding_dim=embedder.dim)
        return self._store

    def memory(self, user_id: str) -> Any:
        from headroom.memory import UserMemory

        return UserMemory(user_id, self.store(), self.embedder())

    def emit(self, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
        """Rows as JSON lines, or as a table with ``columns``."""
        rows = list(rows)
        if self.as_json:
            for row in rows:
                click.echo(json.dumps(row, ensure_ascii=False))
            return
        if not rows:
            click.echo("(none)")
            return
        cells = [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [min(60, max(len(c), *(len(r[i]) for r in cells))) for i, c in enumerate(columns)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        for row_cells in cells:
            click.echo("  ".join(v[:w].ljust(w) for v, w in zip(row_cells, widths)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:  # POSIX seconds
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else " ".join(str(value).split())


def memory_json(memory: Any) -> dict[str, Any]:
    from headroom.memory._wire import memory_json  # the memory package loads only when a command runs

    return memory_json(memory)


def export_row(memory: Any, vector: Any) -> dict[str, Any]:
    from headroom.memory._wire import export_row

    return export_row(memory, vector)


def _fail(code: int, message: str) -> None:
    click.echo(f"headroom-memory: {message}", err=True)
    sys.exit(code)


def _guarded(run: Any) -> Any:
    """Run a command body; the library's typed errors become a message and an exit code."""
    from headroom.memory import HeadroomMemoryError, NotFoundError

    try:
        return run()
    except NotFoundError as exc:
        _fail(EXIT_NOT_FOUND, str(exc))
    except HeadroomMemoryError as exc:
        _fail(EXIT_REFUSED, str(exc))


def _owner(ctx: _Context, memory_id: str) -> str:
    owner = ctx.store().owner(memory_id)
    if owner is None:
        _fail(EXIT_NOT_FOUND, f"no memory {memory_id!r}")
    return str(owner)


db_option = click.option("--db", envvar="HEADROOM_MEMORY_DB", default=None,
                         help="the memory file or postgresql:// URL (default: $HEADROOM_MEMORY_DB or ~/.headroom/memory.db)")
user_option = click.option("-u", "--user", "user_id", required=True, help="the user id")


@click.group(epilog="Exit codes: 0 done; 1 refused (bad input, storage, model); 2 usage; 4 not found.")
@db_option
@click.option("--embedding-model", default=None, help="the file's embedding model (default: the local MiniLM)")
@click.option("--json/--table", "as_json", default=None, help="JSON lines (default when piped) or a table")
@click.pass_context
def main(click_ctx: click.Context, db: str | None, embedding_model: str | None, as_json: bool | None) -> None:
    """Persistent memory for LLM applications: inspect and manage what is remembered."""
    click_ctx.obj = _Context(db, embedding_model, as_json)
    click_ctx.call_on_close(lambda: click_ctx.obj._store.close() if click_ctx.obj._store else None)


@main.command()
@click.pass_obj
def users(ctx: _Context) -> None:
    """Every user in the file: live memories and the last write."""
    ctx.emit(_guarded(lambda: ctx.store().users()), ["user_id", "memories", "last_write"])


@main.command("list")
@user_option
@click.option("--category", type=click.Choice(["preference", "fact", "context"]))
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="written on or after (UTC)")
@click.pass_obj
def list_(ctx: _Context, user_id: str, category: str | None, since: datetime | None) -> None:
    """A user's live memories, oldest first."""
    found = _guarded(lambda: ctx.memory(user_id).get_all(category))
    if since is not None:
        floor = since.replace(tzinfo=timezone.utc).timestamp()
        found = [m for m in found if m.updated_at.timestamp() >= floor]
    ctx.emit(map(memory_json, found), ["id", "category", "text", "updated_at"])


@main.command()
@user_option
@click.argument("query")
@click.option("-k", "--top-k", default=5, show_default=True)
@click.pass_obj
def search(ctx: _Context, user_id: str, query: str, top_k: int) -> None:
    """A user's memories best matching QUERY, ranked as the wrappers rank them, and why: the cosine
    similarity and the keyword score (0 to 1; the query's best keyword match is 1)."""
    found = _guarded(lambda: ctx.memory(user_id).explain(query, top_k=top_k))
    ctx.emit(({**memory_json(m), "cosine": round(cosine, 4), "keyword": round(keyword, 4)} for m, cosine, keyword in found),
             ["id", "cosine", "keyword", "category", "text"])


@main.command()
@user_option
@click.argument("text")
@click.option("--category", type=click.Choice(["preference", "fact", "context"]), default="fact", show_default=True)
@click.pass_obj
def add(ctx: _Context, user_id: str, text: str, category: str) -> None:
    """Remember TEXT for a user (a text the user already has gives that memory)."""
    memory = _guarded(lambda: ctx.memory(user_id).add(text, category))
    ctx.emit([memory_json(memory)], ["id", "category", "text"])


@main.command()
@click.argument("memory_id")
@click.argument("text")
@click.pass_obj
def edit(ctx: _Context, memory_id: str, text: str) -> None:
    """Replace the text of a memory (its vector is made again)."""
    user_id = _owner(ctx, memory_id)
    memory = _guarded(lambda: ctx.memory(user_id).update(memory_id, text=text))
    ctx.emit([memory_json(memory)], ["id", "category", "text"])


@main.command()
@click.argument("memory_id")
@click.pass_obj
def delete(ctx: _Context, memory_id: str) -> None:
    """Delete a memory (and its earlier versions)."""
    user_id = _owner(ctx, memory_id)
    _guarded(lambda: ctx.memory(user_id).delete(memory_id))
    ctx.emit([{"deleted": memory_id, "user_id": user_id}], ["deleted", "user_id"])


@main.command()
@click.argument("memory_id")
@click.pass_obj
def history(ctx: _Context, memory_id: str) -> None:
    """Every version of a memory, oldest first."""
    user_id = _owner(ctx, memory_id)
    versions = _guarded(lambda: ctx.memory(user_id).history(memory_id))
    ctx.emit(map(memory_json, versions), ["id", "text", "updated_at", "superseded_by"])


@main.command()
@user_option
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_obj
def forget(ctx: _Context, user_id: str, yes: bool) -> None:
    """Delete every trace of a user: memories, history, queued and failed extractions."""
    if not yes:
        click.confirm(f"Forget everything about {user_id!r}?", abort=True, err=True)
    removed = _guarded(lambda: ctx.memory(user_id).clear())
    ctx.emit([{"user_id": user_id, "forgotten": removed}], ["user_id", "forgotten"])


@main.command()
@click.option("-u", "--user", "user_id", help="one user (default: the whole file)")
@click.pass_obj
def stats(ctx: _Context, user_id: str | None) -> None:
    """Counts: per category for a user, or users and memories for the file."""
    if user_id:
        found = _guarded(lambda: ctx.memory(user_id).stats())
        ctx.emit([{k: v for k, v in found.items() if not isinstance(v, dict)} | found["by_category"]],
                 ["user_id", "total_memories", "preference", "fact", "context", "embedding_model"])
        return
    people = _guarded(lambda: ctx.store().users())
    ctx.emit([{"users": len(people), "memories": sum(p["memories"] for p in people), "db": ctx.store().path,
               "embedding_model": ctx.store().embedding_model}], ["users", "memories", "embedding_model", "db"])


@main.command()
@user_option
@click.option("--older-than", "older", help="only memories last written before this age: 90d, 12h, 30m")
@click.option("--keep-latest", type=click.IntRange(min=0), default=0, help="always keep the N newest")
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
@click.pass_obj
def prune(ctx: _Context, user_id: str, older: str | None, keep_latest: int, dry_run: bool) -> None:
    """Delete a user's old memories: those older than --older-than, beyond the --keep-latest newest."""
    if older is None and not keep_latest:
        _fail(2, "say what to prune: --older-than AGE and/or --keep-latest N")
    cutoff = time.time() - _age_seconds(older) if older else float("inf")
    memory = ctx.memory(user_id)
    newest_first = sorted(_guarded(memory.get_all), key=lambda m: m.updated_at, reverse=True)
    doomed = [m for m in newest_first[keep_latest:] if m.updated_at.timestamp() < cutoff]
    if not dry_run:
        for m in doomed:
            _guarded(lambda m=m: memory.delete(m.id))
    ctx.emit(({**memory_json(m), "action": "would delete" if dry_run else "deleted"} for m in doomed),
             ["action", "id", "text", "updated_at"])


def _age_seconds(text: str) -> float:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        _fail(2, f"--older-than takes a number and a unit (d, h, m, s), not {text!r}")
    return int(text[:-1]) * units[text[-1]]


@main.command("retry-failed")
@click.option("-u", "--user", "user_id", help="one user (default: every user with failed extractions)")
@click.pass_obj
def retry_failed(ctx: _Context, user_id: str | None) -> None:
    """Put failed background extractions back in the queue (a with_memory worker takes them up)."""
    queue = _guarded(lambda: ctx.store().extraction_queue())
    names = [user_id] if user_id else _guarded(queue.failed_users)
    ctx.emit(({"user_id": u, "requeued": _guarded(lambda u=u: queue.retry_failed(u))} for u in names),
             ["user_id", "requeued"])


@main.command()
@click.pass_obj
def doctor(ctx: _Context) -> None:
    """Check the file: integrity, schema, full-text index, vectors, extraction queue, file mode.
    Exits 0 when every check passes, 1 otherwise."""
    checks = _guarded(lambda: ctx.store().health())
    ctx.emit(checks, ["check", "ok", "detail"])
    if not all(c["ok"] for c in checks):
        sys.exit(EXIT_REFUSED)


# -- export and import --------------------------------------------------------------------------------


def _decode(row: dict[str, Any], same_model: bool) -> tuple[Any, Any]:
    import numpy as np

    from headroom.memory import Memory

    def when(value: Any) -> datetime:
        return datetime.fromtimestamp(float(value), timezone.utc)

    memory = Memory(id=row["id"], user_id=row["user_id"], text=row["text"], category=row["category"],
                    source=row.get("source", "manual"), metadata=row.get("metadata") or {},
                    created_at=when(row["created_at"]), updated_at=when(row["updated_at"]),
                    superseded_by=row.get("superseded_by"),
                    superseded_at=when(row["superseded_at"]) if row.get("superseded_at") else None)
    vector = row.get("vector")
    if vector is None or not same_model:
        return memory, None
    return memory, np.frombuffer(base64.b64decode(vector), dtype="<f4").copy()


@main.command("export")
@click.option("-u", "--user", "user_id", help="one user (default: every user)")
@click.option("-o", "--output", type=click.File("w"), default="-", help="file (default: stdout)")
@click.pass_obj
def export(ctx: _Context, user_id: str | None, output: Any) -> None:
    """Every row (superseded ones and vectors included) as JSON lines, after a header line."""
    from headroom.memory._wire import EXPORT_FORMAT

    store = _guarded(ctx.store)
    output.write(json.dumps({"headroom_export": EXPORT_FORMAT, "embedding_model": store.embedding_model,
                             "embedding_dim": store.embedding_dim}) + "\n")

    def write_all() -> int:  # rows are read in batches while they are written: errors may come late
        count = 0
        for memory, vector in store.dump(user_id):
            output.write(json.dumps(export_row(memory, vector), ensure_ascii=False) + "\n")
            count += 1
            if count % 5000 == 0:
                click.echo(f"\rexported {count} rows", err=True, nl=False)
        return count

    click.echo(f"\rexported {_guarded(write_all)} rows", err=True)


def _per_user(lines: Iterator[str]) -> Iterator[list[dict[str, Any]]]:
    """The export's rows, one user's at a time (an export keeps them together): a superseded row
    and its successor are loaded in one transaction."""
    batch: list[dict[str, Any]] = []
    for line in lines:
        if line.strip():
            row = json.loads(line)
            if batch and row["user_id"] != batch[-1]["user_id"]:
                yield batch
                batch = []
            batch.append(row)
    if batch:
        yield batch


@main.command("import")
@click.argument("source", type=click.File("r"))
@click.pass_obj
def import_(ctx: _Context, source: Any) -> None:
    """Load an export: rows the file has are skipped; vectors are kept when the embedding model
    matches, else the texts are embedded again."""
    try:
        header = json.loads(source.readline() or "{}")
    except ValueError:
        header = {}
    from headroom.memory._wire import EXPORT_FORMAT

    if header.get("headroom_export") != EXPORT_FORMAT:
        _fail(EXIT_REFUSED, "not a headroom-memory export (its first line is not the export header)")
    store = _guarded(ctx.store)
    same = header.get("embedding_model") == store.embedding_model and header.get("embedding_dim") == store.embedding_dim
    added = seen = 0
    started = time.monotonic()
    try:
        for batch in _per_user(source):
            rows = [_decode(row, same) for row in batch]
            missing = [i for i, (_, vector) in enumerate(rows) if vector is None]
            for start in range(0, len(missing), _BATCH):
                part = missing[start:start + _BATCH]
                for i, vector in zip(part, ctx.embedder().embed([rows[i][0].text for i in part])):
                    rows[i] = (rows[i][0], vector)
                click.echo(f"\rembedding {batch[0]['user_id']!r}: {start + len(part)}/{len(missing)}", err=True,
                           nl=False)
            added += _guarded(lambda: store.load(rows))
            seen += len(rows)
            click.echo(f"\rimported {seen} rows ({added} new), {seen / max(time.monotonic() - started, 1e-9):.0f}/s",
                       err=True, nl=False)
    except (ValueError, KeyError, TypeError) as exc:
        click.echo("", err=True)
        _fail(EXIT_REFUSED, f"bad row after {seen} rows: {exc!r}")
    click.echo("", err=True)
    ctx.emit([{"rows": seen, "new": added, "re_embedded": not same}], ["rows", "new", "re_embedded"])


@main.command()
@click.option("--from", "source", required=True, help="the store to copy from: a file or a postgresql:// URL")
@click.option("--to", "target", required=True, help="the store to copy to (created if new)")
@click.option("-u", "--user", "user_id", default=None, help="copy only this user")
@click.pass_obj
def migrate(ctx: _Context, source: str, target: str, user_id: str | None) -> None:
    """Copy memories, history and vectors from one store to another (SQLite or PostgreSQL, either
    way). Rows the target has are skipped: running it again adds nothing, and an interrupted
    copy resumes."""
    from headroom.memory._backends import embedder_for, open_store
    from headroom.memory._transfer import copy_memories

    embedder = embedder_for(source, True, ctx.embedding_model)  # vectors are copied: the target keeps the source's
    stores = [_guarded(lambda: open_store(where, embedding_model=embedder.name, embedding_dim=embedder.dim))
              for where in (source, target)]
    try:
        people = _guarded(stores[0].users)
        total = sum(p["rows"] for p in people if user_id in (None, p["user_id"]))
        with click.progressbar(length=total, label="copying", file=sys.stderr, show_pos=True) as bar:
            read, added = _guarded(lambda: copy_memories(stores[0], stores[1], user_id, progress=bar.update))
    finally:
        for store in stores:
            store.close()
    ctx.emit([{"rows": read, "new": added}], ["rows", "new"])


@main.command()
@click.option("--min-memories", type=click.IntRange(1), default=None,
              help="users with more memories than this [default: those searched in the database, over 50,000]")
@click.pass_obj
def index(ctx: _Context, min_memories: int | None) -> None:
    """Build a graph of its own for each large user of a PostgreSQL store that has none.

    A large user's search walks its own HNSW graph in the database, and scans all its rows until it
    has one. The first process to find such a user builds its graph in the background; this builds
    every missing one now (after an import, or with HEADROOM_PG_AUTO_GRAPHS=0). Building takes
    minutes at a million memories; searches and writes go on meanwhile. It builds only what is
    missing, so running it again is cheap."""
    import threading

    from headroom.memory._postgres import PostgresStore
    from headroom.memory._postgres_graphs import build_graphs

    store = ctx.store()
    if not isinstance(store, PostgresStore):
        _fail(EXIT_REFUSED, "only a PostgreSQL store has graphs to build: SQLite searches every user exactly")
    outcome: list[Any] = []
    size = [0]  # memories of the user whose graph is being built

    def build() -> None:
        try:
            outcome.append(build_graphs(store, min_memories or store.memory_rows, progress=announce))
        except BaseException as exc:  # shown by the main thread
            outcome.append(exc)

    def announce(user_id: str, memories: int) -> None:
        size[0] = memories
        click.echo(f"\nbuilding the graph of {user_id!r} ({memories:,} memories)", err=True)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    while worker.is_alive():  # PostgreSQL reports the build's progress: show it
        worker.join(2.0)
        rows = _guarded(lambda: store.query(
            "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index "
            "WHERE relid = 'memories'::regclass", ()))
        for phase, done, total in rows:  # pgvector counts the rows it has read, not how many there are
            total = total or size[0]
            share = f" {min(done, total):,} of {total:,} rows" if done and total else ""
            click.echo(f"\r  {phase}{share}".ljust(60), err=True, nl=False)
    click.echo("", err=True)
    result = outcome[0]
    if isinstance(result, BaseException):
        def again() -> None:
            raise result  # the library's typed errors become a message and exit code here

        _guarded(again)
    ctx.emit([{"user_id": u, "memories": n, "built": built} for u, n, built in result],
             ["user_id", "memories", "built"])


# -- the server ---------------------------------------------------------------------------------------


@main.command()
@click.option("--upstream", envvar="HEADROOM_UPSTREAM", required=True,
              help="the model API to forward to, e.g. https://api.openai.com/v1 ($HEADROOM_UPSTREAM)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--db", "server_db", default=None, help="the memory file or postgresql:// URL (default: --db of the command)")
@click.option("--trust-user-header", is_flag=True,
              help="take the memory user from X-Memory-User (only behind a gateway that sets it)")
@click.option("--admin-token", envvar="HEADROOM_ADMIN_TOKEN", default=None,
              help="bearer token of the memory REST API ($HEADROOM_ADMIN_TOKEN; without it the API is off)")
@click.option("--secret-file", default=None,
              help="the secret that maps API keys to memory users ($HEADROOM_SERVER_SECRET, else ~/.headroom/server-secret)")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--mode", type=click.Choice(["fast", "background"]), default="fast", show_default=True,
              help="fast: the model writes a memory block inline; background: a separate call extracts, "
                   "with $HEADROOM_UPSTREAM_API_KEY")
@click.option("--fallback-extraction", is_flag=True,
              help="fast mode: a reply with no memory block to read is extracted by a separate call, "
                   "with $HEADROOM_UPSTREAM_API_KEY")
@click.option("--structured-output", is_flag=True,
              help="fast mode: ask for chat completions as JSON under a schema (memories, then the answer), for "
                   "upstreams with response_format json_schema (OpenAI, vLLM, llama.cpp)")
@click.pass_obj
def serve(ctx: _Context, upstream: str, host: str, port: int, server_db: str | None, trust_user_header: bool,
          admin_token: str | None, secret_file: str | None, top_k: int, mode: str, fallback_extraction: bool,
          structured_output: bool) -> None:
    """Serve memory to any OpenAI- or Anthropic-API client: point its base URL at this server."""
    import os

    try:
        import uvicorn

        from headroom.server import ServerConfig, create_app, load_secret
    except ImportError as exc:
        _fail(EXIT_REFUSED, f"the server needs the [server] extra: pip install 'headroom-memory[server]' ({exc})")
    extraction_key = os.environ.get("HEADROOM_UPSTREAM_API_KEY")
    if (mode == "background" or fallback_extraction) and not extraction_key:
        click.echo(f"{'background mode' if mode == 'background' else 'fallback extraction'}: "
                   "$HEADROOM_UPSTREAM_API_KEY is not set; extraction calls go without a key", err=True)
    config = ServerConfig(upstream=upstream, secret=load_secret(secret_file), db=server_db or ctx.db,
                          trust_user_header=trust_user_header, admin_token=admin_token, top_k=top_k,
                          mode=mode, extraction_key=extraction_key, host=host,  # type: ignore[arg-type]
                          fallback_extraction=fallback_extraction, structured_output=structured_output)
    app = _guarded(lambda: create_app(config, embedder=ctx.embedder()))
    click.echo(f"memory server on http://{host}:{port}/v1 in front of {config.upstream_root}", err=True)
    # The upstream's Date and Server headers reach the caller, not uvicorn's own beside them.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, server_header=False,
                date_header=False)


@main.command("mcp")
@click.option("-u", "--user", "user_id", envvar="HEADROOM_MEMORY_USER", required=True,
              help="whose memory the tools reach ($HEADROOM_MEMORY_USER)")
@click.pass_obj
def mcp_(ctx: _Context, user_id: str) -> None:
    """Memory as MCP tools over stdio (remember, recall, forget, list_memories), for an agent's MCP config."""
    try:
        from headroom.server._mcp import memory_tools
    except ImportError as exc:
        _fail(EXIT_REFUSED, f"MCP needs the [server] extra: pip install 'headroom-memory[server]' ({exc})")
    memory = _guarded(lambda: ctx.memory(user_id))
    memory_tools(lambda headers: memory).run()  # stdio: stdout carries the protocol, nothing else


# -- the demo and the model ---------------------------------------------------------------------------


@main.command()
@click.option("--base-url", help="an OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or OpenAI)")
@click.option("--model", default="gpt-4o-mini", show_default=True)
@click.option("--db-path", help="memory file (default: a new temporary file)")
@click.option("--user-id", default="developer_jane", show_default=True)
def demo(base_url: str | None, model: str, db_path: str | None, user_id: str) -> None:
    """Run the spec's multi-turn example end to end (a scripted stand-in unless a model is given)."""
    from headroom._demo import demo as run

    sys.exit(run(base_url, model, db_path, user_id))


@main.command()
def warmup() -> None:
    """Prepare the local embedding model once (ONNX export), so the first call is fast."""
    from headroom._demo import warmup as run

    sys.exit(run())


if __name__ == "__main__":
    main()
