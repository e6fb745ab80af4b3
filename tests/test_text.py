import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer

from recutils.text import (
    DEFAULT_SHA256,
    ModelNotFoundError,
    TextEncoder,
    _fingerprint,
    default_model_path,
    mean_pool,
)

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller",
    "A much longer text about a film, so that the batch needs padding and the mask matters. " * 3,
    "",
]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(use_cache=False)


def test_vectors_match_sentence_transformers(encoder):
    ours = encoder.encode(TEXTS, progress=False)
    reference = SentenceTransformer(str(default_model_path()), device="cpu")
    theirs = torch.as_tensor(reference.encode(TEXTS, normalize_embeddings=True))
    assert ours.shape == (4, 384) and encoder.dim == 384
    assert (ours * theirs).sum(dim=1).min() >= 0.9999


def test_vectors_are_unit_norm_and_independent_of_batching(encoder):
    together = encoder.encode(TEXTS, progress=False)
    assert torch.allclose(together.norm(dim=1), torch.ones(4), atol=1e-5)
    alone = torch.cat([encoder.encode([t], progress=False) for t in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_cache_is_keyed_by_texts_and_reused(empty_cache, monkeypatch):
    encoder = TextEncoder()
    first = encoder.encode(TEXTS[:2], progress=False)
    assert len(list((empty_cache / "embeddings").iterdir())) == 1
    with monkeypatch.context() as patch:
        patch.setattr(encoder, "_encode", lambda *a: pytest.fail("cached vectors were recomputed"))
        assert torch.equal(encoder.encode(TEXTS[:2], progress=False), first)
    encoder.encode(TEXTS[:1], progress=False)
    assert len(list((empty_cache / "embeddings").iterdir())) == 2


def test_random_weights_are_a_different_model(empty_cache):
    pretrained = TextEncoder().encode(TEXTS[:2], progress=False)
    random = TextEncoder.with_random_weights(seed=0).encode(TEXTS[:2], progress=False)
    assert random.shape == pretrained.shape
    assert (random * pretrained).sum(dim=1).max() < 0.9
    # Different weights, different cache entries.
    assert len(list((empty_cache / "embeddings").iterdir())) == 2


@pytest.mark.parametrize("precision", ["bf16", "int8", "torch-int8"])
def test_lower_precision_keeps_the_vectors_close(encoder, empty_cache, precision):
    reference = encoder.encode(TEXTS, progress=False)
    low = TextEncoder(precision=precision)
    vectors = low.encode(TEXTS, progress=False)
    assert vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-3)
    cosines = (vectors * reference).sum(dim=1)
    # Close to the fp32 vectors (the empty text, two special tokens, is the worst case),
    # yet not the same: the precision really changed.
    assert 0.9 < cosines.min() and cosines[:3].min() > 0.97 and not torch.allclose(vectors, reference, atol=1e-6)
    # Vectors of another precision are cached apart from fp32 ones.
    TextEncoder().encode(TEXTS, progress=False)
    assert len(list((empty_cache / "embeddings").iterdir())) == 2


def test_torch_int8_keeps_the_feed_forward_outputs_in_fp32():
    model = TextEncoder(precision="torch-int8", use_cache=False).model
    layer = model.encoder.layer[0]
    assert type(layer.output.dense) is torch.nn.Linear
    assert type(layer.intermediate.dense) is not torch.nn.Linear
    assert type(layer.attention.output.dense) is not torch.nn.Linear


def test_bad_inputs(encoder, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        TextEncoder(precision="fp16")
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        TextEncoder(device="cuda", precision="int8")
    with pytest.raises(ValueError, match="int8_recipe applies to precision onnx-int8 only"):
        TextEncoder(precision="fp32", int8_recipe="all")
    with pytest.raises(ValueError, match="unknown int8_recipe"):
        TextEncoder(precision="onnx-int8", int8_recipe="everything")
    with pytest.raises(ValueError, match="random weights run in torch only"):
        TextEncoder.with_random_weights(precision="onnx-int8")
    with pytest.raises(TypeError, match=r"texts\[1\] is float"):
        encoder.encode(["fine", float("nan")])
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        TextEncoder(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="holds no weights"):
        TextEncoder(tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        TextEncoder(batch_size=0)


def test_corrupt_default_weights_are_detected(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(default_model_path(), copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ModelNotFoundError, match="corrupt"):
        _fingerprint(copy, expected_sha256=DEFAULT_SHA256)
    assert _fingerprint(default_model_path(), expected_sha256=DEFAULT_SHA256).startswith(DEFAULT_SHA256 + "|")
    assert (
        _fingerprint("sentence-transformers/all-MiniLM-L6-v2", None)
        == "hub:sentence-transformers/all-MiniLM-L6-v2"
    )
