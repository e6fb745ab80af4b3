"""The two-tower model: u_h = MLP_u(u_emb), i_h = MLP_i(i_emb), r̂(u, i) = cos(u_h, i_h) / τ.

Both towers read frozen BERT vectors (optionally concatenated with learned id
embeddings). A user's input is the mean over their train history of either the
items' text vectors ("text") or the item tower's outputs ("history"); while
training, the target item is left out of that mean so the model cannot find
the answer in its own input.

Objectives: in-batch sampled softmax with temperature, optional logQ
correction (Yi et al. 2019) and masked accidental hits; or binary cross-entropy
on sampled negatives, which is what the article intends.

The book's variants of it are in :mod:`recutils.variants`, the bookkeeping its training loop
shares with the sequence tower in :mod:`recutils.training`, its files in :mod:`recutils.checkpoint`.
Over 500 lines as one idea: the network, its losses and the recommender that trains it, read together.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from recutils.cache import cache_dir, cached_folder, kernel_paths
from recutils.checkpoint import read_checkpoint, save_checkpoint
from recutils.checks import check_int, check_number
from recutils.index import IndexKind
from recutils.recommender import Recommender, VectorRecommender
from recutils.repeatable import repeatable_training
from recutils.split import Interactions, Split
from recutils.text import pick_device
from recutils.training import (
    EarlyStopped,
    EarlyStopping,
    TrainingLog,
    check_epoch,
    early_stop_then_refit,
    finish_training,
    history_keep_mask,
    record_epoch,
)

# Bump when training or architecture code changes, so cached models are retrained.
MODEL_VERSION = "twotower-v3"


#: The optimisers a tower can be trained with (``TwoTowerConfig.optimizer``), built from the
#: parameters, the learning rate and the weight decay. SGD uses momentum 0.9; AdamW applies the
#: weight decay to the weights directly instead of through the gradient.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, weight_decay: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
    "adamw": lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(
        params, lr=lr, momentum=0.9, weight_decay=weight_decay
    ),
    "rmsprop": lambda params, lr, weight_decay: torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay),
}
#: Config fields added after models had been cached, with their defaults. At the default they
#: are left out of the cache key and read as the default from older checkpoints, so those
#: models stay valid.
LATER_FIELDS: dict[str, object] = {
    "optimizer": "adam", "lr_decay": 1.0, "history_dropout": 0.0, "user_ids": True
}


@dataclass(frozen=True)
class TwoTowerConfig:
    """Architecture and training settings; saved beside the weights.

    ``lr_decay`` multiplies the learning rate after every epoch (1 = constant);
    ``history_dropout`` hides each history item from the user tower with that
    probability while training (0 = off). ``id_dim`` > 0 gives items (and, with
    ``user_ids``, users) a learned id vector beside their text input.
    """

    hidden: int = 256
    out_dim: int = 128
    depth: int = 2
    dropout: float = 0.1
    id_dim: int = 0
    user_input: Literal["text", "history", "query"] = "history"
    objective: Literal["softmax", "bce"] = "softmax"
    temperature: float = 0.05
    logq: bool = True
    negatives: int = 8
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 30
    patience: int = 3
    refit: bool = True
    seed: int = 0
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr_decay: float = 1.0
    history_dropout: float = 0.0
    user_ids: bool = True

    def __post_init__(self) -> None:
        if self.user_input not in ("text", "history", "query"):
            raise ValueError(f"user_input must be 'text', 'history' or 'query', got {self.user_input!r}")
        if self.objective not in ("softmax", "bce"):
            raise ValueError(f"objective must be 'softmax' or 'bce', got {self.objective!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("hidden", "out_dim", "depth", "negatives", "batch_size", "epochs", "patience"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.id_dim, "id_dim", minimum=0)
        check_int(self.seed, "seed")
        for name in ("dropout", "temperature", "lr", "weight_decay", "lr_decay", "history_dropout"):
            check_number(getattr(self, name), name)
        if not 0 <= self.dropout < 1 or self.temperature <= 0 or self.lr <= 0 or self.id_dim < 0:
            raise ValueError("need 0 <= dropout < 1, temperature > 0, lr > 0 and id_dim >= 0")
        if not 0 < self.lr_decay <= 1 or not 0 <= self.history_dropout < 1:
            raise ValueError(
                f"need 0 < lr_decay <= 1 and 0 <= history_dropout < 1, got {self.lr_decay} and {self.history_dropout}"
            )


def mlp(in_dim: int, hidden: int, out_dim: int, depth: int, dropout: float) -> nn.Sequential:
    """``depth`` linear layers with ReLU and dropout between them."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class Histories:
    """Each user's train items as 0/1 rows, for sums over histories."""

    def __init__(self, train: Interactions, device: torch.device | str = "cpu") -> None:
        self.matrix = train.matrix(binary=True).to(device)
        self.seen = self.matrix > 0

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> Histories:
        """Histories given directly as (n_users, n_items) 0/1 rows."""
        histories = cls.__new__(cls)
        histories.matrix = matrix.float()
        histories.seen = histories.matrix > 0
        return histories

    def sum(
        self, users: torch.Tensor, per_item: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns: (b, d) sums of ``per_item`` rows over each user's history, and (b,) history sizes.

        ``keep``: optional (b, n_items) 0/1 mask applied to the history rows first (history dropout).
        """
        rows = self.matrix[users]
        if keep is not None:
            rows = rows * keep
        return rows @ per_item, rows.sum(dim=1)


class TwoTowerNet(nn.Module):
    """The two towers over frozen item text vectors.

    Args:
        item_text: (n_items, text_dim) frozen BERT item vectors.
        n_users: number of users (for optional user id embeddings).
        config: sizes and the kind of user input.
        user_text: (n_users, text_dim) frozen user (query) vectors, for ``user_input="query"``.
    """

    def __init__(
        self,
        item_text: torch.Tensor,
        n_users: int,
        config: TwoTowerConfig,
        user_text: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        n_items, text_dim = item_text.shape
        self.register_buffer("item_text", item_text.float().clone())
        if config.user_input == "query":
            if user_text is None or user_text.shape != (n_users, text_dim):
                raise ValueError(f"user_input='query' needs user_text of shape ({n_users}, {text_dim})")
            self.register_buffer("user_text", user_text.float().clone())
        id_dim = config.id_dim
        self.item_ids = nn.Embedding(n_items, id_dim) if id_dim else None
        user_id_dim = id_dim if config.user_ids else 0
        self.user_ids = nn.Embedding(n_users, user_id_dim) if user_id_dim else None
        self.item_tower = mlp(text_dim + id_dim, config.hidden, config.out_dim, config.depth, config.dropout)
        user_in = text_dim if config.user_input in ("text", "query") else config.out_dim
        self.user_tower = mlp(user_in + user_id_dim, config.hidden, config.out_dim, config.depth, config.dropout)
        for module in (self.item_ids, self.user_ids):
            if module is not None:
                nn.init.normal_(module.weight, std=0.05)

    def item_vectors(self, items: torch.Tensor | None = None, normalise: bool = True) -> torch.Tensor:
        """Returns: (n, out_dim) item-tower outputs i_h (unit length when ``normalise``)."""
        index = torch.arange(len(self.item_text), device=self.item_text.device) if items is None else items
        x = self.item_text[index]
        if self.item_ids is not None:
            x = torch.cat([x, self.item_ids(index)], dim=1)
        out = self.item_tower(x)
        return nn.functional.normalize(out, dim=1) if normalise else out

    def user_vectors(
        self,
        users: torch.Tensor,
        histories: Histories,
        leave_out: torch.Tensor | None = None,
        all_items: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User-tower outputs u_h: from the user's own vector (``user_input="query"``), or
        from the mean of the history's item representations.

        Args:
            users: (b,) user indices.
            histories: the users' train items.
            leave_out: (b,) an item to drop from each user's history (the training target).
            all_items: precomputed item-tower outputs (unnormalised), to share work.
            keep: (b, n_items) 0/1 mask over the history rows (history dropout while
                training); it must keep each ``leave_out`` item, which is subtracted afterwards.
        Returns: (b, out_dim) unit-length vectors.
        """
        if self.config.user_input == "query":
            x = self.user_text[users]
            if self.user_ids is not None:
                x = torch.cat([x, self.user_ids(users)], dim=1)
            return nn.functional.normalize(self.user_tower(x), dim=1)
        if self.config.user_input == "text":
            per_item = self.item_text
        else:
            per_item = self.item_vectors(normalise=False) if all_items is None else all_items
        summed, counts = histories.sum(users, per_item, keep)
        if leave_out is not None:
            summed = summed - per_item[leave_out]
            counts = counts - 1
        x = summed / counts.clamp(min=1).unsqueeze(1).to(summed.dtype)
        if self.user_ids is not None:
            x = torch.cat([x, self.user_ids(users)], dim=1)
        return nn.functional.normalize(self.user_tower(x), dim=1)


def in_batch_softmax_loss(
    user_h: torch.Tensor,
    item_h: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
    accidental: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax where each user's positive competes with the batch's other items.

    logits[a, b] = cos(u_a, i_b) / τ − log q_b (with logQ correction), and the
    target of row a is column a.

    Args:
        user_h, item_h: (b, d) unit vectors of the batch's users and positive items.
        log_q: (b,) log sampling probability of each batch item (its train frequency);
            subtracting it stops popular items, which appear as negatives more
            often, from being pushed down too hard.
        accidental: (b, b) bool, True where item b is also a positive of user a
            (off the diagonal); those logits are masked out.
    Returns: the mean cross-entropy, a scalar.
    """
    logits = user_h @ item_h.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    if accidental is not None:
        off_diagonal = accidental & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def sampled_bce_loss(
    user_h: torch.Tensor, item_h: torch.Tensor, negative_h: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Binary cross-entropy: positives labelled 1, sampled negatives 0.

    Args:
        user_h, item_h: (b, d) unit vectors; negative_h: (b, n, d) unit vectors.
    Returns: the mean loss over positives and negatives, a scalar.
    """
    positive = (user_h * item_h).sum(dim=1) / temperature
    negative = torch.einsum("bd,bnd->bn", user_h, negative_h) / temperature
    logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


class TwoTower(EarlyStopped, VectorRecommender):
    """The two-tower recommender over frozen BERT item vectors.

    Args:
        item_vectors: (n_items, text_dim) item embeddings, e.g. from ``TextEncoder``.
        config: a :class:`TwoTowerConfig`; keyword arguments override its fields.
        validation: the validation split of the data ``fit`` will receive. When
            given, training first runs on ``validation.train`` with early stopping
            on validation NDCG@10; then, with ``config.refit``, it restarts on the
            full train data for the best number of epochs. Test is never used for choices.
        device: default CUDA when present, else CPU.
        use_cache: reuse a model trained earlier on identical inputs (``{cache}/twotower``).
        label: the name shown in result tables.
        user_vectors: (n_users, text_dim) frozen vectors of the users themselves (e.g. an
            encoded search query); with these the user tower reads them instead of a
            history (``user_input="query"``, set automatically), so users need no history.
        index: how ``recommend`` finds the top items: "exact" (score every item) or
            a nearest-neighbour index over the item tower's outputs ("flat", "hnsw", "ivf").
        progress: show a progress bar over the epochs while training.
    """

    def __init__(
        self,
        item_vectors: torch.Tensor,
        config: TwoTowerConfig | None = None,
        validation: Split | None = None,
        device: str | torch.device | None = None,
        use_cache: bool = True,
        label: str | None = None,
        user_vectors: torch.Tensor | None = None,
        index: IndexKind = "exact",
        progress: bool = True,
        **overrides: object,
    ) -> None:
        if item_vectors.ndim != 2:
            raise ValueError(f"item_vectors must be (n_items, dim), got shape {tuple(item_vectors.shape)}")
        self.item_vectors = item_vectors.float()
        if user_vectors is not None:
            if user_vectors.ndim != 2 or user_vectors.shape[1] != item_vectors.shape[1]:
                raise ValueError(
                    f"user_vectors must be (n_users, {item_vectors.shape[1]}), got {tuple(user_vectors.shape)}"
                )
            overrides = {**overrides, "user_input": "query"}
        self.user_vectors = None if user_vectors is None else user_vectors.float()
        self.config = TwoTowerConfig(**{**asdict(config or TwoTowerConfig()), **overrides})
        if self.config.user_input == "query" and self.user_vectors is None:
            raise ValueError("user_input='query' needs user_vectors")
        self.needs_history = self.config.user_input != "query"
        self.validation, self.device, self.use_cache = validation, pick_device(device), use_cache
        self.label, self.progress = label, progress
        self.use_index(index)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        c = self.config
        extras = [", logQ" if c.logq and c.objective == "softmax" else "", ", ids" if c.id_dim else ""]
        return f"TwoTower({c.objective}, τ={c.temperature:g}{''.join(extras)})"

    # --- fitting -------------------------------------------------------------------------

    def _fit(self, train: Interactions) -> None:
        if len(self.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(self.item_vectors)} rows for {train.n_items} items")
        if self.user_vectors is not None and len(self.user_vectors) != train.n_users:
            raise ValueError(f"user_vectors has {len(self.user_vectors)} rows for {train.n_users} users")
        if self.config.batch_size > len(train):
            raise ValueError(
                f"batch_size {self.config.batch_size} is larger than the {len(train)} train interactions"
            )
        # Under a lock: another process training the same model (the other notebook group)
        # finishes first, and this one loads its entry.
        self.cache_entry_ = cached_folder(
            "twotower", self._cache_key(train), lambda folder: self._load_folder(folder, train),
            lambda: self._train_and_refit(train), self.save, self.use_cache,
        )

    def _train_and_refit(self, train: Interactions) -> None:
        # The towers are inductive: without refit, the early-stopped model scores users from
        # their full train histories without retraining.
        self.net_, self.log_, early, self.validation_log_ = early_stop_then_refit(
            self._train, train, self.validation, self.config.epochs, self.config.refit, self._cached_early_run(train)
        )
        self.validation_net_ = early if self.config.refit else None  # kept: chapter 5b fine-tunes from it
        self._histories = Histories(train, self.device)

    def _cached_early_run(self, train: Interactions) -> tuple[TwoTowerNet, TrainingLog] | None:
        """The early-stopped network and log of this run, from a cached model that differs from
        this one only in ``refit`` (its run on validation is this one's, bit for bit), or None.

        A validation grid can then train without refits, and the setting it chooses is refit
        without training its early run again (and the other way round).
        """
        if self.validation is None or not self.use_cache:
            return None
        twin = copy.copy(self)
        twin.config = replace(self.config, refit=not self.config.refit)
        folder = cache_dir() / "twotower" / twin._cache_key(train)
        if not folder.is_dir():  # an entry is moved into place only when whole
            return None
        try:
            twin._load_folder(folder, train)
        except Exception:  # a damaged entry only loses the shortcut: this run trains in full
            return None
        early = twin.validation_net_ if twin.config.refit else twin.net_
        if early is None:  # an entry saved before the early-stopped network was kept
            return None
        return early, copy.deepcopy(twin.validation_log_)

    def _train(
        self, train: Interactions, epochs: int, monitor: Split | None
    ) -> tuple[TwoTowerNet, TrainingLog]:
        # Multithreaded CPU kernels (the backward of gathers) add in varying order, so two
        # runs with one seed would differ in the last bits and drift apart; the notebooks'
        # checked numbers need bit-for-bit repeatable training. Training seeds the global
        # generator (initial weights, dropout); the caller's random state is restored afterwards.
        with repeatable_training(one_thread=False):
            return self._train_loop(train, epochs, monitor)

    def _train_loop(
        self, train: Interactions, epochs: int, monitor: Split | None
    ) -> tuple[TwoTowerNet, TrainingLog]:
        c = self.config
        torch.manual_seed(c.seed)
        generator = torch.Generator().manual_seed(c.seed)
        net = TwoTowerNet(self.item_vectors, train.n_users, c, self.user_vectors).to(self.device)
        optimiser = OPTIMIZERS[c.optimizer](net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, c.lr_decay) if c.lr_decay < 1 else None
        histories = Histories(train, self.device)
        users, items = train.column("user"), train.column("item")
        counts = train.item_counts().float()
        log_q = torch.log((counts / counts.sum()).clamp(min=1e-12)).to(self.device)
        log, stopping = TrainingLog(), EarlyStopping(c.patience)
        steps = math.ceil(len(users) / c.batch_size)
        bar = tqdm(range(epochs), desc=f"training {self.name}", unit="epoch", leave=False, disable=not self.progress)
        for epoch in bar:
            net.train()
            started, total = time.perf_counter(), 0.0
            order = torch.randperm(len(users), generator=generator)
            for step in range(steps):
                batch = order[step * c.batch_size : (step + 1) * c.batch_size]
                u, i = users[batch].to(self.device), items[batch].to(self.device)
                loss = self._batch_loss(net, u, i, histories, log_q, generator)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item()
            record_epoch(log, total, steps, started, self.name,
                         f"optimizer {c.optimizer}, lr {c.lr:g}, temperature {c.temperature:g}")
            if schedule is not None:
                schedule.step()
            if monitor is not None and check_epoch(
                log, stopping, _FrozenTwoTower(net, monitor.train, self.device), monitor, epoch, bar, net
            ):
                break
        return finish_training(log, stopping, net), log

    def _batch_loss(
        self,
        net: TwoTowerNet,
        u: torch.Tensor,
        i: torch.Tensor,
        histories: Histories,
        log_q: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        c = self.config
        all_items = net.item_vectors(normalise=False) if c.user_input == "history" else None
        keep = history_keep_mask(i, histories.matrix.shape[1], c.history_dropout, generator)
        keep = None if keep is None else keep.to(self.device)
        user_h = net.user_vectors(u, histories, leave_out=i, all_items=all_items, keep=keep)
        if all_items is not None:
            item_h = nn.functional.normalize(all_items[i], dim=1)
        else:
            item_h = net.item_vectors(i)
        if c.objective == "softmax":
            accidental = histories.seen[u.unsqueeze(1), i.unsqueeze(0)]
            return in_batch_softmax_loss(
                user_h, item_h, c.temperature, log_q[i] if c.logq else None, accidental
            )
        negatives = torch.randint(0, len(net.item_text), (len(u), c.negatives), generator=generator).to(
            self.device
        )
        if all_items is not None:
            negative_h = nn.functional.normalize(all_items[negatives], dim=2)
        else:
            negative_h = net.item_vectors(negatives.reshape(-1)).reshape(len(u), c.negatives, -1)
        return sampled_bce_loss(user_h, item_h, negative_h, c.temperature)

    # --- scoring ---------------------------------------------------------------------------

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return _score_with(self.net_, users, self._histories, self.device)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net_.user_vectors(users.to(self.device), self._histories).cpu()

    def item_embeddings(self) -> torch.Tensor:
        with torch.inference_mode():
            return self.net_.item_vectors().cpu()

    def score_histories(self, histories: torch.Tensor) -> torch.Tensor:
        """Scores for users given only as (b, n_items) 0/1 history rows, without retraining
        (the towers are inductive). Returns: (b, n_items) float32 cosine scores."""
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{self.name} is not fitted; call fit first")
        if self.config.user_input == "query":
            raise ValueError("a query tower scores users from their own vectors, not from histories")
        rows = Histories.from_matrix(histories.to(self.device))
        return _score_with(self.net_, torch.arange(len(histories)), rows, self.device)

    # --- persistence -----------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (with the training log) into ``folder``."""
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{self.name} is not fitted; nothing to save")
        meta = {**self.training_meta(MODEL_VERSION, self.train_), "n_users": self.train_.n_users,
                "n_items": self.train_.n_items}
        nets = {"model": self.net_, "validation_model": getattr(self, "validation_net_", None)}
        return save_checkpoint(folder, nets, meta)

    def load(self, folder: str | Path, train: Interactions) -> TwoTower:
        """Load weights saved by :meth:`save` for the data ``train``; returns self, ready to score.

        Raises:
            FileNotFoundError: no checkpoint in ``folder``.
            ValueError: the checkpoint was made with another config, other data or other item vectors.
        """
        self._bind(train)
        self._load_folder(Path(folder), train)
        return self

    def _load_folder(self, folder: Path, train: Interactions) -> None:
        inputs = {
            "item_text": ("item vectors", self.item_vectors),
            "user_text": ("user vectors", self.user_vectors),
        }
        meta, state = read_checkpoint(
            folder, "two-tower", asdict(self.config), train.fingerprint(), LATER_FIELDS, inputs
        )
        net = TwoTowerNet(self.item_vectors, train.n_users, self.config, self.user_vectors)
        net.load_state_dict(state)
        self.net_ = net.to(self.device).eval()
        self.validation_net_ = None
        if (folder / "validation_model.safetensors").is_file():
            early = TwoTowerNet(self.item_vectors, train.n_users, self.config, self.user_vectors)
            early.load_state_dict(load_file(folder / "validation_model.safetensors"))
            self.validation_net_ = early.to(self.device).eval()
        self.log_ = TrainingLog(**meta["log"])
        self.validation_log_ = TrainingLog(**meta["validation_log"]) if meta["validation_log"] else None
        self._histories = Histories(train, self.device)

    def _cache_key(self, train: Interactions) -> str:
        digest = hashlib.sha256(f"{MODEL_VERSION}|{kernel_paths()}".encode())
        digest.update(json.dumps(_key_fields(self.config), sort_keys=True).encode())
        digest.update(train.fingerprint().encode())
        digest.update(self.item_vectors.numpy().tobytes())
        if self.user_vectors is not None:
            digest.update(self.user_vectors.numpy().tobytes())
        if self.validation is not None:
            digest.update(
                repr((self.validation.train.fingerprint(), self.validation.test.fingerprint())).encode()
            )
        return digest.hexdigest()[:32]

    def parameter_count(self) -> int:
        """Trainable parameters (the frozen BERT vectors are not counted)."""
        return sum(p.numel() for p in self.net_.parameters())

    def early_stopped_net(self) -> TwoTowerNet:
        """The network as early stopping on validation left it, trained on ``validation.train``
        only: ``net_`` without refit, the network before the refit otherwise.

        Raises:
            RuntimeError: not fitted, fitted without a validation split, or loaded from a cache
                entry saved before the early-stopped network was kept (refit with use_cache=False).
        """
        if not hasattr(self, "net_") or self.validation is None:
            raise RuntimeError(f"{self.name} is not fitted with a validation split")
        if not self.config.refit:
            return self.net_
        if self.validation_net_ is None:
            raise RuntimeError(
                f"{self.name} was loaded from a cache entry saved before the early-stopped network "
                f"was kept; delete {self.cache_entry_} and fit it again"
            )
        return self.validation_net_


def _key_fields(config: TwoTowerConfig) -> dict[str, object]:
    """The config as the cache key sees it: later fields at their default left out."""
    return {k: v for k, v in asdict(config).items() if not (k in LATER_FIELDS and LATER_FIELDS[k] == v)}


def _score_with(
    net: TwoTowerNet, users: torch.Tensor, histories: Histories, device: torch.device
) -> torch.Tensor:
    """(b, n_items) cosine scores, computed in batches of users."""
    out = []
    with torch.inference_mode():
        raw_items = net.item_vectors(normalise=False)
        items = nn.functional.normalize(raw_items, dim=1)
        for start in range(0, len(users), 1024):
            user_h = net.user_vectors(users[start : start + 1024].to(device), histories, all_items=raw_items)
            out.append((user_h @ items.T).cpu())
    return torch.cat(out)


def as_recommender(net: TwoTowerNet, train: Interactions) -> Recommender:
    """A network being trained (e.g. by hand) seen through the recommender interface, for ``evaluate``."""
    return _FrozenTwoTower(net, train, next(net.parameters()).device)


class _FrozenTwoTower(Recommender):
    """A trained network seen through the recommender interface, for validation during training."""

    def __init__(self, net: TwoTowerNet, train: Interactions, device: torch.device) -> None:
        self.net, self.device = net, device
        self.needs_history = net.config.user_input != "query"
        self.fit(train)

    def _fit(self, train: Interactions) -> None:
        self.net.eval()
        self.histories = Histories(train, self.device)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return _score_with(self.net, users, self.histories, self.device)
