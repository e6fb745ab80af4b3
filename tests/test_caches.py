"""Caches: a changed setting is a new entry, a damaged entry is rebuilt with a warning, writes
are atomic, and two processes filling one entry at once both succeed with the same result."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recutils.cache import atomic_folder, atomic_path, cached_folder
from recutils.data import make_synthetic
from recutils.split import temporal_split, validation_split
from recutils.text import TextEncoder, default_model_path
from recutils.twotower import TwoTower

TEXTS = ["Toy Story (1995). Genres: Animation, Children's, Comedy", "GOLDENEYE, a SPY film", "Heat"]
SMALL = dict(hidden=16, out_dim=8, batch_size=64, epochs=2, patience=1, dropout=0.1, lr=3e-3)


@pytest.fixture(scope="module")
def tiny():
    data = make_synthetic(n_users=40, n_items=30, per_user=8)
    split = temporal_split(data.interactions)
    vectors = torch.nn.functional.one_hot(torch.tensor(data.items["cluster"].to_numpy()), 3).float()
    vectors = vectors + 0.2 * torch.randn(len(vectors), 3, generator=torch.Generator().manual_seed(0))
    return split, validation_split(split), vectors


def _entries(cache: Path, kind: str) -> list[Path]:
    return sorted(p for p in (cache / kind).iterdir() if not p.name.startswith("."))


# --- a changed setting is another entry ------------------------------------------------------


def test_encoder_max_length_is_part_of_the_key(empty_cache):
    full = TextEncoder().encode(TEXTS, progress=False)
    short = TextEncoder(max_length=4).encode(TEXTS, progress=False)
    assert len(_entries(empty_cache, "embeddings")) == 2
    assert not torch.allclose(full[0], short[0])  # the first text is longer than 4 tokens


def test_encoder_tokenizer_files_are_part_of_the_key(empty_cache, tmp_path):
    """Same weights, one tokenizer setting changed: other vectors, so another cache entry."""
    copy = tmp_path / "cased"
    copy.mkdir()
    for file in default_model_path().iterdir():
        if file.is_file():
            (copy / file.name).symlink_to(file)  # the weights are shared, not copied
    settings = json.loads((default_model_path() / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").unlink()
    (copy / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    default, cased = TextEncoder(), TextEncoder(copy)
    assert default.fingerprint.split("|")[0] == cased.fingerprint.split("|")[0]  # same weights
    assert default.fingerprint != cased.fingerprint
    a, b = default.encode(TEXTS, progress=False), cased.encode(TEXTS, progress=False)
    assert len(_entries(empty_cache, "embeddings")) == 2
    assert float(a[1] @ b[1]) < 0.99  # the upper-case text is read differently


def test_two_tower_key_changes_with_config_and_validation(tiny):
    split, validation, vectors = tiny
    other_validation = temporal_split(split.train, test_share=2)
    key = TwoTower(vectors, validation=validation, **SMALL)._cache_key(split.train)
    assert key == TwoTower(vectors, validation=validation, **SMALL)._cache_key(split.train)
    assert key != TwoTower(vectors, validation=validation, **{**SMALL, "epochs": 3})._cache_key(split.train)
    assert key != TwoTower(vectors, validation=other_validation, **SMALL)._cache_key(split.train)
    assert key != TwoTower(vectors, **SMALL)._cache_key(split.train)
    assert key != TwoTower(vectors + 1e-3, validation=validation, **SMALL)._cache_key(split.train)


def test_models_and_embeddings_computed_on_other_kernels_are_cached_apart(tiny, monkeypatch):
    """A model trained on AVX-512 kernels differs in its last bits from one trained on AVX2
    kernels; a run on one must never read the other's entry."""
    split, validation, vectors = tiny
    encoder = TextEncoder()
    keys = {}
    for level in ("AVX2", "AVX512"):
        monkeypatch.setattr("recutils.twotower.kernel_paths", lambda level=level: level)
        monkeypatch.setattr("recutils.text.kernel_paths", lambda level=level: level)
        keys[level] = (TwoTower(vectors, validation=validation, **SMALL)._cache_key(split.train),
                       encoder._cache_key(TEXTS))
    assert keys["AVX2"][0] != keys["AVX512"][0] and keys["AVX2"][1] != keys["AVX512"][1]


def test_a_two_tower_setting_change_trains_a_new_model(tiny, empty_cache):
    split, validation, vectors = tiny
    TwoTower(vectors, validation=validation, **SMALL).fit(split.train)
    TwoTower(vectors, validation=validation, **{**SMALL, "out_dim": 4}).fit(split.train)
    assert len(_entries(empty_cache, "twotower")) == 2


