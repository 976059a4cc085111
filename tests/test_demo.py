"""The README's demo command, run as a user runs it."""

import os
import subprocess
import sys

from headroom._scripted_server import ScriptedServer


def demo(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "headroom.cli", "demo", *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_offline_uses_the_labelled_stand_in(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    out = demo("--db-path", str(tmp_path / "demo.db"), env=env)
    assert "SCRIPTED STAND-IN" in out
    stored = out.split("Memories extracted and stored:")[1].split("=== Conversation 2")[0]
    assert "[fact] Uses PostgreSQL" in stored and "[fact] Works at a fintech startup" in stored
    second = out.split("=== Conversation 2")[1]
    assert "(injected)" in second and "[fact] Uses PostgreSQL" in second
    caller_sees = second.split("What the caller gets (block stripped):")[1]
    assert "PostgreSQL" in caller_sees and "<memory>" not in caller_sees
    assert "Stats: 3 memories" in out


def test_demo_against_an_endpoint(tmp_path):
    with ScriptedServer() as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
        out = demo("--base-url", server.base_url, "--model", "my-model", "--db-path", str(tmp_path / "d.db"), env=env)
    assert "SCRIPTED STAND-IN" not in out and f"my-model at {server.base_url}" in out
    assert [body["model"] for body in server.chat_requests()] == ["my-model", "my-model"]
    assert "Uses PostgreSQL" in server.chat_requests()[1]["messages"][-1]["content"]


def test_warmup_exports_the_model_once(tmp_path):
    env = {**os.environ, "HEADROOM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    first = subprocess.run([sys.executable, "-m", "headroom.cli", "warmup"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "exporting it to ONNX and building its int8 variant once" in first.stdout
    assert "ready (all-MiniLM-L6-v2" in first.stdout and ", onnx)" in first.stdout
    assert list((tmp_path / "cache").glob("*.onnx"))
    again = subprocess.run([sys.executable, "-m", "headroom.cli", "warmup"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0 and "exporting" not in again.stdout and ", onnx)" in again.stdout
