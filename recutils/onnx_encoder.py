"""The sentence encoder run by ONNX Runtime, in fp32 or int8, and a check that its vectors stay faithful.

The ONNX graph is exported from the packaged weights the first time it is needed and
cached under ``{cache}/onnx``, keyed by the model's fingerprint and everything that
shapes the file (export version, opset, quantisation settings); nothing is downloaded
and nothing is committed. :class:`OnnxBert` is called like a transformers model
(``model(input_ids=..., attention_mask=...).last_hidden_state``), so
:class:`recutils.text.TextEncoder` pools and caches its output as it does for torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from recutils.cache import atomic_path, cache_dir

# Bump when the export or the quantisation recipe changes, so stale graphs are rebuilt.
EXPORT_VERSION = "onnx-export-v1"
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Which weight MatMuls keep fp32 weights in each int8 recipe: regular expressions on
# the node names the exporter writes ("/model/encoder/layer.3/output/dense/MatMul").
_FFN_OUTPUT = r"layer\.\d+/output/dense/"
_ATTENTION_OUTPUT = r"attention/output/dense/"
_VALUES = r"attention/self/value/"
_LAST_LAYER = r"layer\.5/"
INT8_RECIPES: dict[str, tuple[str, ...]] = {
    "all": (),
    "keep-ffn-output": (_FFN_OUTPUT,),
    "keep-outputs": (_FFN_OUTPUT, _ATTENTION_OUTPUT),
    "keep-values-outputs": (_VALUES, _FFN_OUTPUT, _ATTENTION_OUTPUT),
    "keep-last-layer": (_LAST_LAYER,),
    "keep-ffn-output-last-layer": (_FFN_OUTPUT, _LAST_LAYER),
}
# Chosen on the appendix's benchmark: the fastest recipe whose vectors keep a cosine of at
# least 0.99 to fp32 on both corpora. Of the parts tried (query and key, values, first or
# last layer), keeping the value projections in fp32 as well raised the reviews' minimum
# most (0.986 to 0.991) for the least speed.
DEFAULT_INT8_RECIPE = "keep-values-outputs"


class _Encoder(torch.nn.Module):
    """Embeddings + encoder with the attention mask made additive up front.

    transformers builds its mask with Python branches on the input's shape, which the
    tracer would freeze to the example batch; this form is shape-free.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D102
        additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.model.encoder(hidden, attention_mask=additive).last_hidden_state


def onnx_path(fingerprint: str, int8_recipe: str | None = None) -> Path:
    """Where the graph for this model (and int8 recipe, or None for fp32) is cached."""
    if int8_recipe is not None and int8_recipe not in INT8_RECIPES:
        raise ValueError(f"unknown int8 recipe {int8_recipe!r}; choose one of {', '.join(INT8_RECIPES)}")
    key = f"{fingerprint}|{EXPORT_VERSION}|opset={OPSET}|int8={int8_recipe}:{INT8_RECIPES.get(int8_recipe)}"
    return cache_dir() / "onnx" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


def build_onnx(source: str | Path, fingerprint: str, int8_recipe: str | None = None) -> Path:
    """The cached ONNX graph for the model at ``source``, exported (and quantised) if missing.

    Args:
        source: the checkpoint folder (local: encoding needs no network).
        fingerprint: the model's identity (``TextEncoder.fingerprint``), the cache key.
        int8_recipe: None for fp32; else a key of :data:`INT8_RECIPES`: dynamic int8,
            per output channel, for every weight MatMul except those the recipe keeps.
    Returns: the path of the ``.onnx`` file.
    """
    path = onnx_path(fingerprint, int8_recipe)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if int8_recipe is None:
        _export(source, path)
        return path
    fp32 = build_onnx(source, fingerprint, None)
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = INT8_RECIPES[int8_recipe]
    import onnx

    names = [node.name for node in onnx.load(str(fp32)).graph.node if node.op_type == "MatMul"]
    # Attention's own products (scores, weighted values) have no weights to quantise.
    excluded = [n for n in names if any(re.search(pattern, n) for pattern in keep) or "/self/MatMul" in n]
    root = logging.getLogger()
    level = root.level
    # The quantiser logs a suggestion (pre-processing) to the root logger on every call.
    root.setLevel(logging.ERROR)
    try:
        with atomic_path(path) as partial, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(fp32),
                str(partial),
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=excluded,
            )
    finally:
        root.setLevel(level)
    return path


def _export(source: str | Path, path: Path) -> None:
    from transformers import AutoModel

    from recutils.quiet import quiet_transformers

    with quiet_transformers():
        model = AutoModel.from_pretrained(str(source), attn_implementation="eager")
    wrapper = _Encoder(model).eval()
    example = {name: torch.ones(2, 8, dtype=torch.int64) for name in INPUTS}
    example["token_type_ids"].zero_()
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with atomic_path(path) as partial, warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(example[name] for name in INPUTS),
            str(partial),
            dynamo=False,
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


class OnnxBert:
    """An ONNX Runtime session that answers like a transformers BERT (last hidden states only).

    Args:
        path: an ``.onnx`` file from :func:`build_onnx`.
        config: the transformers config (``hidden_size`` etc.), for callers that read it.
        threads: intra-op threads; default torch's thread count, so the two compare fairly.
    """

    def __init__(self, path: str | Path, config, threads: int | None = None) -> None:
        _require("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle pool threads spin by default, which on a shared machine takes the cores
        # from everyone else (and from torch's own pool in the same process).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = config
        self.path = Path(path)

    def __call__(self, input_ids, attention_mask, token_type_ids=None, **_: object) -> SimpleNamespace:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {
            "input_ids": input_ids.cpu().numpy().astype(np.int64),
            "attention_mask": attention_mask.cpu().numpy().astype(np.int64),
            "token_type_ids": token_type_ids.cpu().numpy().astype(np.int64),
        }
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))

    def eval(self) -> OnnxBert:
        return self


@dataclass(frozen=True)
class Fidelity:
    """How close a faster encoder's vectors are to the reference's (row-wise cosines)."""

    min_cosine: float
    mean_cosine: float
    threshold: float

    @property
    def ok(self) -> bool:
        return self.min_cosine >= self.threshold

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "too far"
        return (
            f"min cosine {self.min_cosine:.4f}, mean {self.mean_cosine:.4f} "
            f"({verdict}: goal ≥ {self.threshold})"
        )


def fidelity(candidate: torch.Tensor, reference: torch.Tensor, threshold: float = 0.99) -> Fidelity:
    """Row-wise cosine between two encodings of the same texts.

    Args:
        candidate, reference: (n, dim) vectors of the same n texts (any norms).
        threshold: the smallest acceptable minimum cosine.
    """
    if candidate.shape != reference.shape or candidate.ndim != 2 or len(candidate) == 0:
        raise ValueError(
            "need two non-empty (n, dim) tensors of one shape, "
            f"got {tuple(candidate.shape)} and {tuple(reference.shape)}"
        )
    cosines = torch.nn.functional.cosine_similarity(candidate.float(), reference.float(), dim=1)
    if not torch.isfinite(cosines).all():
        return Fidelity(float("nan"), float("nan"), threshold)  # NaN fails ``ok``
    return Fidelity(float(cosines.min()), float(cosines.mean()), threshold)


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"the ONNX encoder needs {module}: pip install {module}")