# --- damaged entries are rebuilt --------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "empty", "nan", "shape"])
def test_a_damaged_embedding_entry_is_rebuilt_with_a_warning(empty_cache, damage):
    encoder = TextEncoder()
    good = encoder.encode(TEXTS, progress=False)
    (path,) = _entries(empty_cache, "embeddings")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "nan":
        save_file({"embeddings": torch.full_like(good, float("nan"))}, path)
    else:
        save_file({"embeddings": good[:2].contiguous()}, path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = encoder.encode(TEXTS, progress=False)
    assert torch.equal(again, good)
    assert torch.equal(load_file(path)["embeddings"], good)  # the entry is whole again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(encoder.encode(TEXTS, progress=False), good)


@pytest.mark.parametrize(
    "damage", ["no config", "truncated weights", "bad json", "nan weights", "empty folder"]
)
def test_a_damaged_two_tower_entry_is_retrained_with_a_warning(tiny, empty_cache, damage):
    split, validation, vectors = tiny
    first = TwoTower(vectors, validation=validation, **SMALL).fit(split.train)
    (folder,) = _entries(empty_cache, "twotower")
    weights, config = folder / "model.safetensors", folder / "config.json"
    if damage == "no config":
        config.unlink()  # a crash between the two writes of the old code
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:200])
    elif damage == "bad json":
        config.write_text(config.read_text()[:50])
    elif damage == "nan weights":
        state = load_file(weights)
        name = next(n for n in state if n.startswith("item_tower"))
        state[name] = torch.full_like(state[name], float("nan"))
        save_file(state, weights)
    else:
        shutil.rmtree(folder)
        folder.mkdir()
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        second = TwoTower(vectors, validation=validation, **SMALL).fit(split.train)
    users = torch.arange(split.train.n_users)
    assert torch.equal(second.score(users), first.score(users))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = TwoTower(vectors, validation=validation, **SMALL).fit(split.train)
    assert torch.equal(third.score(users), first.score(users))
    assert [p.name for p in _entries(empty_cache, "twotower")] == [folder.name]
    assert not [p for p in (empty_cache / "twotower").iterdir() if p.name.startswith(".")]  # no leftovers


