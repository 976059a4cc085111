"""Quantized variants of the local embedding model against fp32: agreement and one-query speed;
with ``--batches``, the throughput of fp32 and the int8 variant by batch size; with ``--query``,
the one-query time of fp32 and the int8 variant, the two taking turns in blocks (the fairest
comparison on a machine whose speed drifts between runs).

    .venv/bin/python bench/quantize.py [--calls 300] [--batches | --query]

Issue 18 asks for an int8 variant used by default if its embeddings agree with fp32 (cosine >= 0.99
on a fixed sentence set) and it keeps recall. This bench builds each variant from the cached fp32
export (onnxruntime's quantizers; the weight-only ones need the ``onnx_ir`` package) into a
temporary directory and prints, per variant, the lowest and mean cosine to fp32 over SENTENCES
(mostly short, as queries and memories are, and six chat turns of a few sentences) and the p50
time to embed one 11-token query through the library's own runtime class.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from headroom.memory._local_model import ModelFiles, _OnnxRuntime, onnx_cache_path
from headroom.memory._quantize import CHECK, build_int8

SENTENCES = CHECK  # the library's own check set for its int8 variant
QUERY = ["Which language should I use for a new CLI tool?"]


def dynamic(**options: Any) -> Callable[[Path, Path], None]:
    def build(source: Path, target: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, **options)
    return build


def weight_only(bits: int, block: int, accuracy: int | None) -> Callable[[Path, Path], None]:
    def build(source: Path, target: Path) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

        config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=accuracy, bits=bits,
                                              op_types_to_quantize=("MatMul",))
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    return build


def fused(source: Path, target: Path) -> None:
    import onnx

    from headroom.memory._local_model import _json
    from headroom.memory._quantize import _fuse

    onnx.save(_fuse(source, _json(ModelFiles.at().path / "config.json")), str(target))


def fused_dynamic(source: Path, target: Path) -> None:
    fused(source, target)
    dynamic(per_channel=True, extra_options={"DefaultTensorType": 1})(target, target)


def library(source: Path, target: Path) -> None:
    build_int8(source, target, ModelFiles.at(), min_cosine=0.0)  # report the agreement, whatever it is


VARIANTS: dict[str, Callable[[Path, Path], None]] = {
    "fp32, fused (attention, layer norms, GELU)": fused,
    "int8 dynamic, per channel, fused": fused_dynamic,
    "int8 fused, smoothed, second feed-forward in fp32 (LocalEmbedder(int8=True))": library,
    "int8 dynamic, per tensor": dynamic(),
    "int8 dynamic, per channel": dynamic(per_channel=True),
    "int8 dynamic, per channel, weights x activations only": dynamic(
        per_channel=True, op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True}),
    "int8 weight-only, block 32": weight_only(8, 32, None),
    "int8 weight-only, block 32, int8 compute": weight_only(8, 32, 4),
    "int4 weight-only, block 32, int8 compute": weight_only(4, 32, 4),
}


def measure(path: Path, reference: np.ndarray | None, calls: int) -> tuple[float, float, float]:
    runtime = _OnnxRuntime(path, ModelFiles.at())
    vectors = runtime.embed(SENTENCES)
    cosines = np.sum(vectors * reference, axis=1) if reference is not None else np.ones(len(SENTENCES))
    for _ in range(30):
        runtime.embed(QUERY)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runtime.embed(QUERY)
        times.append((time.perf_counter() - started) * 1000)
    return float(cosines.min()), float(cosines.mean()), statistics.median(times)


def batches(fp32: Path) -> None:
    """Memories embedded per second by ``add_many``'s runtime, fp32 and the library's int8
    variant, for several batch sizes: 2,000 texts of 4 to 40 words (about the lengths of LoCoMo's
    turns), one pass each after a warm-up."""
    import headroom.memory._local_model as local_model

    rng = np.random.default_rng(7)
    words = " ".join(SENTENCES).split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(4, 40)))) for _ in range(2000)]
    default = local_model.BATCH
    with tempfile.TemporaryDirectory() as workdir:
        int8 = Path(workdir) / "int8.onnx"
        library(fp32, int8)
        runtimes = [_OnnxRuntime(path, ModelFiles.at()) for path in (fp32, int8)]
        for runtime in runtimes:
            runtime.embed(texts[:64])
        print("| batch size | fp32 memories/s | int8 memories/s |\n|---|---|---|")
        try:
            for size in (1, 8, 16, 32, 64, 128):
                local_model.BATCH = size
                rates = []
                for runtime in runtimes:
                    started = time.perf_counter()
                    runtime.embed(texts)
                    rates.append(len(texts) / (time.perf_counter() - started))
                print(f"| {size}{' (today)' if size == default else ''} | {rates[0]:.0f} | {rates[1]:.0f} |",
                      flush=True)
        finally:
            local_model.BATCH = default


QUERIES = ["Which language should I use for a new CLI tool?", "Where do I work?", "any food to avoid at dinner?",
           "What did Melanie paint recently?", "When is my race, and how should I train this week?"]


def query(fp32: Path, calls: int) -> None:
    """p50 and p95 of one query embedded by ``LocalEmbedder`` (the library's path: tokenizer,
    runtime, checks), fp32 and int8 taking turns in blocks of 100 calls over QUERIES. Not call by
    call: each runtime's threads keep spinning a moment after a call and slow the other's."""
    from headroom.memory import LocalEmbedder

    embedders = {"fp32": LocalEmbedder(int8=False), "int8": LocalEmbedder(int8=True)}
    times: dict[str, list[float]] = {name: [] for name in embedders}
    for block in range(max(1, calls // 100)):
        for name, embedder in embedders.items():
            for i in range(110):
                text = [QUERIES[i % len(QUERIES)]]
                started = time.perf_counter()
                embedder.embed(text)
                if i >= 10:  # the first calls of a block wait for the other runtime's threads to settle
                    times[name].append((time.perf_counter() - started) * 1000)
    print(f"{len(times['fp32'])} calls each, {len(QUERIES)} queries of 4 to 11 words, in alternating blocks of 100")
    print("| model | one-query p50 | p95 |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {np.percentile(values, 50):.2f} ms | {np.percentile(values, 95):.2f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batches", action="store_true", help="only the throughput by batch size")
    parser.add_argument("--query", action="store_true", help="only one query's time, fp32 and int8 in turns")
    args = parser.parse_args()
    fp32 = onnx_cache_path()
    if not fp32.is_file():
        raise SystemExit("run anything that embeds once first, so the fp32 export is cached")
    if args.batches:
        batches(fp32)
        return
    if args.query:
        query(fp32, args.calls)
        return
    reference = _OnnxRuntime(fp32, ModelFiles.at()).embed(SENTENCES)
    print(f"{len(SENTENCES)} sentences; one query of {len(QUERY[0].split())} words, {args.calls} calls")
    print("| variant | min cosine to fp32 | mean cosine | one-query embed p50 |\n|---|---|---|---|")
    low, mean, p50 = measure(fp32, reference, args.calls)
    print(f"| fp32 (today) | {low:.4f} | {mean:.4f} | {p50:.2f} ms |", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for name, build in VARIANTS.items():
            target = Path(workdir) / "variant.onnx"
            build(fp32, target)
            low, mean, p50 = measure(target, reference, args.calls)
            print(f"| {name} | {low:.4f} | {mean:.4f} | {p50:.2f} ms |", flush=True)
            target.unlink()


if __name__ == "__main__":
    main()
