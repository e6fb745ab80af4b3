import copy
import math

import pytest
import torch

from recutils.baselines import RandomRecommender
from recutils.metrics import evaluate
from recutils.split import temporal_split, validation_split
from recutils.twotower import (
    Histories,
    TwoTower,
    TwoTowerConfig,
    TwoTowerNet,
    as_recommender,
    in_batch_softmax_loss,
    sampled_bce_loss,
)
from recutils.variants import train_variants

SMALL = dict(hidden=32, out_dim=16, batch_size=64, epochs=12, temperature=0.1, dropout=0.0, lr=3e-3)


@pytest.fixture(scope="module")
def planted(synthetic):
    """Item 'text' vectors that carry the planted clusters, plus noise."""
    generator = torch.Generator().manual_seed(0)
    clusters = torch.tensor(synthetic.items["cluster"].to_numpy())
    vectors = torch.nn.functional.one_hot(clusters, 3).float()
    vectors = torch.cat([vectors, torch.zeros(len(clusters), 5)], dim=1) + 0.3 * torch.randn(
        len(clusters), 8, generator=generator
    )
    return vectors, temporal_split(synthetic.interactions)


def _agreement(model, synthetic, n=60):
    top = model.recommend(torch.arange(n), k=5)
    item_cluster = torch.tensor(synthetic.items["cluster"].to_numpy())
    own = torch.tensor(synthetic.users["cluster"].to_numpy()[:n]).unsqueeze(1)
    return (item_cluster[top] == own).float().mean().item()


def test_in_batch_softmax_matches_a_hand_computed_case():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    tau = 0.5
    loss = in_batch_softmax_loss(u, i, tau)
    # Row 0: logits (0.6, 1.0)/τ, target 0; row 1: (0.8, 0.0)/τ, target 1.
    row0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0)))
    row1 = -math.log(math.exp(0.0) / (math.exp(1.6) + math.exp(0.0)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # Masking item 1 as an accidental hit for user 0 leaves row 0 with its positive only.
    masked = in_batch_softmax_loss(u, i, tau, accidental=torch.tensor([[False, True], [False, False]]))
    assert masked.item() == pytest.approx(row1 / 2, rel=1e-6)


def test_logq_correction_pushes_popular_negatives_down_less():
    # Orthogonal users, so that only row 1 (where item 0 is a negative) moves item 0 along u[1].
    u = torch.eye(4)[:2]
    items = torch.nn.functional.normalize(torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.9, 0.0, 0.4]]), dim=1)
    log_q = torch.log(torch.tensor([0.5, 0.01]))  # item 0 popular, item 1 rare

    def push_on_popular(correction):
        i = items.clone().requires_grad_(True)
        in_batch_softmax_loss(u, i, 0.1, log_q if correction else None).backward()
        # Row 1's positive is item 1; item 0 is its negative. The gradient on item 0
        # along user 1 is how hard the loss pushes the popular item away from that user.
        return (i.grad[0] @ u[1]).item()

    assert push_on_popular(correction=True) < push_on_popular(correction=False)


def test_bce_loss_hand_case():
    u = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[[0.0, 1.0]]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(0.0))) / 2
    assert sampled_bce_loss(u, pos, neg, 0.5).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("id_dim", [0, 4])
def test_gradients_reach_both_towers(planted, id_dim):
    vectors, split = planted
    config = TwoTowerConfig(**SMALL, id_dim=id_dim)
    net = TwoTowerNet(vectors, split.train.n_users, config)
    model = TwoTower(vectors, config, use_cache=False)
    histories = Histories(split.train)
    users, items = split.train.column("user")[:32], split.train.column("item")[:32]
    loss = model._batch_loss(net, users, items, histories, torch.zeros(vectors.shape[0]), torch.Generator())
    loss.backward()
    for tower in (net.item_tower, net.user_tower):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())
    if id_dim:
        assert net.item_ids.weight.grad.abs().sum() > 0 and net.user_ids.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("objective", ["softmax", "bce"])
def test_learns_the_planted_clusters(planted, synthetic, objective):
    vectors, split = planted
    model = TwoTower(vectors, use_cache=False, objective=objective, **SMALL).fit(split.train)
    assert model.log_.loss[-1] < model.log_.loss[0]
    assert _agreement(model, synthetic) > 0.8
    random = evaluate(RandomRecommender().fit(split.train), split)["NDCG@10"].iloc[0]
    assert evaluate(model, split)["NDCG@10"].iloc[0] > 2 * random


