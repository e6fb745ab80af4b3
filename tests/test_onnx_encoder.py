import onnx
import pytest
import torch

from recutils.onnx_encoder import INT8_RECIPES, Fidelity, build_onnx, fidelity, onnx_path
import recutils.text as text_module
from recutils.text import AUTO_ROUTES, INT8_ROUTE, TextEncoder, fastest_route

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller",
    "Love this dress! It fits perfectly and the fabric is soft, though it runs a little long. " * 3,
    "Runs small",
]


@pytest.fixture(scope="module")
def reference():
    return TextEncoder(use_cache=False).encode(TEXTS, progress=False)


def test_onnx_fp32_reproduces_the_torch_vectors(reference, empty_cache):
    vectors = TextEncoder(precision="onnx-fp32", use_cache=False).encode(TEXTS, progress=False)
    assert (vectors - reference).abs().max() < 1e-5
    # Batches of another shape than the traced example: the mask must not be frozen.
    single = TextEncoder(precision="onnx-fp32", use_cache=False, batch_size=1).encode(TEXTS, progress=False)
    assert (single - reference).abs().max() < 1e-5


def test_fidelity_passes_the_kept_int8_route_and_flags_a_broken_model(reference, empty_cache):
    int8 = TextEncoder(precision="int8", use_cache=False)
    assert int8.precision == INT8_ROUTE
    good = fidelity(int8.encode(TEXTS, progress=False), reference)
    assert good.ok and 0.99 <= good.min_cosine <= good.mean_cosine < 1.0
    # A model whose last feed-forward layer is broken (its weights scrambled) must fail the check.
    broken = TextEncoder(use_cache=False)
    dense = broken.model.encoder.layer[-1].output.dense
    with torch.no_grad():
        order = torch.randperm(dense.weight.shape[0], generator=torch.Generator().manual_seed(0))
        dense.weight.copy_(dense.weight[order])
    bad = fidelity(broken.encode(TEXTS, progress=False), reference)
    assert not bad.ok and bad.min_cosine < 0.99
    assert "too far" in str(bad) and "ok" in str(good)


def test_fidelity_hand_cases():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert fidelity(a, a) == Fidelity(1.0, 1.0, 0.99)
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    result = fidelity(b, a)
    assert result.min_cosine == pytest.approx(2**-0.5)
    assert result.mean_cosine == pytest.approx((1 + 2**-0.5) / 2)
    assert not fidelity(torch.full((2, 2), float("nan")), a).ok
    with pytest.raises(ValueError, match="one shape"):
        fidelity(a, a[:1])


def test_int8_recipes_keep_their_layers_in_fp32_and_are_cached_apart(empty_cache):
    fingerprint = TextEncoder(use_cache=False).fingerprint
    source = TextEncoder(use_cache=False).source
    counts = {}
    for recipe in ("all", "keep-ffn-output", "keep-outputs", "keep-values-outputs"):
        path = build_onnx(source, fingerprint, recipe)
        assert path == onnx_path(fingerprint, recipe) and path.is_relative_to(empty_cache / "onnx")
        graph = onnx.load(str(path)).graph
        float_matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
        counts[recipe] = len(float_matmuls)
        if recipe == "keep-ffn-output":
            assert sum("/output/dense/" in n and "attention" not in n for n in float_matmuls) == 6
        if recipe == "keep-values-outputs":
            assert sum("/self/value/" in n for n in float_matmuls) == 6
    # 6 layers × 2 attention products stay fp32 in every recipe; the output projections when kept.
    assert counts == {"all": 12, "keep-ffn-output": 18, "keep-outputs": 24, "keep-values-outputs": 30}
    assert len(list((empty_cache / "onnx").iterdir())) == 5  # fp32 + four recipes
    with pytest.raises(ValueError, match="unknown int8 recipe"):
        onnx_path(fingerprint, "nothing")
    assert set(INT8_RECIPES) >= {"all", "keep-ffn-output"}


# --- precision="auto": the fastest faithful route, timed once per machine --------------------


def test_auto_precision_takes_the_fastest_faithful_route_and_caches_it(reference, empty_cache, monkeypatch):
    import recutils.benchmark as benchmark

    choice = fastest_route(texts=TEXTS)
    assert choice["precision"] in AUTO_ROUTES and set(choice["timings"]) == set(AUTO_ROUTES)
    assert choice["min_cosine"][choice["precision"]] >= 0.99
    assert choice["timings"][choice["precision"]] == min(
        t for route, t in choice["timings"].items() if choice["min_cosine"][route] >= 0.99
    )
    assert "flags" in choice["key"] and choice["key"]["versions"]["onnxruntime"]
    assert len(list((empty_cache / "routes").glob("encoder-*.json"))) == 1
    # Cached: neither this process nor another one times again.
    monkeypatch.setattr(benchmark, "compare", lambda *a, **k: pytest.fail("timed twice"))
    assert fastest_route(texts=TEXTS) == choice
    monkeypatch.setattr(benchmark, "_CHOICES", {})
    assert fastest_route(texts=TEXTS)["precision"] == choice["precision"]
    # The book's default is untouched: fp32 unless auto is asked for.
    assert TextEncoder(use_cache=False).precision == "fp32"


def test_auto_precision_never_takes_an_unfaithful_route(empty_cache, monkeypatch):
    import pandas as pd

    import recutils.benchmark as benchmark

    # int8 made the fastest by fiat; a threshold it cannot meet rules it out all the same.
    fake = pd.DataFrame({"median_s": [3.0, 2.0, 1.0]}, index=list(AUTO_ROUTES))

    def timed(candidates, repeats=3, warmup=True):
        for run in candidates.values():
            run()
        return fake

    monkeypatch.setattr(benchmark, "compare", timed)
    assert fastest_route(texts=TEXTS)["precision"] == "onnx-int8"
    strict = fastest_route(texts=TEXTS, threshold=0.99999)
    assert strict["precision"] == "onnx-fp32" and strict["min_cosine"]["onnx-int8"] < 0.99999
    monkeypatch.setattr(text_module, "fastest_route", lambda *a, **k: {"precision": "onnx-fp32"})
    assert TextEncoder(precision="auto", use_cache=False).precision == "onnx-fp32"
    with pytest.raises(ValueError, match="precision auto chooses among CPU routes"):
        TextEncoder(precision="auto", int8_recipe="all")
