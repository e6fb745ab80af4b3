"""The book's recommender behind an HTTP API (FastAPI, run by uvicorn), and a server process to call.

The model is built once at start-up (the careful two-tower, loaded from the cache) and never
trained inside a request. Endpoints (ids are MovieLens ids, not indices; every answer, errors
included, carries the model's cache key and the data fingerprint):

- ``GET /health``: status, catalogue size, the indexes served, the version;
- ``GET /users/{user_id}/recommendations?k=10&index=exact``: a known user, seen films excluded;
- ``POST /recommendations/from-films`` ``{"item_ids": [...], "k": 10}``: a new user folded in
  from films they liked (those films excluded);
- ``POST /recommendations/from-text`` ``{"text": "...", "k": 10}``: a new user from free text,
  encoded by the int8 encoder;
- ``GET /films/{item_id}/similar?k=10``: the films whose item-tower vectors are nearest.

Bad input is a 4xx whose JSON body names the problem (``{"error": ..., "version": ...}``).
``python -m recutils.serve`` (or ``make serve``) starts the book's service on 127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from starlette.exceptions import HTTPException

from recutils.checks import check_int
from recutils.index import INDEX_KINDS
from recutils.recommender import VectorRecommender, require_fitted_on
from recutils.split import Interactions
from recutils.twotower import TwoTower

#: Longest free text a new user may send; the encoder reads 256 tokens, about 1,000 characters.
MAX_TEXT_CHARS = 1000
#: Most liked films one fold-in request may name.
MAX_LIKED = 500
DEFAULT_INDEXES = ("exact", "hnsw")

Encode = Callable[[list[str]], torch.Tensor]


class ServedTower(VectorRecommender):
    """A fitted two-tower whose user tower reads u_emb (``user_input="text"``), with every
    vector a request needs computed once.

    ``TwoTower.score`` runs the item tower over the whole catalogue on every call (about 15 ms
    for MovieLens on one core); a service computes the item vectors i_h once, and the user
    vectors u_h of the known users too. Scores are the same cosines: ``score`` equals the base
    model's. New users are served from a u_emb of their own, without retraining (the towers are
    inductive): the mean of the BERT vectors of films they liked (fold-in, what the tower reads for
    a known user), or the BERT vector of a text (the other reading of the article's BERT(u)).

    Args:
        base: a fitted :class:`~recutils.twotower.TwoTower` with ``user_input="text"`` and no user ids.
        index: "exact" scores every film; "flat", "hnsw" or "ivf" search an index over i_h.
    """

    def __init__(self, base: TwoTower, index: str = "exact") -> None:
        if not hasattr(base, "net_"):
            raise RuntimeError(f"{base.name} is not fitted; fit it before serving it")
        if base.config.user_input != "text" or base.net_.user_ids is not None:
            raise ValueError(
                f"{base.name}: only a tower whose user tower reads the mean of the history's text vectors "
                f"(user_input='text', user_ids=False) can serve new users; this one has "
                f"user_input={base.config.user_input!r}, user_ids={base.config.user_ids}"
            )
        self.base = base
        self.use_index(index)

    @property
    def name(self) -> str:
        return self.base.name

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.base, train)
        self.item_h_ = self.base.item_embeddings()
        self.user_h_ = self.user_vectors(self.fold_in_inputs(self.seen_))

    def fold_in_inputs(self, liked: torch.Tensor) -> torch.Tensor:
        """u_emb of users given by the films they liked: (b, n_items) bool → (b, text_dim), the mean
        of those films' BERT vectors. Every row needs at least one film."""
        if (liked.sum(dim=1) == 0).any():
            raise ValueError("every user needs at least one liked film to be folded in")
        rows = liked.float()
        return rows @ self.base.item_vectors / rows.sum(dim=1, keepdim=True)

    def user_vectors(self, inputs: torch.Tensor) -> torch.Tensor:
        """u_h from u_emb: (b, text_dim) → (b, out_dim) unit vectors."""
        with torch.inference_mode():
            out = self.base.net_.user_tower(inputs.to(self.base.device))
            return torch.nn.functional.normalize(out, dim=1).cpu()

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_h_[users]

    def item_embeddings(self) -> torch.Tensor:
        return self.item_h_

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_h_[users] @ self.item_h_.T

    def recommend_inputs(self, inputs: torch.Tensor, k: int, exclude: torch.Tensor) -> torch.Tensor:
        """Top-k films for new users given by u_emb, ranked (ties included) as :meth:`recommend` ranks.

        Args:
            inputs: (b, text_dim) u_emb, from :meth:`fold_in_inputs` or a text encoder.
            exclude: (b, n_items) bool, films never to recommend (those the user liked).
        Returns: (b, k) int64 item indices, best first.
        """
        return self._nearest(self.user_vectors(inputs), exclude, k)

    def similar_items(self, items: torch.Tensor, k: int) -> torch.Tensor:
        """The k films whose i_h are nearest (cosine) to each of ``items`` (b,), the film itself
        excluded. Returns: (b, k) int64 item indices."""
        exclude = torch.nn.functional.one_hot(items, self.train_.n_items).bool()
        return self._nearest(self.item_h_[items], exclude, k)

    def _nearest(self, queries: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        k = check_int(k, "k", minimum=1)
        allowed = ~exclude
        if (allowed.sum(dim=1) < k).any():
            fewest = int(allowed.sum(dim=1).min())
            raise ValueError(f"k={k} is larger than the {fewest} films left to recommend")
        return self._top(queries @ self.item_h_.T, allowed, k)


def check_indexes(indexes: Sequence[str]) -> None:
    """Raises ValueError unless ``indexes`` names one or more of the index kinds a service can serve."""
    unknown = [kind for kind in indexes if kind not in INDEX_KINDS]
    if unknown or not indexes:
        raise ValueError(f"indexes must be some of {', '.join(INDEX_KINDS)}, got {list(indexes)}")


@dataclass
class Service:
    """What the app serves: the fitted model behind each index, the catalogue and the version.

    Attributes:
        models: one fitted :class:`ServedTower` per index kind, the first the default.
        encode: texts → (n, text_dim) unit vectors in the space of the model's item text vectors.
        user_ids, item_ids: the original id of each user and item index; titles: of each item.
        model_key: the model's cache key; data_fingerprint: of the interactions it was fitted on.
    """

    models: dict[str, ServedTower]
    encode: Encode
    user_ids: list[int]
    item_ids: list[int]
    titles: list[str]
    model_key: str
    data_fingerprint: str

    @classmethod
    def from_tower(
        cls,
        tower: TwoTower,
        user_ids: Sequence[int],
        item_ids: Sequence[int],
        titles: Sequence[str],
        encode: Encode,
        indexes: Sequence[str] = DEFAULT_INDEXES,
    ) -> Service:
        """Serve a fitted tower; each index is built here, at start-up, not by the first request."""
        check_indexes(indexes)
        train = tower.train_
        if (len(user_ids), len(item_ids), len(titles)) != (train.n_users, train.n_items, train.n_items):
            raise ValueError(
                f"{len(user_ids)} user ids, {len(item_ids)} item ids and {len(titles)} titles for "
                f"{train.n_users} users × {train.n_items} items"
            )
        models = {kind: ServedTower(tower, kind).fit(train) for kind in indexes}
        warm_user = int(torch.nonzero(train.user_counts())[0])
        for model in models.values():
            model.recommend([warm_user], 1)
        return cls(models, encode, [int(u) for u in user_ids], [int(i) for i in item_ids], list(titles),
                   Path(tower.cache_entry_).name, train.fingerprint())


def book_service(indexes: Sequence[str] = DEFAULT_INDEXES, seed: int = 0) -> Service:
    """The book's model as chapters 4-7 use it: the design :func:`~recutils.variants.choose_design`
    keeps, trained with care (:func:`~recutils.variants.careful_variant`), seed ``seed``, fitted on
    P1 train; new-user texts go through the int8 encoder. Everything loads from the cache when
    chapter 4 has run on these CPU paths (seconds); otherwise the towers train first (minutes)."""
    from recutils.data import load_movielens_100k
    from recutils.embeddings import item_text
    from recutils.split import temporal_split, validation_split
    from recutils.text import TextEncoder
    from recutils.variants import QUICK_VARIANTS, careful_variant, choose_design, train_variants

    data = load_movielens_100k()
    item_vectors = TextEncoder().encode(item_text(data.items), progress=False)
    p1 = temporal_split(data.interactions)
    validation = validation_split(p1)
    quick = train_variants(item_vectors, p1.train, validation, QUICK_VARIANTS, progress=False)
    variant = careful_variant(choose_design(quick).best)
    towers = train_variants(item_vectors, p1.train, validation, [variant], seeds=(seed,), progress=False)
    tower = towers[variant][0]
    # One text per request: caching its vector on disk would only fill the cache.
    encoder = TextEncoder(precision="int8", use_cache=False)
    return Service.from_tower(
        tower, data.users["user_id"].tolist(), data.items["item_id"].tolist(), data.items["title"].tolist(),
        lambda texts: encoder.encode(texts, progress=False), indexes,
    )


# --- the HTTP schemas ------------------------------------------------------------------------


class Version(BaseModel):
    """What shaped every answer: the model's cache key and the fingerprint of its train data."""

    model: str
    data: str


class Film(BaseModel):
    item_id: int
    title: str


class Recommendations(BaseModel):
    films: list[Film]
    index: str
    version: Version


class Health(BaseModel):
    status: str
    users: int
    films: int
    indexes: list[str]
    version: Version


class Problem(BaseModel):
    """The body of every 4xx: what was wrong with the request."""

    error: str
    version: Version


class FromFilms(BaseModel):
    """A new user given by films they liked (MovieLens ids, each once)."""

    model_config = ConfigDict(extra="forbid")
    item_ids: list[StrictInt] = Field(min_length=1, max_length=MAX_LIKED)
    k: StrictInt = Field(10, ge=1)

    @field_validator("item_ids")
    @classmethod
    def _distinct(cls, ids: list[int]) -> list[int]:
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"film ids must not repeat; repeated: {repeated}")
        return ids


class FromText(BaseModel):
    """A new user given by a text about what they like."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    k: StrictInt = Field(10, ge=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text must not be blank")
        return text


K = Annotated[int, Query(ge=1, description="how many films")]
PROBLEMS = {404: {"model": Problem}, 422: {"model": Problem}}


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over ``service``; its schemas document themselves at ``/docs``."""
    app = FastAPI(title="Recommending with pretrained language models", version=service.model_key)
    version = Version(model=service.model_key, data=service.data_fingerprint)
    user_index = {u: n for n, u in enumerate(service.user_ids)}
    item_index = {i: n for n, i in enumerate(service.item_ids)}
    n_items = len(service.item_ids)
    default_index = next(iter(service.models))

    def problem(status: int, error: str) -> JSONResponse:
        return JSONResponse(Problem(error=error, version=version).model_dump(), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "; ".join(_describe(error) for error in exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    def check_k(k: int, excluded: int = 0, why: str = "") -> int:
        """``k`` if that many films are left once ``excluded`` ones are dropped, else a 422."""
        if k > n_items - excluded:
            left = f"; {n_items - excluded} are left without the {why}" if excluded else ""
            raise HTTPException(422, f"k={k} is larger than the catalogue ({n_items} films{left})")
        return k

    def films(items: torch.Tensor, index: str) -> Recommendations:
        return Recommendations(
            films=[Film(item_id=service.item_ids[i], title=service.titles[i]) for i in items.tolist()],
            index=index, version=version,
        )

    def known(ids: Sequence[int], index: dict[int, int], what: str) -> list[int]:
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise HTTPException(404, f"{what} id {unknown[0]} is not in the catalogue "
                                     f"(ids {min(index)}..{max(index)}, {len(index)} {what}s)")
        return [index[i] for i in ids]

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", users=len(service.user_ids), films=n_items,
                      indexes=list(service.models), version=version)

    @app.get("/users/{user_id}/recommendations", response_model=Recommendations, responses=PROBLEMS)
    async def for_user(user_id: int, k: K = 10, index: str | None = None) -> Recommendations:
        """Top-k films for a known user, films they rated excluded."""
        index = index or default_index
        if index not in service.models:
            served = ", ".join(service.models)
            raise HTTPException(422, f"index {index!r} is not served; choose one of {served}")
        model = service.models[index]
        user = known([user_id], user_index, "user")
        k = check_k(k, int(model.seen_[user[0]].sum()), "films the user rated")
        return films(model.recommend(user, k)[0], index)

    @app.post("/recommendations/from-films", response_model=Recommendations, responses=PROBLEMS)
    async def from_films(request: FromFilms) -> Recommendations:
        """Top-k films for a new user folded in from films they liked (those excluded)."""
        model = service.models[default_index]
        liked = torch.zeros(1, n_items, dtype=torch.bool)
        liked[0, known(request.item_ids, item_index, "film")] = True
        k = check_k(request.k, len(request.item_ids), "liked films")
        return films(model.recommend_inputs(model.fold_in_inputs(liked), k, liked)[0], "exact")

    @app.post("/recommendations/from-text", response_model=Recommendations, responses=PROBLEMS)
    async def from_text(request: FromText) -> Recommendations:
        """Top-k films for a new user described by a text."""
        model = service.models[default_index]
        k = check_k(request.k)
        inputs = service.encode([request.text])
        return films(model.recommend_inputs(inputs, k, torch.zeros(1, n_items, dtype=torch.bool))[0], "exact")

    @app.get("/films/{item_id}/similar", response_model=Recommendations, responses=PROBLEMS)
    async def similar(item_id: int, k: K = 10) -> Recommendations:
        """The k films nearest to a film in the item tower's space."""
        item = known([item_id], item_index, "film")
        k = check_k(k, 1, "film asked about")
        return films(service.models[default_index].similar_items(torch.tensor(item), k)[0], "exact")

    return app


def _describe(error: dict) -> str:
    """One pydantic error as a phrase: where it is and what is wrong."""
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'cannot be parsed')})"
    return f"{where}: {error['msg']}"


