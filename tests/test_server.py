"""The memory server over 127.0.0.1: the real openai and anthropic SDKs and plain httpx, in front of
the scripted upstream, on both backends."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from headroom._scripted_server import ScriptedServer  # noqa: E402
from headroom.memory._backends import open_store  # noqa: E402
from headroom.server import ServerConfig  # noqa: E402

from .server import RunningServer  # noqa: E402

ADMIN = "admin-token-for-tests"


@pytest.fixture
def upstream():
    with ScriptedServer() as server:
        yield server


def start(upstream, db_path, local_embedder, **options):
    config = ServerConfig(upstream=upstream.base_url, secret=b"test-secret", admin_token=ADMIN, **options)
    store = open_store(db_path, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim)
    return RunningServer(config, embedder=local_embedder, store=store)


@pytest.fixture
def server(upstream, db_path, local_embedder):
    with start(upstream, db_path, local_embedder) as running:
        yield running


def chat(server, key="key-alice", **options):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **options)


def admin(server, method, path, **kwargs):
    return httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs)


def whoami(server, key):
    return httpx.get(server.url + "/v1/memory/whoami", headers={"Authorization": f"Bearer {key}"}).json()["user_id"]


def memories(server, key):
    server.app.state.users.flush(10)
    listed = admin(server, "GET", f"/v1/memory/users/{whoami(server, key)}/memories")
    assert listed.status_code == 200
    return [m["text"] for m in listed.json()["memories"]]


def injected(upstream) -> str:
    """What the last chat request sent upstream said, all messages together."""
    body = upstream.requests[-1].body
    return json.dumps(body.get("messages")) + json.dumps(body.get("system"))


def test_openai_sdk_gets_answers_without_the_block_and_memory_is_kept(server, upstream):
    client = chat(server)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
    assert reply.choices[0].message.content == "Thanks, noted: Prefers Rust."
    assert "<memory>" in upstream.requests[-1].body["messages"][0]["content"]  # the instruction went up
    assert memories(server, "key-alice") == ["Prefers Rust"]
    again = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Which programming language do I prefer?"}])
    assert "Prefers Rust" in injected(upstream)
    assert "Prefers Rust" in again.choices[0].message.content
    assert "<memory>" not in again.choices[0].message.content


def test_openai_streaming_strips_the_block_as_it_passes(server, upstream):
    stream = chat(server).chat.completions.create(
        model="m", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "We use PostgreSQL."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Thanks, noted: Uses PostgreSQL."
    assert chunks[-1].usage is not None  # the SDK's own chunks, all of them, in order
    assert memories(server, "key-alice") == ["Uses PostgreSQL"]


def test_async_openai_sdk_plain_and_streaming(server, upstream):
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="key-async", max_retries=0)
        plain = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I love tea."}])
        stream = await client.chat.completions.create(model="m", stream=True,
                                                      messages=[{"role": "user", "content": "We use Go."}])
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return plain.choices[0].message.content, streamed

    plain, streamed = asyncio.run(run())
    assert plain == "Thanks, noted: Prefers tea." and streamed == "Thanks, noted: Uses Go."
    assert sorted(memories(server, "key-async")) == ["Prefers tea", "Uses Go"]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_through_the_messages_api(server, upstream, stream):
    client = anthropic.Anthropic(base_url=server.url, api_key="key-claude", max_retries=0)
    request = {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "I prefer Haskell."}]}
    if stream:
        with client.messages.stream(**request) as events:
            text = "".join(events.text_stream)
    else:
        text = client.messages.create(**request).content[0].text
    assert text == "Thanks, noted: Prefers Haskell."
    assert "<memory>" in upstream.requests[-1].body["system"]
    assert memories(server, "key-claude") == ["Prefers Haskell"]


def test_async_anthropic_streaming(server, upstream):
    async def run() -> str:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="key-claude-async", max_retries=0)
        stream = await client.messages.create(model="c", max_tokens=50, stream=True,
                                              messages=[{"role": "user", "content": "We use Kafka."}])
        text = "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])
        await client.close()
        return text

    assert asyncio.run(run()) == "Thanks, noted: Uses Kafka."
    assert memories(server, "key-claude-async") == ["Uses Kafka"]


def test_two_api_keys_never_see_each_others_memories(server, upstream):
    chat(server, "key-one").chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
    chat(server, "key-two").chat.completions.create(model="m", messages=[{"role": "user", "content": "Which programming language do I prefer?"}])
    assert "Rust" not in injected(upstream)
    chat(server, "key-one").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Which programming language do I prefer?"}])
    assert "Prefers Rust" in injected(upstream)  # the question finds the memory, for its owner
    assert whoami(server, "key-one") != whoami(server, "key-two")
    assert memories(server, "key-two") == []
    # A header naming another user is not honoured unless the server was told to trust it.
    one = whoami(server, "key-one")
    chat(server, "key-two", default_headers={"X-Memory-User": one}).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Which programming language do I prefer?"}])
    assert "Rust" not in injected(upstream)
    assert one.startswith("key-") and "key-one" not in one  # a keyed hash, never the key


def test_the_user_header_is_honoured_when_trusted(upstream, db_path, local_embedder):
    with start(upstream, db_path, local_embedder, trust_user_header=True) as server:
        for key in ("key-a", "key-b"):
            chat(server, key, default_headers={"X-Memory-User": "team-7"}).chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"I prefer {key}."}])
        listed = admin(server, "GET", "/v1/memory/users/team-7/memories").json()["memories"]
        assert sorted(m["text"] for m in listed) == ["Prefers key-a", "Prefers key-b"]
        bad = httpx.post(server.url + "/v1/chat/completions", json={"model": "m", "messages": []},
                         headers={"X-Memory-User": "u" * 5000, "Authorization": "Bearer k"})
        assert bad.status_code == 400 and "user_id is longer" in bad.json()["error"]["message"]
        assert 'headroom_requests_total{route="chat.completions",status="400"} 1' in httpx.get(server.url + "/metrics").text


def test_opting_out_sends_the_request_as_written(server, upstream):
    client = chat(server, default_headers={"X-Memory": "off"})
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
    assert upstream.requests[-1].body["messages"] == [{"role": "user", "content": "I prefer Rust."}]
    assert reply.choices[0].message.content == "Thanks, noted: Prefers Rust."  # no instruction, no block
    assert "x-memory" not in {k.lower() for k in upstream.requests[-1].headers}
    assert memories(server, "key-alice") == []


def test_upstream_errors_reach_the_caller_unchanged(server, upstream):
    upstream.handlers["/v1/chat/completions"] = lambda body: (
        429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "7", "x-request-id": "r1"})
    with pytest.raises(openai.RateLimitError) as caught:
        chat(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-request-id"] == "r1"
    assert caught.value.body == {"message": "slow down", "type": "rate_limit"}
    upstream.handlers["/v1/chat/completions"] = lambda body: (500, {"error": {"message": "boom"}})
    with pytest.raises(openai.InternalServerError, match="boom"):
        chat(server).chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
    upstream.handlers["/v1/messages"] = lambda body: (529, {"type": "error", "error": {"type": "overloaded_error",
                                                                                       "message": "busy"}})
    with pytest.raises(anthropic.APIStatusError, match="busy") as failed:
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0).messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 529


def test_an_upstream_that_does_not_answer_in_time_gives_504(upstream, db_path, local_embedder):
    upstream.handlers["/v1/chat/completions"] = lambda body: (time.sleep(2), (200, {}))[1]
    with start(upstream, db_path, local_embedder, timeout=0.3) as server:
        with pytest.raises(openai.APIStatusError) as caught:
            chat(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 504
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServerConfig(upstream=f"http://127.0.0.1:{port}/v1", secret=b"s")
    store = open_store(db_path, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim)
    with RunningServer(config, embedder=local_embedder, store=store) as unreachable:
        with pytest.raises(openai.APIStatusError) as caught:
            chat(unreachable).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 502


def test_upstream_connections_are_kept_alive_until_the_upstream_stops(db_path, local_embedder):
    upstream = ScriptedServer(keep_alive=True).start()
    try:
        with start(upstream, db_path, local_embedder) as server:
            client = chat(server, "key-alive")
            for said in ("I prefer Rust.", "Which language for a CLI?", "And for scripts?"):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": said}])
            assert len(upstream._httpd.connections) == 1  # three calls, one pooled connection
            upstream.stop()
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert caught.value.status_code == 502
            assert memories(server, "key-alive") == ["Prefers Rust"]
    finally:
        upstream.stop()


def test_a_client_that_leaves_mid_stream_costs_nothing(server, upstream):
    upstream.stream_delay = 0.02
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": "Bearer key-gone"},
                      json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "I prefer Rust."}]},
                      timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    time.sleep(0.3)
    assert memories(server, "key-gone") == []  # its block never arrived whole: nothing stored
    upstream.stream_delay = 0.0
    reply = chat(server, "key-gone").chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Go."}])
    assert reply.choices[0].message.content == "Thanks, noted: Prefers Go."


def test_other_api_calls_pass_through(server, upstream):
    upstream.handlers["GET /v1/models"] = lambda body: (200, {"object": "list", "data": [{"id": "m", "object": "model",
                                                                                        "created": 0, "owned_by": "x"}]})
    client = chat(server)
    assert [m.id for m in client.models.list()] == ["m"]
    vectors = client.embeddings.create(model="e", input=["a", "b"])
    assert len(vectors.data) == 2
    assert upstream.requests[-1].path == "/v1/embeddings"
    assert {k.lower(): v for k, v in upstream.requests[-1].headers.items()}["authorization"] == "Bearer key-alice"


def test_health_and_metrics(server, upstream):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    chat(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
    server.app.state.users.flush(10)
    text = httpx.get(server.url + "/metrics").text
    assert 'headroom_requests_total{route="chat.completions",status="200"} 1' in text
    assert 'headroom_upstream_seconds_count{route="chat.completions"} 1' in text
    assert "headroom_memories_stored_total 1" in text


def test_memory_rest_api(server, upstream, monkeypatch):
    assert httpx.get(server.url + "/v1/memory/users").status_code == 401
    assert httpx.get(server.url + "/v1/memory/users", headers={"Authorization": "Bearer wrong"}).status_code == 401
    base = "/v1/memory/users/bob"
    added = admin(server, "POST", base + "/memories", json={"text": "Is allergic to peanuts", "category": "fact"})
    assert added.status_code == 201
    memory_id = added.json()["id"]
    admin(server, "POST", base + "/memories", json={"text": "Prefers window seats", "category": "preference"})
    found = admin(server, "POST", base + "/search", json={"query": "food to avoid", "top_k": 1}).json()["results"]
    assert [r["text"] for r in found] == ["Is allergic to peanuts"] and 0 < found[0]["score"] <= 1
    assert admin(server, "GET", f"{base}/memories/{memory_id}").json()["text"] == "Is allergic to peanuts"
    assert len(admin(server, "GET", f"{base}/memories/{memory_id}/history").json()["versions"]) == 1
    assert admin(server, "GET", base + "/stats").json()["total_memories"] == 2
    assert "db_path" not in admin(server, "GET", base + "/stats").json()
    monkeypatch.setattr("headroom.server._rest._EXPORT_BATCH", 1)  # one row per read: the batches join up
    lines = admin(server, "GET", base + "/export").text.splitlines()
    assert json.loads(lines[0])["headroom_export"] == 1 and len(lines) == 3 and json.loads(lines[1])["vector"]
    assert sorted(json.loads(line)["text"] for line in lines[1:]) == ["Is allergic to peanuts", "Prefers window seats"]
    assert [u["user_id"] for u in admin(server, "GET", "/v1/memory/users").json()["users"]] == ["bob"]
    assert admin(server, "DELETE", f"{base}/memories/{memory_id}").status_code == 200
    missing = admin(server, "GET", f"{base}/memories/{memory_id}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    bad = admin(server, "POST", base + "/memories", json={"text": "", "category": "fact"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "InvalidInputError"
    assert admin(server, "POST", base + "/memories", content=b"{not json").status_code == 400
    assert admin(server, "DELETE", base).json() == {"deleted": 1}
    assert admin(server, "GET", base + "/memories").json() == {"memories": []}


def test_the_rest_api_is_off_without_an_admin_token(upstream, db_path, local_embedder):
    config = ServerConfig(upstream=upstream.base_url, secret=b"s")
    store = open_store(db_path, embedding_model=local_embedder.name, embedding_dim=local_embedder.dim)
    with RunningServer(config, embedder=local_embedder, store=store) as server:
        assert httpx.get(server.url + "/v1/memory/users", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 403


def test_mcp_tools_over_streamable_http(server, upstream):
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session(key: str, steps):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            async with Client(streamable_http_client(server.url + "/mcp", http_client=http)) as client:
                return await steps(client)

    async def remember(client):
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        stored = await client.call_tool("remember", {"text": "Is allergic to peanuts", "category": "fact"})
        return tools, stored

    async def recall(client):
        found = await client.call_tool("recall", {"query": "any food to avoid at dinner?"})
        listed = await client.call_tool("list_memories", {})
        return found, listed

    tools, stored = asyncio.run(session("key-mcp", remember))
    assert tools == ["forget", "list_memories", "recall", "remember"]
    assert not stored.is_error
    found, listed = asyncio.run(session("key-mcp", recall))
    assert "Is allergic to peanuts" in json.dumps(found.structured_content)
    other, _ = asyncio.run(session("key-someone-else", recall))
    assert "peanuts" not in json.dumps(other.structured_content)
    # The proxy's chat calls see what the tool stored: one store, one user per key.
    assert memories(server, "key-mcp") == ["Is allergic to peanuts"]


def test_mcp_over_stdio_and_serve_from_the_command_line(upstream, sqlite_path, tmp_path):
    """Both commands as an agent and an app run them: real subprocesses."""
    import os
    import subprocess
    import sys

    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    env = {**os.environ, "HEADROOM_MEMORY_DB": sqlite_path, "HEADROOM_SERVER_SECRET": "s"}
    command = [sys.executable, "-m", "headroom.cli"]
    stdio = StdioServerParameters(command=command[0], args=[*command[1:], "mcp", "--user", "dana"], env=env)

    async def use() -> tuple[Any, Any]:
        async with Client(stdio) as client:
            await client.call_tool("remember", {"text": "Prefers aisle seats", "category": "preference"})
            return await client.call_tool("recall", {"query": "where do I like to sit on planes?"}), \
                await client.call_tool("forget", {"memory_id": "nope"})

    found, missing = asyncio.run(use())
    assert "Prefers aisle seats" in json.dumps(found.structured_content)
    assert "False" in str(missing.content) or "false" in json.dumps(missing.structured_content)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([*command, "serve", "--upstream", upstream.base_url, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="key-cli", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Terraform."}])
        assert reply.choices[0].message.content == "Thanks, noted: Uses Terraform."
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -15) and "Application shutdown complete" in err, err  # uvicorn re-raises SIGTERM
    assert "key-cli" not in err and "Terraform" not in err  # neither keys nor memories reach the log
    from headroom.memory import open_memory
    from headroom.server._config import ServerConfig, user_of
    user = user_of({"authorization": "Bearer key-cli"}, ServerConfig(upstream="", secret=b"s"))
    with open_memory(user, sqlite_path) as memory:  # graceful shutdown embedded it: searchable at once
        assert [m.text for m, _ in memory.search("infrastructure as code tool")] == ["Uses Terraform"]


def test_background_mode_extracts_every_users_turns_in_one_pool(upstream, db_path, local_embedder):
    with start(upstream, db_path, local_embedder, mode="background", extraction_key="server-key") as server:
        reply = chat(server, "key-bg").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
        assert "<memory>" not in upstream.chat_requests()[0]["messages"][0]["content"]  # not instructed
        assert reply.choices[0].message.content == "Thanks, noted: Prefers Rust."
        with anthropic.Anthropic(base_url=server.url, api_key="key-bg2", max_retries=0).messages.stream(
                model="c", max_tokens=50, messages=[{"role": "user", "content": "We use Kafka."}]) as events:
            assert "".join(events.text_stream) == "Thanks, noted: Uses Kafka."
        deadline = time.monotonic() + 30
        while (memories(server, "key-bg"), memories(server, "key-bg2")) != (["Prefers Rust"], ["Uses Kafka"]):
            assert time.monotonic() < deadline, (memories(server, "key-bg"), memories(server, "key-bg2"))
            time.sleep(0.1)
        extraction = [r for r in upstream.requests if r.body.get("max_tokens") == 512]
        assert {r.path for r in extraction} == {"/v1/chat/completions", "/v1/messages"}  # each in its own API
        assert all("server-key" in json.dumps(r.headers) for r in extraction)  # the server's key, not a caller's
        assert "headroom_queue_depth 0" in httpx.get(server.url + "/metrics").text


def test_fast_mode_with_fallback_extracts_a_reply_that_gave_no_note(upstream, db_path, local_embedder):
    from headroom._scripted_server import rule_based_reply

    def forgetful(body):  # the instructed call answers without a block; the extraction call by the rules
        return rule_based_reply(body) if body.get("max_tokens") == 512 else "Rust is a good pick."

    upstream.script_chat(forgetful)
    with start(upstream, db_path, local_embedder, fallback_extraction=True, extraction_key="server-key") as server:
        reply = chat(server, "key-ff").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
        assert reply.choices[0].message.content == "Rust is a good pick."
        assert "<memory>" in upstream.chat_requests()[0]["messages"][0]["content"]  # instructed: fast mode
        deadline = time.monotonic() + 30
        while memories(server, "key-ff") != ["Prefers Rust"]:
            assert time.monotonic() < deadline, memories(server, "key-ff")
            time.sleep(0.1)
        extraction = [r for r in upstream.requests if r.body.get("max_tokens") == 512]
        assert len(extraction) == 1 and "server-key" in json.dumps(extraction[0].headers)


def test_stopping_the_server_drains_queued_extractions(upstream, db_path, local_embedder):
    from headroom._scripted_server import rule_based_reply
    from headroom.memory import open_memory
    from headroom.server._config import user_of

    def slow_extraction(body):
        if body.get("max_tokens") == 512:
            time.sleep(1.0)
        return rule_based_reply(body)

    upstream.script_chat(slow_extraction)
    with start(upstream, db_path, local_embedder, mode="background", extraction_key="k") as server:
        chat(server, "key-late").chat.completions.create(model="m", messages=[{"role": "user", "content": "We use Nix."}])
        assert memories(server, "key-late") == []  # still being extracted when the server is told to stop
    user = user_of({"authorization": "Bearer key-late"}, ServerConfig(upstream="", secret=b"test-secret"))
    with open_memory(user, db_path, embedder=local_embedder) as memory:
        assert [m.text for m in memory.get_all()] == ["Uses Nix"]


def test_structured_output_asks_upstream_for_json_and_gives_the_caller_the_answer(upstream, db_path, local_embedder):
    from headroom.memory._structured import reply_schema

    with start(upstream, db_path, local_embedder, structured_output=True) as server:
        client = chat(server, "key-json")
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Rust."}])
        streamed = chat(server, "key-json2").chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "We use Nix."}])
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        sent = upstream.chat_requests()[0]
        assert sent["response_format"]["json_schema"]["schema"] == reply_schema(0)
        assert reply.choices[0].message.content == "Thanks, noted: Prefers Rust."
        assert text == "Thanks, noted: Uses Nix."
        assert (memories(server, "key-json"), memories(server, "key-json2")) == (["Prefers Rust"], ["Uses Nix"])