def test_early_stopping_on_validation_then_refit(planted):
    vectors, split = planted
    model = TwoTower(
        vectors, validation=validation_split(split), use_cache=False, **{**SMALL, "epochs": 6, "patience": 2}
    )
    model.fit(split.train)
    log = model.validation_log_
    assert 1 <= log.best_epoch <= len(log.validation_ndcg) <= 6
    assert log.validation_ndcg[log.best_epoch - 1] == max(log.validation_ndcg)
    assert len(model.log_.loss) == log.best_epoch  # the refit runs for the chosen number of epochs
    with pytest.raises(ValueError, match="validation must be"):
        TwoTower(vectors, validation=validation_split(validation_split(split)), use_cache=False, **SMALL).fit(
            split.train
        )


def test_seeded_training_is_deterministic(planted):
    vectors, split = planted
    a = TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2}).fit(split.train).score(torch.arange(10))
    b = TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2}).fit(split.train).score(torch.arange(10))
    c = (
        TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2, "seed": 1})
        .fit(split.train)
        .score(torch.arange(10))
    )
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_round_trip_and_mismatches(planted, tmp_path, synthetic):
    vectors, split = planted
    model = TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2}).fit(split.train)
    model.save(tmp_path / "ckpt")
    loaded = TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2}).load(tmp_path / "ckpt", split.train)
    assert torch.equal(loaded.score(torch.arange(20)), model.score(torch.arange(20)))
    with pytest.raises(ValueError, match="another config.*hidden: saved 32, here 64"):
        TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2, "hidden": 64}).load(
            tmp_path / "ckpt", split.train
        )
    with pytest.raises(ValueError, match="other interactions"):
        TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 2}).load(
            tmp_path / "ckpt", synthetic.interactions
        )
    with pytest.raises(ValueError, match="other item vectors"):
        TwoTower(vectors + 1, use_cache=False, **{**SMALL, "epochs": 2}).load(tmp_path / "ckpt", split.train)
    with pytest.raises(FileNotFoundError, match="no two-tower checkpoint"):
        TwoTower(vectors, use_cache=False, **SMALL).load(tmp_path / "missing", split.train)
    with pytest.raises(RuntimeError, match="not fitted"):
        TwoTower(vectors, **SMALL).save(tmp_path / "x")


def test_cache_reuses_a_trained_model(planted, empty_cache, monkeypatch):
    vectors, split = planted
    first = TwoTower(vectors, **{**SMALL, "epochs": 2}).fit(split.train)
    monkeypatch.setattr(TwoTower, "_train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    second = TwoTower(vectors, **{**SMALL, "epochs": 2}).fit(split.train)
    assert torch.equal(first.score(torch.arange(5)), second.score(torch.arange(5)))
    assert second.log_.loss == first.log_.loss


def test_bad_input(planted):
    vectors, split = planted
    model = TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 1}).fit(split.train)
    with pytest.raises(ValueError, match="user index 500 is not in the training data"):
        model.score([500])
    with pytest.raises(ValueError, match="no users given"):
        model.score([])
    with pytest.raises(ValueError, match="item_vectors has 59 rows for 60 items"):
        TwoTower(vectors[:59], use_cache=False, **SMALL).fit(split.train)
    with pytest.raises(ValueError, match="item_vectors must be"):
        TwoTower(vectors[0], **SMALL)
    with pytest.raises(ValueError, match="objective"):
        TwoTowerConfig(objective="mse")
    with pytest.raises(ValueError, match="temperature"):
        TwoTowerConfig(temperature=0)


def test_without_refit_the_early_stopped_model_is_kept(planted):
    vectors, split = planted
    model = TwoTower(
        vectors, validation=validation_split(split), use_cache=False, **{**SMALL, "epochs": 4, "refit": False}
    )
    model.fit(split.train)
    assert model.log_.validation_ndcg == model.validation_log_.validation_ndcg
    assert model.score(torch.arange(3)).shape == (3, 60)


def test_training_leaves_the_global_determinism_setting_as_it_was(planted):
    vectors, split = planted
    assert not torch.are_deterministic_algorithms_enabled()
    TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 1}).fit(split.train)
    assert not torch.are_deterministic_algorithms_enabled()


