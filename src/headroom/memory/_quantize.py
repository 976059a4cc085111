"""The int8 variant of a BERT-type embedding model, built once from its fp32 ONNX export.

Dynamic int8 quantization alone (onnxruntime's ``quantize_dynamic``) is fast but loses too much on
short texts ("Thanks!" is the worst): each matrix product quantizes its input with one scale per
call, and a few hidden channels carry values many times larger than the rest, so the small ones
round to nothing. Three steps keep the speed and the agreement (figures and the variants tried are
in bench/RESULTS.md, "Quantized embedding models"):

1. Fuse the graph with onnxruntime's transformer optimizer (attention, layer norms, GELU): fewer,
   larger operators, which is also what the quantizer expects of a BERT model.
2. Smooth the inputs (SmoothQuant): measure each channel's largest value on CALIBRATION, divide the
   input by ``s = max|x|^0.7 / max|w|^0.3`` and multiply the weight's row by ``s``. The product is
   unchanged in exact arithmetic, and the channels are even enough to share one scale.
3. Quantize every matrix product to int8 (weights per channel) except the second feed-forward one
   of each layer: it reads the GELU's output, where a channel or two run several times larger
   than the next, more than smoothing can even out; quantized too (its few largest channels
   multiplied in fp32 on the side), the model is quicker but loses LoCoMo recall beyond issue 18's
   bound. Where a product's input is an attention's output, the smoothing is folded into that
   attention's value weights instead of a ``Mul``: each output channel is a mean of one value channel.
   Weights use 7 bits of the 8 (``reduce_range``): on a CPU without VNNI (AVX2 only), onnxruntime
   multiplies uint8 by int8 with an instruction whose pairwise sums saturate at 16 bits, and full-
   range weights overflowed it. On such a machine the 8-bit build lost LoCoMo recall while every
   sentence of CHECK still agreed within 0.99 (bench/RESULTS.md, "Session 14: 7-bit weights").

The result is trusted only if every sentence of CHECK embeds within cosine ``min_cosine`` (0.99) of
fp32 on this machine (int8 kernels differ between CPUs), and the mean within ``MIN_MEAN_COSINE``:
the saturated build's worst sentence passed, its mean did not. Otherwise building fails and nothing
is written.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import EmbedderUnavailableError

__all__ = ["build_int8", "CHECK", "RECIPE", "Rejected"]

logger = logging.getLogger(__name__)


class Rejected(EmbedderUnavailableError):
    """This model's int8 variant cannot be trusted on this machine: the same answer every time the
    same recipe is tried, so it is worth remembering (``_local_model`` does)."""


ALPHA = 0.7
MIN_COSINE = 0.99
MIN_MEAN_COSINE = 0.9973
RECIPE = 2  # part of the cached file's name: a new recipe builds a new file

# The fixed set the variant must agree on: short on purpose, since queries and memories are short
# and short texts are where quantization loses most.
CHECK = [
    "I prefer Python for backend work",
    "hi",
    "We use PostgreSQL at a fintech startup, " * 8,
    "Where do I work?",
    "Bob is a data scientist at a hospital in Leeds",
    "Is allergic to peanuts",
    "any food to avoid at dinner?",
    "Prefers dark mode in every editor",
    "lol ok",
    "...",
    "Which programming language should I pick for the new API server?",
    "Favours pytest over unittest",
    "My daughter starts school in September and I need to sort out the commute.",
    "Caroline went to the LGBTQ support group on 7 May 2023",
    "What did Melanie paint recently?",
    "The quarterly report is due Friday; the CFO wants the churn numbers split by region.",
    "Thanks!",
    "I moved from Berlin to Lisbon last spring",
    "Vegetarian, but eats fish sometimes",
    "How many kids does she have?",
    "Running a marathon in October",
    "Uses Neovim with a custom Lua config",
    # Chat turns of a few sentences: where saturated int8 products drifted most.
    "Hey, it's been a while! I finally finished the pottery class last weekend and made a bowl for my mum. "
    "It came out a bit lopsided but she loved it anyway.",
    "Honestly work has been crazy lately. My boss keeps moving deadlines around and I've been staying late "
    "most nights, so I haven't had much time for running.",
    "We took the kids camping near the lake in August. It rained the whole second day, but we played cards "
    "in the tent and roasted marshmallows once it cleared up.",
    "That sounds amazing. I went to a support group meeting on Tuesday and talking to people who had been "
    "through the same thing really helped me feel less alone.",
    "My sister is getting married in Lisbon next spring, so I'm saving up for the flights and trying to "
    "learn a bit of Portuguese before we go.",
    "It was tough at first, but volunteering at the animal shelter on Saturdays has become the highlight of "
    "my week. The cats there are so affectionate.",
]

# What the channel ranges are measured on: none of CHECK, the same mix of kinds.
CALIBRATION = [
    "ok", "yes please", "no", "Good morning!", "sounds good, thank you", "hmm not sure", "cool",
    "What's my sister's name?", "Do I have any pets?", "When is my flight?", "Which editor do I use?",
    "Remind me what I said about the budget", "What should I cook tonight?", "Where did we go last summer?",
    "Can you suggest a gift for my wife?", "Is there anything I can't eat?", "What city do I live in now?",
    "Lives in Manchester with two cats", "Works as a nurse on night shifts", "Is learning Japanese",
    "Prefers tea over coffee", "Has a son called Leo who is six", "Drives an electric car",
    "Is training for a half marathon in April", "Dislikes horror films", "Uses a standing desk",
    "Is migrating the billing service from Flask to FastAPI", "Keeps a vegetable garden",
    "Is lactose intolerant", "Plays bass in a jazz band on Thursdays", "Wants replies in British English",
    "The team ships on Tuesdays and freezes code on Mondays.",
    "I just got back from Kyoto and the temples were amazing, but the trains were packed.",
    "My manager asked me to move the launch to March because legal has not signed off yet.",
    "We're renovating the kitchen, so I'm working from the café around the corner this month.",
    "Could you write a SQL query that counts orders per customer for the last 30 days?",
    "The dog had surgery on Friday and needs his medicine twice a day for two weeks.",
    "Melanie said she painted a sunset over the lake after the camping trip in June 2023.",
    "I'm switching from VS Code to Neovim; any plugins for Python you'd recommend?",
    "Honestly the meeting ran long and nobody decided anything, typical Monday.",
    "Graduated in 2019 with a degree in mechanical engineering and moved into software in 2021.",
    "She mentioned her grandmother's recipe for apple pie uses cardamom instead of cinnamon.",
    "Our Kubernetes cluster keeps evicting pods when the node runs out of memory at night.",
    "haha yes exactly", "brb", "Happy birthday!!", "what??", "2 kids, both in primary school",
    "Allergic to penicillin", "Morning runs, 5k, most days", "Vegan since 2020",
]


def _fuse(fp32: Path, config: dict[str, Any]) -> Any:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: only the Python-side fusions, so the file holds no CPU-specific rewrites.
    fused = optimize_model(str(fp32), model_type="bert", num_heads=int(config["num_attention_heads"]),
                           hidden_size=int(config["hidden_size"]), opt_level=0)
    model = fused.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # the fused operators' home
        model.opset_import.add(domain="com.microsoft", version=1)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"node_{i}"
    return model


def _products(model: Any) -> list[tuple[Any, str]]:
    """The matrix products with a constant weight, each with its kind: ``smooth`` (quantized
    after smoothing) or ``keep`` (the second feed-forward product, left in fp32)."""
    weights = {init.name for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Attention", "MatMul") or len(node.input) < 2 or node.input[1] not in weights:
            continue
        source = producer.get(node.input[0])
        gelu = source is not None and source.op_type in ("BiasGelu", "Gelu", "FastGelu")
        found.append((node, "keep" if gelu else "smooth"))
    return found


def _channel_ranges(model: Any, names: list[str], tokenizer: Any, inputs: set[str]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for text in CALIBRATION:  # one at a time: no padding rows in the ranges
        enc = tokenizer.encode(text)
        feeds = {"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}
        values = session.run(names, {k: np.array(v, dtype=np.int64) for k, v in feeds.items() if k in inputs})
        for name, value in zip(names, values):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def _smooth(model: Any, products: list[tuple[Any, str]], ranges: dict[str, np.ndarray]) -> None:
    """Rewrite ``model`` in place as step 2 describes, for the products of kind ``smooth``."""
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    readers = Counter(name for node in model.graph.node for name in node.input)
    before: dict[str, Any] = {}  # product name -> the Mul that smooths its input
    for node, kind in products:
        if kind != "smooth":
            continue
        x, w_name, name = node.input[0], node.input[1], node.name
        weight = numpy_helper.to_array(inits[w_name])  # (in, out): one row per input channel
        s = np.maximum(ranges[x], 1e-5) ** ALPHA / np.maximum(np.abs(weight).max(axis=1), 1e-5) ** (1 - ALPHA)
        inits[w_name].CopyFrom(numpy_helper.from_array((weight * s[:, None]).astype(np.float32), w_name))
        if readers[x] > 1 or not _fold_into_values(producer.get(x), 1 / s, inits):
            model.graph.initializer.append(numpy_helper.from_array((1 / s).astype(np.float32), f"{name}_smooth"))
            before[name] = helper.make_node("Mul", [x, f"{name}_smooth"], [f"{x}_smoothed_for_{name}"],
                                            name=f"{name}_mul")
            node.input[0] = f"{x}_smoothed_for_{name}"
    nodes = []
    for node in model.graph.node:
        if node.name in before:
            nodes.append(before[node.name])
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _fold_into_values(source: Any, inverse: np.ndarray, inits: dict[str, Any]) -> bool:
    """Scale an attention's output channels by ``inverse`` through its value weights and bias
    (each output channel is a weighted mean of one value channel), instead of a ``Mul`` after it.
    False, changing nothing, when ``source`` is not such an attention."""
    from onnx import numpy_helper

    if source is None or source.op_type != "Attention" or len(source.input) < 3:
        return False
    weight, bias = (inits.get(name) for name in source.input[1:3])
    if weight is None or bias is None:
        return False
    w, b = numpy_helper.to_array(weight).copy(), numpy_helper.to_array(bias).copy()
    hidden = len(inverse)
    if w.shape[-1] != 3 * hidden or b.shape != (3 * hidden,) or any(a.name == "qkv_hidden_sizes" for a in source.attribute):
        return False
    w[:, 2 * hidden:] *= inverse
    b[2 * hidden:] *= inverse
    weight.CopyFrom(numpy_helper.from_array(w.astype(np.float32), weight.name))
    bias.CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias.name))
    return True


def build_int8(fp32: Path, target: Path, model: Any, min_cosine: float | None = None) -> float:
    """Write the int8 variant of ``model`` (a ``ModelFiles``), from its fp32 export ``fp32``, to
    ``target``; returns its lowest cosine to fp32 over CHECK. Raises EmbedderUnavailableError when
    onnxruntime's tools are missing, and ``Rejected`` when the model is not BERT-type or the check
    (``min_cosine``, MIN_COSINE by default) fails."""
    min_cosine = MIN_COSINE if min_cosine is None else min_cosine
    from ._local_model import _json, _OnnxRuntime

    config = _json(model.path / "config.json")
    if config.get("model_type") != "bert":
        raise Rejected(f"the int8 variant is built for BERT-type models, not {model.name}")
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbedderUnavailableError(f"building the int8 variant needs onnxruntime and onnx: {exc}") from exc
    reference = _OnnxRuntime(fp32, model)
    fused = _fuse(fp32, config)
    products = _products(fused)
    tokenizer = Tokenizer.from_file(str(model.path / "tokenizer.json"))
    inputs = {i.name for i in fused.graph.input}
    _smooth(fused, products, _channel_ranges(fused, [n.input[0] for n, _ in products], tokenizer, inputs))
    # Our own pipeline is the pre-processing the quantizer would otherwise warn (on the root logger) about.
    fused.metadata_props.add(key="onnx.quant.pre_process", value="onnxruntime.quant")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        quantize_dynamic(fused, str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         nodes_to_exclude=[node.name for node, kind in products if kind == "keep"],
                         extra_options={"DefaultTensorType": 1})  # the fused ops' outputs are float
        got = _OnnxRuntime(tmp, model).embed(CHECK)
        cosines = np.sum(got * reference.embed(CHECK), axis=1)
        agreement, mean = float(np.min(cosines)), float(np.mean(cosines))
        if agreement < min_cosine or mean < MIN_MEAN_COSINE:
            raise Rejected(
                f"the int8 variant of {model.name} disagrees with fp32 on this machine (lowest cosine "
                f"{agreement:.4f}, least {min_cosine}; mean {mean:.4f}, least {MIN_MEAN_COSINE}); use the fp32 model")
        os.replace(tmp, target)
        logger.info("built the int8 variant of %s at %s (cosine to fp32: lowest %.4f, mean %.4f)", model.name, target,
                    agreement, mean)
        return agreement
    finally:
        tmp.unlink(missing_ok=True)
