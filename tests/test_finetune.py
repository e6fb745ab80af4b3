import copy

import pytest
import torch

from recutils.embeddings import item_text
from recutils.finetune import FineTunedTower, TopLayer, layer_states
from recutils.split import temporal_split, validation_split
from recutils.text import TextEncoder, mean_pool
from recutils.twotower import TwoTower, as_recommender

SMALL = dict(hidden=32, out_dim=16, batch_size=64, epochs=4, patience=2, temperature=0.1, dropout=0.0,
             lr=3e-3, id_dim=8, user_ids=False, user_input="text")


@pytest.fixture(scope="module")
def setting(synthetic, tmp_path_factory):
    """The real MiniLM encoder over the synthetic items' texts, and a small tower trained on them."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECUTILS_CACHE", str(cache))
        encoder = TextEncoder()
        texts = item_text(synthetic.items)
        vectors = encoder.encode(texts, progress=False)
        states, mask = layer_states(encoder, texts)
        split = temporal_split(synthetic.interactions)
        base = TwoTower(vectors, validation=validation_split(split), refit=True, **SMALL).fit(split.train)
    return encoder, texts, vectors, states, mask, split, base, cache


def test_top_layer_reproduces_the_frozen_encoder(setting):
    encoder, texts, vectors, states, mask, *_ = setting
    top = TopLayer(encoder, states, mask).eval()
    with torch.no_grad():
        assert torch.allclose(top(None), vectors, atol=1e-5)
        assert torch.allclose(top(torch.tensor([3, 0])), vectors[[3, 0]], atol=1e-5)


def test_one_training_step_by_hand(setting):
    """One SGD step on the layer equals w − lr · ∂loss/∂w computed through the encoder itself."""
    encoder, texts, vectors, states, mask, *_ = setting
    top = TopLayer(encoder, states, mask).eval()
    target = torch.nn.functional.normalize(torch.ones(vectors.shape[1]), dim=0)
    items = torch.tensor([1, 2])
    weight = top.layer.output.dense.weight
    before = weight.detach().clone()
    loss = -(top(items) @ target).sum()
    loss.backward()
    # The same gradient through the full encoder (all six layers, with the first five frozen).
    model = copy.deepcopy(encoder.model).eval()
    tokens = encoder.tokenizer([texts[1], texts[2]], padding=True, return_tensors="pt")
    pooled = torch.nn.functional.normalize(mean_pool(model(**tokens).last_hidden_state, tokens["attention_mask"]), dim=-1)
    (-(pooled @ target).sum()).backward()
    full = model.encoder.layer[-1].output.dense.weight.grad
    assert torch.allclose(weight.grad, full, atol=1e-5)
    torch.optim.SGD(top.layer.parameters(), lr=0.1).step()
    assert torch.allclose(weight, before - 0.1 * full, atol=1e-6)


def test_fine_tuning_keeps_step_zero_when_nothing_helps(setting, monkeypatch):
    encoder, texts, vectors, states, mask, split, base, cache = setting
    monkeypatch.setenv("RECUTILS_CACHE", str(cache))
    # Zero learning rates: nothing moves, so validation cannot improve on step 0.
    tuned = FineTunedTower(base, TopLayer(encoder, states, mask), steps=4, check_every=2, lr_encoder=0.0,
                           lr_towers=0.0, batch_size=32, progress=False).fit(split.train)
    assert tuned.log_.steps == [0, 2, 4] and tuned.log_.best_step == 0
    frozen = as_recommender(base.early_stopped_net(), split.train)
    users = torch.arange(10)
    assert torch.allclose(tuned.score(users), frozen.score(users), atol=1e-5)


def test_fine_tuning_moves_the_vectors_and_is_cached(setting, monkeypatch):
    encoder, texts, vectors, states, mask, split, base, cache = setting
    monkeypatch.setenv("RECUTILS_CACHE", str(cache))
    settings = dict(steps=6, check_every=3, patience=5, lr_encoder=1e-3, lr_towers=1e-3, batch_size=32,
                    progress=False)
    tuned = FineTunedTower(base, TopLayer(encoder, states, mask), **settings).fit(split.train)
    again = FineTunedTower(base, TopLayer(encoder, states, mask), **settings).fit(split.train)
    assert again.log_ == tuned.log_  # read from the cache, not trained again
    assert torch.equal(again.score([0, 1]), tuned.score([0, 1]))
    if tuned.log_.best_step > 0:
        assert not torch.allclose(tuned.item_text_vectors(), vectors, atol=1e-4)
    layer, towers = tuned.parameter_count()
    assert layer == sum(p.numel() for p in encoder.model.encoder.layer[-1].parameters()) and towers > 0


def test_bad_input(setting, synthetic):
    encoder, texts, vectors, states, mask, split, base, cache = setting
    top = TopLayer(encoder, states, mask)
    with pytest.raises(ValueError, match="not fitted"):
        FineTunedTower(TwoTower(vectors, **SMALL), top)
    history = TwoTower(vectors, **{**SMALL, "user_input": "history"}, use_cache=False).fit(split.train)
    with pytest.raises(ValueError, match="user_input='text'"):
        FineTunedTower(history, top)
    with pytest.raises(ValueError, match="states for"):
        FineTunedTower(base, TopLayer(encoder, states[:3], mask[:3]))
    with pytest.raises(ValueError, match="steps"):
        FineTunedTower(base, top, steps=0)


def test_empty_text_has_the_encoders_empty_string_vector(setting, empty_cache):
    encoder = setting[0]
    states, mask = layer_states(encoder, ["", "A film"])
    with torch.no_grad():
        vectors = TopLayer(encoder, states, mask).eval()(None)
    assert torch.allclose(vectors, encoder.encode(["", "A film"], progress=False), atol=1e-5)