def test_query_tower_ranks_for_users_without_history(planted, synthetic):
    """Users given as vectors (queries): held-out users with no train history are
    matched to their planted cluster, and a validation split drives early stopping."""
    from recutils.split import cold_user_split

    item_vectors, _ = planted
    generator = torch.Generator().manual_seed(1)
    user_clusters = torch.tensor(synthetic.users["cluster"].to_numpy())
    queries = torch.nn.functional.one_hot(user_clusters, 3).float()
    queries = torch.cat([queries, torch.zeros(len(queries), 5)], dim=1) + 0.3 * torch.randn(
        len(queries), 8, generator=generator
    )
    split = cold_user_split(synthetic.interactions, cold_fraction=0.25)
    model = TwoTower(
        item_vectors, user_vectors=queries, validation=validation_split(split), use_cache=False, **SMALL
    )
    assert model.config.user_input == "query" and not model.needs_history
    model.fit(split.train)
    cold_users = sorted(set(split.test.items_by_user()) - set(split.train.items_by_user()))
    assert len(cold_users) > 10
    top = model.recommend(torch.tensor(cold_users), k=5)
    item_cluster = torch.tensor(synthetic.items["cluster"].to_numpy())
    agreement = (item_cluster[top] == user_clusters[cold_users].unsqueeze(1)).float().mean().item()
    assert agreement > 0.8  # chance is 1/3
    with pytest.raises(ValueError, match="user_vectors"):
        TwoTower(item_vectors, user_input="query")
    with pytest.raises(ValueError, match="user_vectors must be"):
        TwoTower(item_vectors, user_vectors=torch.zeros(3, 4))


def test_scoring_given_histories_matches_scoring_users(planted):
    item_vectors, split = planted
    model = TwoTower(item_vectors, use_cache=False, **SMALL).fit(split.train)
    users = torch.arange(12)
    assert torch.allclose(model.score_histories(split.train.matrix()[users]), model.score(users), atol=1e-6)


def test_one_adam_step_by_the_formula_matches_torch(planted):
    vectors, split = planted
    torch.manual_seed(0)
    net = TwoTowerNet(vectors, split.train.n_users, TwoTowerConfig(**{**SMALL, "dropout": 0.0}))
    reference = copy.deepcopy(net)
    histories = Histories(split.train)
    users, items = split.train.column("user")[:16], split.train.column("item")[:16]

    def loss_of(model):
        return in_batch_softmax_loss(
            model.user_vectors(users, histories, leave_out=items), model.item_vectors(items), 0.1
        )

    loss_of(net).backward()
    lr, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    with torch.no_grad():
        for weight in net.parameters():
            m, v = (1 - beta1) * weight.grad, (1 - beta2) * weight.grad**2
            weight -= lr * (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + eps)
    optimiser = torch.optim.Adam(reference.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
    loss_of(reference).backward()
    optimiser.step()
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # The first step moves each weight with a non-zero gradient by almost exactly lr.
    moved = [(a - b).abs() for a, b in zip(net.parameters(), copy.deepcopy(reference).parameters())]
    assert all(m.max() < 1e-6 for m in moved)


def test_as_recommender_scores_like_the_fitted_model(planted):
    vectors, split = planted
    model = TwoTower(vectors, use_cache=False, **SMALL).fit(split.train)
    probe = as_recommender(model.net_, split.train)
    users = torch.arange(10)
    assert torch.allclose(probe.score(users), model.score(users))
    assert evaluate(probe, split)["NDCG@10"].iloc[0] == evaluate(model, split)["NDCG@10"].iloc[0]


def test_train_variants_fits_every_variant_and_seed(planted, empty_cache):
    vectors, split = planted
    validation = validation_split(split)
    towers = train_variants(vectors, split.train, validation, variants=["logq", "article_user"], seeds=(0, 1))
    assert list(towers) == ["logq", "article_user"] and all(len(ms) == 2 for ms in towers.values())
    first, second = towers["logq"]
    assert first.name == "two-tower: softmax + logQ" and first.config.seed == 0 and second.config.seed == 1
    assert towers["article_user"][0].config.user_input == "text"
    assert first.validation_score_ == max(first.validation_log_.validation_ndcg)
    assert not torch.equal(first.score(torch.arange(5)), second.score(torch.arange(5)))
    with pytest.raises(ValueError, match="unknown two-tower variants"):
        train_variants(vectors, split.train, validation, variants=["ids"])
    with pytest.raises(RuntimeError, match="not trained with a validation split"):
        TwoTower(vectors, use_cache=False, **SMALL).fit(split.train).validation_score_


def test_validation_of_a_global_split_is_accepted_and_others_refused(planted, synthetic):
    vectors, _ = planted
    frame = synthetic.interactions.frame.copy()
    # Distinct times in random order, so that every user has ratings on both sides of a global cut.
    frame["timestamp"] = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0)).numpy()
    from recutils.split import Interactions, global_time_split

    everything = Interactions(frame, synthetic.interactions.n_users, synthetic.interactions.n_items)
    g = global_time_split(everything)
    settings = {**SMALL, "epochs": 2, "patience": 1}
    TwoTower(vectors, validation=validation_split(g), use_cache=False, **settings).fit(g.train)
    # A validation split of g.train does not split all of the interactions (rows after g's cut are missing).
    with pytest.raises(ValueError, match="validation must be"):
        TwoTower(vectors, validation=validation_split(g), use_cache=False, **settings).fit(everything)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_every_optimizer_trains(planted, optimizer):
    vectors, split = planted
    lr = {"sgd": 0.3, "rmsprop": 3e-3, "adamw": 3e-3}[optimizer]
    # With no weight decay AdamW is Adam exactly; with some, it decays the weights directly.
    settings = {**SMALL, "lr": lr, "weight_decay": 0.01 if optimizer == "adamw" else 0.0}
    model = TwoTower(vectors, use_cache=False, optimizer=optimizer, **settings).fit(split.train)
    assert model.log_.loss[-1] < model.log_.loss[0]
    adam = TwoTower(vectors, use_cache=False, **settings).fit(split.train)
    assert model.log_.loss != adam.log_.loss  # the optimiser really changed