def test_loading_a_damaged_checkpoint_by_hand_raises(tiny, tmp_path):
    split, validation, vectors = tiny
    model = TwoTower(vectors, validation=validation, use_cache=False, **SMALL).fit(split.train)
    model.save(tmp_path / "saved")
    (tmp_path / "saved" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        TwoTower(vectors, validation=validation, **SMALL).load(tmp_path / "saved", split.train)
    model.save(tmp_path / "nan")
    state = load_file(tmp_path / "nan" / "model.safetensors")
    state = {k: v.fill_(float("nan")) if k.startswith("user_tower") else v for k, v in state.items()}
    save_file(state, tmp_path / "nan" / "model.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        TwoTower(vectors, validation=validation, **SMALL).load(tmp_path / "nan", split.train)


def test_atomic_path_keeps_the_old_content_when_writing_fails(tmp_path):
    path = tmp_path / "entry.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    with atomic_path(path) as partial:
        partial.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.bin"]


def test_a_reader_never_sees_half_an_atomic_write(tmp_path):
    """A reader polling the entry while it is rewritten sees either one whole version or the other."""
    path = tmp_path / "entry.bin"
    versions = [bytes([v]) * 4_000_000 for v in range(1, 5)]
    path.write_bytes(versions[0])
    seen, done = set(), threading.Event()

    def read():
        while not done.is_set():
            data = path.read_bytes()
            seen.add(data[0] if data in versions else -1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            for version in versions:
                with atomic_path(path) as partial:
                    partial.write_bytes(version)
    finally:
        done.set()
        reader.join()
    assert -1 not in seen and seen <= {1, 2, 3, 4}


def test_atomic_folder_appears_whole_keeps_a_copy_stored_first_and_replaces_a_damaged_one(tmp_path):
    entry = tmp_path / "kind" / "key"
    with atomic_folder(entry) as partial:
        (partial / "a").write_text("first")
        assert not entry.exists()
    assert (entry / "a").read_text() == "first"
    with atomic_folder(entry) as partial:  # another process stored the same entry first
        (partial / "a").write_text("second")
    assert (entry / "a").read_text() == "first"
    with atomic_folder(entry, replace=True) as partial:
        (partial / "a").write_text("third")
    assert (entry / "a").read_text() == "third"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "kind" / "failed") as partial:
        raise RuntimeError("the block failed")
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == ["key"]  # no temporary folder left


def test_cached_folder_loads_builds_and_rebuilds_a_damaged_entry(empty_cache):
    calls = []

    def load(folder):
        calls.append("load")
        if (folder / "value").read_text() != "good":
            raise ValueError("damaged")

    def build():
        calls.append("build")

    def save(folder):
        calls.append("save")
        (folder / "value").write_text("good")

    folder = cached_folder("things", "k1", load, build, save)
    assert folder == empty_cache / "things" / "k1" and calls == ["build", "save"]
    assert cached_folder("things", "k1", load, build, save) == folder and calls[2:] == ["load"]
    (folder / "value").write_text("bad")
    with pytest.warns(RuntimeWarning, match="things.k1 is unusable \\(ValueError: damaged\\); rebuilding it"):
        cached_folder("things", "k1", load, build, save)
    assert calls[3:] == ["load", "build", "save"] and (folder / "value").read_text() == "good"
    del calls[:]
    assert not cached_folder("things", "k2", load, build, save, use_cache=False).exists()
    assert calls == ["build"]


# --- two processes fill one entry at once ------------------------------------------------------

FILL_EMBEDDINGS = """
import sys, numpy as np
from recutils.text import TextEncoder
texts = [f"film number {i}, a story about {i % 7} friends" for i in range(300)]
np.save(sys.argv[1], TextEncoder(batch_size=16).encode(texts, progress=False).numpy())
"""

FILL_TWO_TOWER = """
import sys, numpy as np, torch
from recutils.data import make_synthetic
from recutils.split import temporal_split, validation_split
from recutils.twotower import TwoTower
data = make_synthetic(n_users=40, n_items=30, per_user=8)
split = temporal_split(data.interactions)
vectors = torch.nn.functional.one_hot(torch.tensor(data.items["cluster"].to_numpy()), 3).float()
calls = []
train = TwoTower._train
TwoTower._train = lambda self, *args, **kwargs: calls.append(1) or train(self, *args, **kwargs)
model = TwoTower(vectors, validation=validation_split(split), hidden=16, out_dim=8, epochs=4, patience=4, batch_size=64)
np.save(sys.argv[1], model.fit(split.train).score(torch.arange(40)).numpy())
print(len(calls))  # trainings this process ran: 2 (validation run, refit) or 0 (read from the cache)
"""


def _run_twice_at_once(script: str, cache: Path, tmp_path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Both processes' saved arrays and what they printed."""
    env = {**os.environ, "RECUTILS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    outputs = [tmp_path / f"out{i}.npy" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outputs
    ]
    printed = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        printed.append(stdout.strip())
    return [np.load(out) for out in outputs], printed


def test_two_processes_filling_one_embedding_entry_both_succeed(empty_cache, tmp_path):
    (first, second), _ = _run_twice_at_once(FILL_EMBEDDINGS, empty_cache, tmp_path)
    np.testing.assert_array_equal(first, second)
    (entry,) = _entries(empty_cache, "embeddings")
    np.testing.assert_array_equal(load_file(entry)["embeddings"].numpy(), first)
    assert not [p for p in (empty_cache / "embeddings").iterdir() if p.name.startswith(".")]


def test_two_processes_wanting_one_two_tower_train_it_once(empty_cache, tmp_path):
    (first, second), trainings = _run_twice_at_once(FILL_TWO_TOWER, empty_cache, tmp_path)
    np.testing.assert_array_equal(first, second)
    # One process trained (validation run and refit); the other waited on the lock and read it.
    assert sorted(trainings) == ["0", "2"]
    (entry,) = _entries(empty_cache, "twotower")
    # The refit model, and the early-stopped one it was refitted from (chapter 5b fine-tunes that).
    assert {p.name for p in entry.iterdir()} == {"model.safetensors", "validation_model.safetensors", "config.json"}
    assert not [p for p in (empty_cache / "twotower").iterdir() if p.name.startswith(".")]


# --- seeding inside recutils leaves the caller's random state alone ----------------------------


def test_training_a_two_tower_leaves_the_global_random_state_alone(tiny):
    split, validation, vectors = tiny
    torch.manual_seed(123)
    state = torch.get_rng_state()
    model = TwoTower(vectors, validation=validation, use_cache=False, **SMALL).fit(split.train)
    assert torch.equal(torch.get_rng_state(), state)
    # ...and the model does not depend on the caller's state either.
    torch.manual_seed(999)
    again = TwoTower(vectors, validation=validation, use_cache=False, **SMALL).fit(split.train)
    users = torch.arange(split.train.n_users)
    assert torch.equal(model.score(users), again.score(users))


def test_a_random_weight_encoder_leaves_the_global_random_state_alone(empty_cache):
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first = TextEncoder.with_random_weights(seed=3, use_cache=False)
    assert torch.equal(torch.get_rng_state(), state)
    second = TextEncoder.with_random_weights(seed=3, use_cache=False)
    assert torch.equal(first.encode(TEXTS, progress=False), second.encode(TEXTS, progress=False))
