"""How memory works with a real model: the conversation suite of bench/conversations.py, both modes.

    .venv/bin/python bench/real_model.py                                   # the scripted stand-in
    .venv/bin/python bench/real_model.py --base-url http://127.0.0.1:8089/v1 --model qwen2.5-coder-1.5b-instruct

Runs every user's sessions in order (a session is a new conversation; what was said earlier comes
back only through memory), through ``with_fast_memory`` and through ``with_memory`` (flushed after
each turn, so what a turn stored is known); ``--mode fast-fallback`` is ``with_fast_memory`` with
``fallback_extraction=True``; ``--mode fast-json`` and ``fast-json-fallback`` the same with
``structured_output=True`` (the reply asked for as JSON under the server's schema). Per turn and in total it reports: block compliance (the
raw reply held a block that parsed), facts captured (the turn's fact patterns matched by a live
memory), junk (placeholders, protocol echoes, and memories stored on a small-talk or question turn
unless they state a fact the user gave earlier: a late capture is not junk),
fragments shown to the caller (tags, context blocks, refs), empty replies (no letter or digit), corrections applied
(new fact live, old one gone), facts still live at the end of each user's conversation (a
replacement that loses more than the corrected value shows there), questions whose memory was
injected and used, and latency.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from conversations import PLACEHOLDERS, SUITE, Turn  # noqa: E402

FRAGMENTS = re.compile(r"<\s*/?\s*memor|remembered_context|\[m[0-9a-f]{6}\]|\"memories\"\s*:", re.I)
JUNK = re.compile("|".join(PLACEHOLDERS), re.I)
CONTEXT = re.compile(r"<remembered_context>(.*?)</remembered_context>", re.S)


class Recorder:
    """Between the memory wrapper and the SDK client: keeps what was sent and what the model wrote."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.chat = self
        self.completions = self
        self.calls: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        response = self._client.chat.completions.create(**kwargs)
        self.calls.append({"sent": kwargs, "wrote": response.choices[0].message.content or "",
                           "seconds": time.perf_counter() - started})
        return response

    def close(self) -> None:
        self._client.close()


def _matches(pattern: str, texts: list[str]) -> bool:
    return any(re.search(pattern, text, re.I) for text in texts)


def _compliant(raw: str, structured: bool = False) -> bool:
    from headroom.memory._protocol import BlockParser
    from headroom.memory._structured import JsonReplyParser

    parser = JsonReplyParser() if structured else BlockParser()
    parser.feed(raw)
    parser.finish()
    return parser.blocks > 0 and not any("not valid JSON" in p or "never closed" in p or "holds" in p
                                         for p in parser.problems)


def judge(turn: Turn, answer: str, injected: str, new: list[str], live: list[str],
          stated: tuple[str, ...] = ()) -> dict[str, Any]:
    """What one turn achieved, by the suite's rules; ``stated``: the fact patterns of the user's
    turns so far."""
    junk = [t for t in new if JUNK.search(t) or t.rstrip().endswith("?") or (
        turn.kind in ("smalltalk", "question") and not any(re.search(p, t, re.I) for p in stated))]
    result: dict[str, Any] = {
        "facts": len(turn.facts), "captured": sum(_matches(p, live) for p in turn.facts),
        "stored": new, "junk": junk, "empty": not any(c.isalnum() for c in answer),
        "fragments": FRAGMENTS.findall(answer),
    }
    if turn.kind == "correction":  # the new fact is live, and no live note still states the old one
        stale = [t for t in live if any(re.search(p, t, re.I) for p in turn.replaces)
                 and not any(re.search(p, t, re.I) for p in turn.facts)]
        result["correction_applied"] = all(_matches(p, live) for p in turn.facts) and not stale
    if turn.needs:
        result["injected"] = all(re.search(p, injected, re.I) for p in turn.needs)
        result["used"] = bool(turn.uses and re.search(turn.uses, answer, re.I))
    return result