@pytest.mark.parametrize(
    ("field", "other"), [("optimizer", "sgd"), ("lr_decay", 0.9), ("history_dropout", 0.3), ("user_ids", False)]
)
def test_later_fields_keep_older_cached_models(planted, field, other):
    from dataclasses import asdict

    from recutils.twotower import LATER_FIELDS, _key_fields

    vectors, split = planted
    default, changed = TwoTower(vectors, **SMALL), TwoTower(vectors, **{**SMALL, field: other})
    # At its default a later field is not part of the key, so models cached before it existed still match.
    assert field not in _key_fields(default.config) and _key_fields(changed.config)[field] == other
    assert {k: v for k, v in asdict(default.config).items() if k not in LATER_FIELDS} == _key_fields(default.config)
    assert default._cache_key(split.train) != changed._cache_key(split.train)


def test_bad_optimizer_name():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TwoTowerConfig(optimizer="lbfgs")


def test_history_dropout_averages_only_the_kept_items():
    vectors = torch.eye(4)
    net = TwoTowerNet(vectors, 1, TwoTowerConfig(hidden=4, out_dim=4, depth=1, dropout=0.0, user_input="text"))
    histories = Histories.from_matrix(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    keep = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # item 1 hidden; item 3 is not in the history anyway
    with torch.no_grad():
        dropped = net.user_vectors(torch.tensor([0]), histories, leave_out=torch.tensor([2]), keep=keep)
        # What is left: item 0 only, so the user tower reads vector 0 exactly.
        expected = torch.nn.functional.normalize(net.user_tower(vectors[[0]]), dim=1)
    assert torch.allclose(dropped, expected)


def test_lr_decay_and_history_dropout_change_training(planted):
    vectors, split = planted
    plain = TwoTower(vectors, use_cache=False, **SMALL).fit(split.train)
    users = torch.arange(split.train.n_users)
    for option in ({"lr_decay": 0.5}, {"history_dropout": 0.5}):
        other = TwoTower(vectors, use_cache=False, **SMALL, **option).fit(split.train)
        assert not torch.equal(plain.score(users), other.score(users)), option


def test_lr_decay_shrinks_the_steps_geometrically(planted):
    # With decay 0.1 the learning rate of epoch e is lr * 0.1**e: after many epochs the weights barely move.
    vectors, split = planted
    settings = {**SMALL, "epochs": 8}
    decayed = TwoTower(vectors, use_cache=False, lr_decay=0.1, **settings).fit(split.train)
    first = TwoTower(vectors, use_cache=False, lr_decay=0.1, **{**settings, "epochs": 6}).fit(split.train)
    def gap(a, b):
        return max((x - y).abs().max().item() for x, y in zip(a.net_.parameters(), b.net_.parameters()))

    # Epochs 7 and 8 run at lr * 1e-6 and 1e-7: the two models differ by a few such steps at most,
    # while without decay the same two epochs move the weights by many full-size steps.
    constant = TwoTower(vectors, use_cache=False, **settings).fit(split.train)
    constant_first = TwoTower(vectors, use_cache=False, **{**settings, "epochs": 6}).fit(split.train)
    assert gap(decayed, first) < 100 * SMALL["lr"] * 1e-6
    assert gap(constant, constant_first) > SMALL["lr"]


def test_user_ids_off_leaves_the_user_tower_without_id_vectors():
    vectors = torch.eye(4)
    net = TwoTowerNet(vectors, 3, TwoTowerConfig(id_dim=2, user_ids=False))
    assert net.user_ids is None and net.item_ids is not None


def test_careful_variant_names_the_design_trained_with_care():
    from recutils.variants import CAREFUL_SETTINGS, VARIANTS, careful_variant

    key = careful_variant("article_user")
    assert VARIANTS[key][1] == {"user_input": "text", **CAREFUL_SETTINGS}
    with pytest.raises(ValueError, match="no variant in VARIANTS trains 'bce'"):
        careful_variant("bce")
    with pytest.raises(ValueError, match="unknown two-tower variant"):
        careful_variant("nope")


def test_the_early_stopped_network_survives_the_refit_and_the_cache(planted, empty_cache, monkeypatch):
    vectors, split = planted
    validation = validation_split(split)
    settings = {**SMALL, "epochs": 4, "patience": 2}
    model = TwoTower(vectors, validation=validation, **settings).fit(split.train)
    early = model.early_stopped_net()
    with pytest.raises(RuntimeError, match="validation split"):
        TwoTower(vectors, use_cache=False, **{**SMALL, "epochs": 1}).fit(split.train).early_stopped_net()
    # It is the network that scored best on validation, not the refit one.
    assert evaluate(as_recommender(early, validation.train), validation)["NDCG@10"].iloc[0] == pytest.approx(
        model.validation_score_
    )
    monkeypatch.setattr(TwoTower, "_train", lambda *a, **k: pytest.fail("retrained despite the cache"))
    loaded = TwoTower(vectors, validation=validation, **settings).fit(split.train)
    assert all(torch.equal(a, b) for a, b in zip(early.state_dict().values(),
                                                 loaded.early_stopped_net().state_dict().values()))
    (loaded.cache_entry_ / "validation_model.safetensors").unlink()  # an entry from before it was kept
    with pytest.raises(RuntimeError, match="delete"):
        TwoTower(vectors, validation=validation, **settings).fit(split.train).early_stopped_net()


@pytest.mark.parametrize("first_refit", [True, False])
def test_a_cached_twin_lends_its_early_run_bit_for_bit(planted, empty_cache, monkeypatch, first_refit):
    # A model that differs from a cached one only in refit shares its run on validation: it must
    # not train that run again, and must end with the weights it would have trained itself.
    vectors, split = planted
    validation = validation_split(split)
    settings = {**SMALL, "epochs": 4, "patience": 2}
    alone = TwoTower(vectors, validation=validation, use_cache=False, **settings, refit=not first_refit).fit(split.train)
    TwoTower(vectors, validation=validation, **settings, refit=first_refit).fit(split.train)
    calls = []
    original = TwoTower._train
    monkeypatch.setattr(TwoTower, "_train", lambda self, *a: calls.append(a[2]) or original(self, *a))
    shared = TwoTower(vectors, validation=validation, **settings, refit=not first_refit).fit(split.train)
    assert all(monitor is None for monitor in calls)  # no run on validation, at most the refit
    assert len(calls) == (0 if first_refit else 1)
    assert shared.validation_log_.validation_ndcg == alone.validation_log_.validation_ndcg
    assert shared.log_.loss == alone.log_.loss
    assert all(torch.equal(a, b) for a, b in zip(shared.net_.state_dict().values(), alone.net_.state_dict().values()))


def test_a_damaged_twin_entry_means_training_in_full(planted, empty_cache, monkeypatch):
    vectors, split = planted
    validation = validation_split(split)
    settings = {**SMALL, "epochs": 3, "patience": 2}
    twin = TwoTower(vectors, validation=validation, **settings, refit=True).fit(split.train)
    (twin.cache_entry_ / "model.safetensors").write_bytes(b"not a checkpoint")
    calls = []
    original = TwoTower._train
    monkeypatch.setattr(TwoTower, "_train", lambda self, *a: calls.append(a[2]) or original(self, *a))
    TwoTower(vectors, validation=validation, **settings, refit=False).fit(split.train)
    assert len(calls) == 1 and calls[0] is validation  # the run on validation, trained again
