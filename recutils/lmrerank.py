"""A small generative language model as a re-ranker of another model's candidates.

The model is SmolLM2-135M-Instruct (:mod:`recutils.lm` loads it). A (history, candidate) pair
is scored by the next token after a prompt that asks "Would they enjoy …? Answer Yes or No.":
the log-probabilities of "Yes" and "No".

The history is the same for every candidate of a user, so it is run through the model once
and its key/value cache reused for every candidate (:meth:`PairScorer.score`); that gives the
same numbers as a full prompt per pair (:meth:`PairScorer.score_full`), several times faster.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recutils.cache import atomic_path, cache_dir, kernel_paths, warn_rebuild
from recutils.checks import check_int
from recutils.combine import normalise_scores
from recutils.embeddings import readable_title
from recutils.lm import LanguageModel
from recutils.metrics import hits_at_k, ndcg_at_k
from recutils.perturb import restrict_test
from recutils.recommender import Recommender
from recutils.sequences import ordered_histories
from recutils.similarity import top_k
from recutils.split import Interactions, Split

SYSTEM = "You recommend films."
QUESTION = "Would they enjoy {candidate}? Answer Yes or No."
CHOICE_QUESTION = "Which of these films would they enjoy most?\n{options}\nAnswer with one letter."
LETTERS = "ABCDEFGH"
# Bump when the prompt wording or the scoring changes, so cached scores are not reused.
PROMPT_VERSION = "yes-no-v1"

ScoreKind = Literal["odds", "yes"]
HistoryKind = Literal["time", "shuffled", "other user"]


class PairScorer:
    """Scores (history, candidate) pairs with a language model; results cached on disk.

    Args:
        lm: the language model (default: :meth:`LanguageModel.load`).
        max_prompt_tokens: the longest prompt allowed (default: the model's context).
            A longer one loses its oldest history titles, with a warning.
        batch_size: continuations run through the model at once.
    """

    def __init__(self, lm: LanguageModel | None = None, max_prompt_tokens: int | None = None,
                 batch_size: int = 32) -> None:
        self.lm = LanguageModel.load() if lm is None else lm
        self.max_prompt_tokens = check_int(
            self.lm.context if max_prompt_tokens is None else max_prompt_tokens, "max_prompt_tokens", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.yes, self.no = self.lm.token_id("Yes"), self.lm.token_id("No")
        self.head, self.tail = self._template_ends()

    def _template_ends(self) -> tuple[str, str]:
        """The chat template's text before and after the user's message."""
        marker = "\x00MESSAGE\x00"
        text = self.lm.tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": marker}],
            tokenize=False, add_generation_prompt=True)
        head, tail = text.split(marker)
        return head, tail

    def history_text(self, history: Sequence[str]) -> str:
        """The prompt up to the end of the history: what every candidate's prompt shares."""
        return self.head + "A user watched these films, oldest first:\n" + "".join(f"{t}\n" for t in history)

    def question(self, candidate: str) -> str:
        return QUESTION.format(candidate=candidate) + self.tail

    def choice_question(self, options: Sequence[str]) -> str:
        listed = "\n".join(f"{LETTERS[i]}. {title}" for i, title in enumerate(options))
        return CHOICE_QUESTION.format(options=listed) + self.tail

    def prompt(self, history: Sequence[str], candidate: str) -> str:
        """The whole prompt for one pair, as the model reads it."""
        return self.history_text(history) + self.question(candidate)

    def fit_history(self, history: Sequence[str], questions: Sequence[str]) -> list[str]:
        """The history with its oldest titles dropped until the prompt with the longest of
        ``questions`` fits ``max_prompt_tokens`` (a warning says how many were dropped)."""
        history = list(history)
        if not history:
            raise ValueError("the history is empty: the language model needs at least one film the user watched")
        if not questions:
            raise ValueError("no candidates to score")
        longest = max(len(self.lm.encode(q)) for q in questions)
        kept = history
        while len(self.lm.encode(self.history_text(kept))) + longest > self.max_prompt_tokens:
            if len(kept) == 1:
                raise ValueError(f"even a one-film history does not fit {self.max_prompt_tokens} tokens")
            kept = kept[1:]
        if len(kept) < len(history):
            warnings.warn(f"the prompt is longer than {self.max_prompt_tokens} tokens: kept the newest "
                          f"{len(kept)} of {len(history)} history films", stacklevel=3)
        return kept

    def score(self, history: Sequence[str], candidates: Sequence[str], cache: bool = True) -> torch.Tensor:
        """log P("Yes") and log P("No") as the next token, for each candidate.

        The history runs through the model once; each candidate's question continues from
        its key/value cache. Results are cached on disk, keyed by the model file, the prompt
        and the titles (``cache=False`` computes afresh, for timing).

        Args:
            history: titles the user watched, oldest first.
            candidates: titles to score.
        Returns: (len(candidates), 2) float32: columns log P(Yes), log P(No).
        """
        questions = [self.question(c) for c in candidates]
        return self._continuations(history, questions, [[self.yes, self.no]] * len(questions), cache)

    def choice_probabilities(self, history: Sequence[str], option_lists: Sequence[Sequence[str]]) -> torch.Tensor:
        """For each list of options, shown lettered A, B, …: P(letter) renormalised over the letters.

        Every list continues the same history, so its key/value cache is shared.

        Returns: (len(option_lists), n_options) float32, rows summing to 1.
        """
        sizes = {len(options) for options in option_lists}
        if len(sizes) != 1 or not 2 <= min(sizes) <= len(LETTERS):
            raise ValueError(
                f"give lists of one size between 2 and {len(LETTERS)} options, got sizes {sorted(sizes)}"
            )
        letters = [self.lm.token_id(LETTERS[i]) for i in range(sizes.pop())]
        questions = [self.choice_question(options) for options in option_lists]
        return self._continuations(history, questions, [letters] * len(questions)).softmax(-1)

    def _continuations(self, history: Sequence[str], questions: list[str], tokens: list[list[int]],
                       cache: bool = True) -> torch.Tensor:
        """log P(token) as the next token after history + question, for each question's tokens."""
        history = self.fit_history(history, questions)
        path = self._cache_path(history, questions, tokens)
        if cache and path.is_file():
            try:
                cached = torch.load(path, weights_only=True)
                if cached.shape == (len(questions), len(tokens[0])):
                    return cached
                warn_rebuild(path, f"shape {tuple(cached.shape)}")
            except Exception as problem:
                warn_rebuild(path, problem)
        result = self._run(history, questions, tokens)
        if cache:
            with atomic_path(path) as temporary:
                torch.save(result, temporary)
        return result

    def _cache_path(self, history: Sequence[str], questions: Sequence[str], tokens: list[list[int]]) -> Path:
        key = hashlib.sha256("\x1e".join([
            self.lm.digest, PROMPT_VERSION, kernel_paths(), self.history_text(history), "\x1f".join(questions), repr(tokens),
        ]).encode()).hexdigest()
        return cache_dir() / "lmscores" / key[:2] / f"{key}.pt"

    @torch.no_grad()
    def _run(self, history: list[str], questions: list[str], tokens: list[list[int]]) -> torch.Tensor:
        prefix = self.lm.encode(self.history_text(history))
        suffixes = []
        for question in questions:
            ids = self.lm.encode(self.history_text(history) + question)
            # The fast path is exact only if the whole prompt tokenises as the prefix followed
            # by the rest; a merge across the seam would change the tokens, so it is checked.
            if ids[: len(prefix)] != prefix:
                raise RuntimeError(f"the prompt {question[:40]!r}… does not tokenise at the history's end")
            suffixes.append(ids[len(prefix):])
        # Only the last position's next token is read, so the vocabulary projection (a fifth
        # of the model's work per token) runs on that position alone.
        body, head = self.lm.model.base_model, self.lm.model.get_output_embeddings()
        device = self.lm.device
        history_cache = body(torch.tensor([prefix], device=device), use_cache=True).cache
        rows = []
        for start in range(0, len(suffixes), self.batch_size):
            batch = suffixes[start : start + self.batch_size]
            cache = copy.deepcopy(history_cache)
            cache.batch_repeat_interleave(len(batch))
            lengths = torch.tensor([len(s) for s in batch], device=device)
            ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long, device=device)
            for row, suffix in enumerate(batch):
                ids[row, : len(suffix)] = torch.tensor(suffix)
            # Right padding: each real token sees only the history and the tokens before it,
            # so the pad tokens after it change nothing that is read.
            positions = torch.arange(len(prefix), len(prefix) + ids.shape[1], device=device).expand_as(ids)
            hidden = body(ids, cache=cache, position_ids=positions).last_hidden_state
            last = head(hidden[torch.arange(len(batch), device=device), lengths - 1]).log_softmax(-1)
            wanted = torch.tensor(tokens[start : start + len(batch)], device=device)
            rows.append(last.gather(1, wanted))
        return torch.cat(rows).float().cpu()

    @torch.no_grad()
    def score_full(self, history: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        """The same as :meth:`score`, one whole prompt per candidate (the slow reference)."""
        history = self.fit_history(history, [self.question(c) for c in candidates])
        rows = []
        for candidate in candidates:
            ids = torch.tensor([self.lm.encode(self.prompt(history, candidate))], device=self.lm.device)
            rows.append(self.lm.model(ids).logits[0, -1].log_softmax(-1)[[self.yes, self.no]])
        return torch.stack(rows).float().cpu()

    @torch.no_grad()
    def next_tokens(self, history: Sequence[str], candidate: str, top: int = 8) -> pd.DataFrame:
        """The model's most likely next tokens after one pair's prompt, with "Yes" and "No".

        Returns: a table indexed by token with its probability, most likely first.
        """
        history = self.fit_history(history, [self.question(candidate)])
        ids = torch.tensor([self.lm.encode(self.prompt(history, candidate))], device=self.lm.device)
        probabilities = self.lm.model(ids).logits[0, -1].softmax(-1).cpu()
        shown = dict.fromkeys([*top_k(probabilities.unsqueeze(0), top)[1][0].tolist(), self.yes, self.no])
        table = pd.DataFrame({
            "token": [repr(self.lm.tokenizer.decode([i])) for i in shown],
            "probability": [float(probabilities[i]) for i in shown],
        }).set_index("token")
        # Equal probabilities keep the listing's order (lower token id first), on every machine.
        return table.sort_values("probability", ascending=False, kind="stable")


class RandomPairScorer:
    """A control in place of :class:`PairScorer`: scores drawn at random, the same for the same
    (history, candidate) pair on every run, so a re-ranker built on it orders the pool at random."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, history: Sequence[str], candidates: Sequence[str], cache: bool = True) -> torch.Tensor:
        if not history:
            raise ValueError("the history is empty")
        keys = [zlib.crc32("\x1f".join([*history, c]).encode()) for c in candidates]
        yes = torch.tensor([np.random.default_rng([self.seed, key]).normal() for key in keys])
        return torch.stack([yes, torch.zeros_like(yes)], dim=1).float()


def film_titles(items: pd.DataFrame) -> list[str]:
    """One readable title per item, "The Shawshank Redemption (1994)", in item-index order."""
    titles = []
    for title, year in zip(items["title"], items["year"], strict=True):
        name = readable_title(str(title)) if isinstance(title, str) else "Unknown film"
        titles.append(name if pd.isna(year) else f"{name} ({int(year)})")
    return titles


class LMReranker(Recommender):
    """Re-ranks the top ``pool`` unseen items of a base recommender with a language model.

    Within each user's pool, the score is ``(1 - weight) · z(base) + weight · z(LM)``, with
    ``z`` standardising over the pool; pool items then rank above every other item, which keep
    the base model's order. ``weight = 0`` is the base model's ranking.

    Args:
        base: the recommender whose candidates are re-ranked (fitted here unless it is
            already fitted on the same train data).
        titles: one title per item (see :func:`film_titles`).
        scorer: the pair scorer (default: a :class:`PairScorer` over the packaged model,
            loaded at the first score).
        pool: candidates per user.
        n_history: newest history titles in the prompt.
        weight: the language model's share of the blend, in [0, 1].
        score: "odds" (log P(Yes) − log P(No)) or "yes" (log P(Yes)).
        history: "time" (oldest first), "shuffled" (the same titles in a seeded random order)
            or "other user" (another user's history: a control for whether it reads the user).
        seed: the seed of the shuffles and of the other-user pairing.
    """

    def __init__(self, base: Recommender, titles: Sequence[str], scorer: PairScorer | None = None,
                 pool: int = 20, n_history: int = 10, weight: float = 1.0, score: ScoreKind = "odds",
                 history: HistoryKind = "time", seed: int = 0) -> None:
        self.base, self.titles, self._scorer = base, list(titles), scorer
        self.pool = check_int(pool, "pool", minimum=1)
        self.n_history = check_int(n_history, "n_history", minimum=1)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {weight}")
        if score not in ("odds", "yes"):
            raise ValueError(f"score must be 'odds' or 'yes', got {score!r}")
        if history not in ("time", "shuffled", "other user"):
            raise ValueError(f"history must be 'time', 'shuffled' or 'other user', got {history!r}")
        self.weight, self.score_kind, self.history_kind, self.seed = weight, score, history, seed

    @property
    def name(self) -> str:
        return f"LM re-rank of {self.base.name}"

    @property
    def scorer(self) -> PairScorer:
        if self._scorer is None:
            self._scorer = PairScorer()
        return self._scorer

    def _fit(self, train: Interactions) -> None:
        if len(self.titles) != train.n_items:
            raise ValueError(f"{len(self.titles)} titles for {train.n_items} items")
        if self.pool > train.n_items:
            raise ValueError(f"pool={self.pool} is larger than the catalogue ({train.n_items} items)")
        fitted = hasattr(self.base, "train_") and self.base.train_.fingerprint() == train.fingerprint()
        if not fitted:
            self.base.fit(train)
        self.histories_ = ordered_histories(train)
        with_history = np.flatnonzero([len(h) > 0 for h in self.histories_])
        order = np.random.default_rng(self.seed).permutation(with_history)
        # Each user is paired with the next one in a random cycle: never with themselves.
        self.other_user_ = dict(zip(order.tolist(), np.roll(order, -1).tolist(), strict=True))

    def prompt_history(self, user: int) -> list[str]:
        """The titles the prompt shows for ``user`` under this model's ``history`` setting."""
        source = self.other_user_[user] if self.history_kind == "other user" else user
        items = self.histories_[source][-self.n_history:]
        if self.history_kind == "shuffled":
            items = np.random.default_rng([self.seed, user]).permutation(items)
        return [self.titles[i] for i in items]

    def shown_in_prompt(self, users: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(b, pool) bool: which of each user's candidates the prompt's history lists (only
        possible with another user's history: a user's own candidates are unseen films)."""
        users = self._check_users(users)
        source = [self.other_user_[u] if self.history_kind == "other user" else u for u in users.tolist()]
        shown = [set(self.histories_[s][-self.n_history:].tolist()) for s in source]
        pools = self.candidates(users).tolist()
        return torch.tensor([[i in films for i in row] for films, row in zip(shown, pools, strict=True)])

    def candidates(self, users: torch.Tensor) -> torch.Tensor:
        """(b, pool) int64: each user's top ``pool`` unseen items by the base model."""
        unseen = (~self.seen_[users]).sum(dim=1)
        if (unseen < self.pool).any():
            worst = int(torch.argmin(unseen))
            raise ValueError(f"pool={self.pool} is larger than the {int(unseen[worst])} unseen items "
                             f"of user {int(users[worst])}")
        return self.base.recommend(users, self.pool)

    def lm_scores(
        self, users: Sequence[int] | torch.Tensor, progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's candidates and the language model's (log P(Yes), log P(No)) for them.

        Returns: (b, pool) int64 items and (b, pool, 2) float32 scores.
        """
        users = self._check_users(users)
        candidates = self.candidates(users)
        scores = torch.stack([
            self.scorer.score(self.prompt_history(int(user)), [self.titles[i] for i in row.tolist()])
            for user, row in tqdm(zip(users, candidates, strict=True), total=len(users),
                                  desc="language model", unit="user", leave=False, disable=not progress)])
        return candidates, scores

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        base = self.base.score(users)
        candidates, pairs = self.lm_scores(users)
        lm = pairs[..., 0] - pairs[..., 1] if self.score_kind == "odds" else pairs[..., 0]
        blended = ((1 - self.weight) * normalise_scores(base.gather(1, candidates), "zscore")
                   + self.weight * normalise_scores(lm, "zscore"))
        in_pool = torch.zeros_like(base, dtype=torch.bool).scatter_(1, candidates, True)
        floor = base.masked_fill(in_pool, float("-inf")).max(dim=1, keepdim=True).values
        lifted = blended - blended.min(dim=1, keepdim=True).values + floor + 1.0
        return base.scatter(1, candidates, lifted)


def sample_test_users(
    split: Split, base: Recommender, pool: int, n_users: int, seed: int = 0
) -> tuple[Split, float]:
    """A split whose test keeps ``n_users`` users drawn at random among those with at least
    one test item in ``base``'s top ``pool`` (for the others a re-ranking cannot matter).

    Returns: the restricted split and the share of test users who qualify.
    """
    n_users = check_int(n_users, "n_users", minimum=1)
    relevant = split.test.items_by_user()
    users = torch.tensor(sorted(relevant), dtype=torch.int64)
    top = base.recommend(users, pool, candidates=split.candidates)
    hits = [bool(np.isin(row, relevant[int(u)]).any()) for u, row in zip(users, top.numpy(), strict=True)]
    eligible = users[torch.tensor(hits)].numpy()
    if len(eligible) < n_users:
        raise ValueError(f"only {len(eligible)} users have a test item in the top {pool}; asked for {n_users}")
    chosen = np.sort(np.random.default_rng(seed).choice(eligible, n_users, replace=False))
    return restrict_test(split, chosen), len(eligible) / len(users)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(rows, n) float64 ranks from 0 within each row, equal values sharing their mean rank."""
    values = x.double()
    ordered = torch.sort(values, dim=1).values
    first = torch.searchsorted(ordered, values, side="left")
    last = torch.searchsorted(ordered, values, side="right") - 1
    return (first + last).double() / 2


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman correlation, per row, between two score matrices over the same candidates.

    Tied values share their average rank (as in ``scipy.stats.spearmanr``): counts, such as
    items' popularity, tie often, and ranking ties by position would make the result depend
    on the order of the candidates.

    Args:
        a, b: (n_users, n_candidates) scores.
    Returns: (n_users,) float64 in [-1, 1]; NaN for a row whose values are all equal (no order).
    """
    if a.shape != b.shape or a.dim() != 2 or a.shape[1] < 2:
        raise ValueError(
            f"need two (users, candidates ≥ 2) matrices of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    ranks = [_average_ranks(x) for x in (a, b)]
    centred = [r - r.mean(dim=1, keepdim=True) for r in ranks]
    return ((centred[0] * centred[1]).sum(1) / (centred[0].norm(dim=1) * centred[1].norm(dim=1))).numpy()


def position_probe(model: LMReranker, split: Split, users: Sequence[int], n_options: int = 4) -> pd.DataFrame:
    """Several candidates in one prompt, with the relevant one moved through every position.

    For each user, the options are the best-ranked test item of the base model's pool and the
    ``n_options - 1`` best-ranked pool items that are not test items; the list is rotated so the
    test item sits at each letter in turn.

    Returns: one row per (user, position of the test item): ``user``, ``position`` (0 = A),
    ``p_relevant`` and ``p_A``, ``p_B``, … (the letters' probabilities).
    """
    relevant = split.test.items_by_user()
    users = torch.as_tensor(list(users), dtype=torch.int64)
    rows = []
    for user, pool in zip(users.tolist(), model.candidates(model._check_users(users)).tolist(), strict=True):
        hits = [i for i in pool if i in set(relevant.get(user, []))]
        others = [i for i in pool if i not in set(hits)][: n_options - 1]
        if not hits or len(others) < n_options - 1:
            raise ValueError(f"user {user} has no test item in the pool, or too few other items")
        options = [hits[0], *others]
        lists = [options[-shift:] + options[:-shift] if shift else options for shift in range(n_options)]
        probabilities = model.scorer.choice_probabilities(
            model.prompt_history(user), [[model.titles[i] for i in order] for order in lists])
        for order, p in zip(lists, probabilities.tolist(), strict=True):
            position = order.index(hits[0])
            rows.append({"user": user, "position": position, "p_relevant": p[position],
                         **{f"p_{LETTERS[j]}": p[j] for j in range(n_options)}})
    return pd.DataFrame(rows)


def best_order_ndcg(candidates: torch.Tensor, users: Sequence[int], split: Split, k: int = 10) -> pd.Series:
    """NDCG@k of the best possible re-ranking of each user's pool: its test items first.

    Args:
        candidates: (b, pool) the users' pools (e.g. from :meth:`LMReranker.candidates`).
        users: the b users, in the rows' order.
    Returns: per-user NDCG@k indexed by user (the ceiling of any re-ranker of these pools).
    """
    relevant = split.test.items_by_user()
    if k > candidates.shape[1]:
        raise ValueError(f"k={k} is larger than the pool ({candidates.shape[1]})")
    hits = hits_at_k(candidates, [relevant[int(u)] for u in users])
    best_first = hits.sort(dim=1, descending=True, stable=True).values[:, :k]
    n_relevant = torch.tensor([len(relevant[int(u)]) for u in users])
    return pd.Series(ndcg_at_k(best_first, n_relevant).numpy(), index=pd.Index(list(users), name="user"))