def run(mode: str, base_url: str, model: str, api_key: str, workdir: Path, max_tokens: int,
        log: Any) -> list[dict[str, Any]]:
    import openai

    from headroom.memory import LocalEmbedder, with_fast_memory, with_memory

    embedder = LocalEmbedder()
    rows: list[dict[str, Any]] = []
    for user in SUITE:
        sdk = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
        recorder, extractor = Recorder(sdk), Recorder(sdk)
        db = str(workdir / f"{mode}.db")
        if mode.startswith("fast"):  # -fallback: turns without a note to read are extracted apart
            client = with_fast_memory(recorder, user_id=user.user_id, db_path=db, embedder=embedder,
                                      fallback_extraction=mode.endswith("-fallback"), extraction_client=extractor,
                                      extraction_model=model, structured_output=mode.startswith("fast-json"))
        else:
            client = with_memory(recorder, user_id=user.user_id, db_path=db, embedder=embedder,
                                 extraction_client=extractor, extraction_model=model)
        stated: tuple[str, ...] = ()
        for number, session in enumerate(user.sessions, 1):
            history: list[dict[str, str]] = []
            for turn in session:
                before = {m.id for m in client.memory.get_all()}
                first_call = len(recorder.calls)  # the instructed call; a second one asks again
                messages = [*history, {"role": "user", "content": turn.text}]
                started = time.perf_counter()
                response = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
                seconds = time.perf_counter() - started
                answer = response.choices[0].message.content or ""
                extractions_before = len(extractor.calls)
                client.memory.flush(timeout=600)
                extraction = extractor.calls[extractions_before:]
                live = client.memory.get_all()
                sent = recorder.calls[first_call]["sent"]["messages"][-1]["content"]
                injected = "".join(CONTEXT.findall(sent if isinstance(sent, str) else json.dumps(sent)))
                stated += turn.facts
                row = judge(turn, answer, injected, [m.text for m in live if m.id not in before],
                            [m.text for m in live], stated)
                raw = recorder.calls[first_call]["wrote"] if mode.startswith("fast") else (extraction[-1]["wrote"] if extraction else "")
                row.update(user=user.user_id, session=number, kind=turn.kind, said=turn.text, answer=answer,
                           asked_again=len(recorder.calls) - first_call > 1,
                           raw=raw, compliant=_compliant(raw, mode.startswith("fast-json"))
                           if (mode.startswith("fast") or extraction) else None,
                           extraction_wrote=extraction[-1]["wrote"] if extraction else None,
                           seconds=round(seconds, 2),
                           extraction_seconds=round(sum(c["seconds"] for c in extraction), 2))
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("user", "session", "kind", "compliant", "captured", "facts",
                                                         "stored", "junk", "empty", "fragments", "seconds")}),
                      file=log, flush=True)
                print("  wrote:", json.dumps(raw[-300:]), file=log, flush=True)
                history += [{"role": "user", "content": turn.text}, {"role": "assistant", "content": answer}]
        # Facts still live at the end of the user's conversation: a replacement that loses more than
        # the corrected value shows here (the values a correction takes back are not counted).
        taken_back = {p for session in user.sessions for turn in session for p in turn.replaces}
        final = [m.text for m in client.memory.get_all()]
        patterns = [p for session in user.sessions for turn in session if turn.kind != "correction"
                    for p in turn.facts if p not in taken_back]
        rows[-1]["kept_at_end"] = [sum(_matches(p, final) for p in patterns), len(patterns)]
        client.close()
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in rows if r["compliant"] is not None]
    stored = sum(len(r["stored"]) for r in rows)
    fact_turns = [r for r in rows if r["facts"]]
    corrections = [r for r in rows if "correction_applied" in r]
    questions = [r for r in rows if "injected" in r]
    seconds = sorted(r["seconds"] for r in rows)
    return {
        "turns": len(rows),
        "block_compliance": f"{sum(r['compliant'] for r in judged)}/{len(judged)}",
        "facts_captured": f"{sum(r['captured'] for r in fact_turns)}/{sum(r['facts'] for r in fact_turns)}",
        "fact_turns_fully_captured": f"{sum(r['captured'] == r['facts'] for r in fact_turns)}/{len(fact_turns)}",
        "stored": stored, "junk": sum(len(r["junk"]) for r in rows),
        "fragments_shown": sum(bool(r["fragments"]) for r in rows), "empty_replies": sum(r["empty"] for r in rows),
        "asked_again": sum(r.get("asked_again", False) for r in rows),
        "corrections_applied": f"{sum(r['correction_applied'] for r in corrections)}/{len(corrections)}",
        "facts_live_at_end": "{}/{}".format(*(sum(r["kept_at_end"][i] for r in rows if "kept_at_end" in r)
                                               for i in (0, 1))),
        "questions_injected": f"{sum(r['injected'] for r in questions)}/{len(questions)}",
        "questions_used": f"{sum(r['used'] for r in questions)}/{len(questions)}",
        "reply_seconds_p50": seconds[len(seconds) // 2] if seconds else 0.0,
        "extraction_seconds_total": round(sum(r["extraction_seconds"] for r in rows), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible server (default: the scripted stand-in)")
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--mode", choices=["fast", "fast-fallback", "fast-json", "fast-json-fallback", "background", "both"], default="both")
    parser.add_argument("--max-tokens", type=int, default=300, help="per reply, to bound a run's time")
    parser.add_argument("--out", default="bench/out/real_model.json")
    args = parser.parse_args()
    server = None
    if not args.base_url:
        from headroom._scripted_server import ScriptedServer

        server = ScriptedServer().start()
        args.base_url = server.base_url
    workdir = Path(tempfile.mkdtemp(prefix="headroom-real-"))
    report: dict[str, Any] = {"model": args.model, "base_url": args.base_url, "modes": {}}
    try:
        for mode in (["fast", "background"] if args.mode == "both" else [args.mode]):
            rows = run(mode, args.base_url, args.model, args.api_key, workdir, args.max_tokens, sys.stderr)
            report["modes"][mode] = {"totals": totals(rows), "turns": rows}
            print(mode, json.dumps(report["modes"][mode]["totals"], indent=1))
    finally:
        if server is not None:
            server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"per-turn detail: {args.out}")


if __name__ == "__main__":
    main()