# --- a server process ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started by :func:`start_server`; ``stop()`` ends it (also on leaving a ``with``)."""

    process: subprocess.Popen
    url: str
    log: Path

    def stop(self, timeout: float = 30.0) -> int:
        """Ask the server to stop (SIGTERM: uvicorn finishes open requests; Ray Serve shuts its
        cluster down), kill it after ``timeout`` seconds. Returns: its exit code; -15 (-SIGTERM)
        after uvicorn's clean shutdown, which ends by re-raising the signal it caught; 0 after
        Ray Serve's; -9 if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def leftovers(self) -> list[str]:
        """The processes the server started that are still alive, as "pid command" lines: every
        process in the server's own session (it starts one), such as Ray's workers and agents.
        Linux only (it reads /proc)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                session = int(stat[stat.rindex(")") + 2 :].split()[3])  # field 6, after "(comm) state"
                if session == self.process.pid:
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry.name} {command.strip() or stat.split()[1]}")
            except (OSError, ValueError):
                continue  # a process that ended while it was read
        return found

    def running(self) -> bool:
        """Whether the process exists (after ``stop`` it has been reaped, so its pid is gone)."""
        try:
            os.kill(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return self.process.poll() is None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(command: Sequence[str], port: int, log: Path, timeout: float = 300.0,
                 env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start ``command`` (a server that will listen on 127.0.0.1:``port``) and wait until its
    ``/health`` answers.

    Args:
        log: the file that receives the server's output (read back when it fails to start).
        timeout: seconds to wait; start-up that trains a model (a cold cache) takes long.
        env: the server's environment (default this process's).
    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout``; the message
            holds the end of its log.
    """
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        # In a session of its own, so that whatever it starts can be found (and checked gone) after it stops.
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=None if env is None else dict(env), start_new_session=True)
    server = ServerProcess(process, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"the server exited with code {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not answer within {timeout:g} s:\n{log.read_text()[-2000:]}")


def book_server(log: Path, port: int | None = None, indexes: Sequence[str] = DEFAULT_INDEXES,
                timeout: float = 300.0, env: Mapping[str, str] | None = None) -> ServerProcess:
    """The book's service (``python -m recutils.serve``) in a child process on 127.0.0.1; the
    arguments are :func:`start_server`'s."""
    port = free_port() if port is None else port
    command = [sys.executable, "-m", "recutils.serve", "--port", str(port), "--index", *indexes]
    return start_server(command, port, log, timeout, env)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m recutils.serve``: build the book's service, then serve it until stopped."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the book's recommender over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--index", nargs="+", default=list(DEFAULT_INDEXES), choices=INDEX_KINDS,
                        help="indexes to serve; the first is the default")
    args = parser.parse_args(argv)
    # A request's tensors are tiny: a second torch thread costs more in wake-ups than it saves
    # (5 ms against 1 ms for a known user, measured on 2 cores), and the other core is the
    # event loop's and the clients'.
    torch.set_num_threads(1)
    app = create_app(book_service(args.index))
    # No access log: a line per request would cost more than a recommendation does.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
