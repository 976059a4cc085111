"""RollingWindowTransform speed, compression on a LoCoMo conversation, and token counting speed.

    .venv/bin/python bench/rolling.py [--samples 50]

``apply`` on synthetic conversations of 100, 1k and 10k messages (p50, counting included); the
compression ratio (tokens in / tokens kept) of each LoCoMo conversation at max_tokens 4000, one
speaker as the user and the other as the assistant; and counting 1 MB of text with each encoding.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from headroom.transforms import RollingWindowTransform, TokenCounter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo10.json"


def synthetic(n: int) -> list[dict]:
    rng = np.random.default_rng(n)
    words = "memory window token budget user assistant python database service deploy".split()
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(n - 1):
        messages.append({"role": "user" if i % 2 == 0 else "assistant",
                         "content": " ".join(rng.choice(words, int(rng.integers(5, 60))))})
    return messages


def locomo_messages(sample: dict) -> list[dict]:
    conv = sample["conversation"]
    sessions = sorted((k for k in conv if k.startswith("session_") and isinstance(conv[k], list)),
                      key=lambda k: int(k.split("_")[1]))
    messages = []
    for key in sessions:
        for turn in conv[key]:
            role = "user" if turn["speaker"] == conv["speaker_a"] else "assistant"
            messages.append({"role": role, "content": turn["text"]})
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--out", default="bench/out/rolling.json")
    args = parser.parse_args()
    result: dict = {"apply": [], "locomo": [], "count_1mb": {}}
    print("| messages | apply p50 | apply p95 | kept |")
    print("|---|---|---|---|")
    for n in (100, 1000, 10000):
        messages = synthetic(n)
        transform = RollingWindowTransform(max_tokens=4000)
        times = []
        for _ in range(args.samples):
            t = time.perf_counter()
            kept = transform.apply(messages)
            times.append(time.perf_counter() - t)
        row = {"messages": n, "p50_ms": float(np.median(times)) * 1000,
               "p95_ms": float(np.percentile(times, 95)) * 1000, "kept": len(kept)}
        result["apply"].append(row)
        print(f"| {n:,} | {row['p50_ms']:.2f} ms | {row['p95_ms']:.2f} ms | {row['kept']} |")

    counter = TokenCounter("gpt-4o")
    samples = json.loads(DATA.read_text())
    print("\n| LoCoMo conversation | messages | tokens | kept messages | kept tokens | compression |")
    print("|---|---|---|---|---|---|")
    for sample in samples:
        messages = locomo_messages(sample)
        kept = RollingWindowTransform(max_tokens=4000).apply(messages)
        total, small = counter.count_messages(messages), counter.count_messages(kept)
        row = {"sample": sample["sample_id"], "messages": len(messages), "tokens": total,
               "kept_messages": len(kept), "kept_tokens": small, "ratio": total / small}
        result["locomo"].append(row)
        print(f"| {row['sample']} | {row['messages']} | {total:,} | {len(kept)} | {small:,} | {row['ratio']:.1f}x |")

    text = " ".join(m["content"] for s in samples for m in locomo_messages(s))
    text = (text * (1_000_000 // len(text) + 1))[:1_000_000]
    print("\n| encoding | 1 MB count p50 | tokens |")
    print("|---|---|---|")
    for model in ("gpt-4o", "gpt-4", "llama-3"):
        counter = TokenCounter(model)
        counter.count("warm up")
        times = []
        for _ in range(5):
            t = time.perf_counter()
            tokens = counter.count(text)
            times.append(time.perf_counter() - t)
        result["count_1mb"][counter.encoding_name] = {"p50_ms": float(np.median(times)) * 1000, "tokens": tokens}
        print(f"| {counter.encoding_name} | {np.median(times) * 1000:.1f} ms | {tokens:,} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
