"""SASRec (Kang & McAuley 2018): the reference self-attentive sequential recommender, from item ids.

Each user's last ``max_len`` train items (oldest first, padded on the left) are embedded
from their ids, scaled by √d as in the authors' code, plus a learned embedding of each
position. Blocks of causal self-attention (position t sees positions ≤ t) and a point-wise
feed-forward layer follow, each as x + Dropout(g(LayerNorm(x))), then a final layer norm. The
score of item i for a user is the last position's output F · M_i, where M is the same item
embedding the input uses. Training follows the paper: at every position the next item is a
positive and one train item the user never interacted with (drawn uniformly, as the authors
draw from their item set, which after their re-indexing holds only items with data) is a negative, with
binary cross-entropy, Adam (lr 1e-3, β₂ = 0.98) and batches of 128 users. Early stopping
on a validation split's NDCG@10 chooses the epoch count.

The attention and the padding convention are :mod:`recutils.seqtower`'s; unlike the authors'
code, the attention weights themselves are not dropped out (the paper's equations drop out
each block's output only).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recutils.cache import cached_folder, kernel_paths
from recutils.checkpoint import read_checkpoint, save_checkpoint
from recutils.checks import check_int, check_number
from recutils.recommender import Recommender, VectorRecommender
from recutils.repeatable import repeatable_training
from recutils.seqtower import CausalSelfAttention, last_windows
from recutils.sequences import ordered_histories
from recutils.split import Interactions, Split
from recutils.text import pick_device
from recutils.training import (
    EarlyStopped,
    EarlyStopping,
    TrainingLog,
    check_epoch,
    early_stop_then_refit,
    finish_training,
    record_epoch,
)

# Bump when training or architecture code changes, so cached models are retrained.
MODEL_VERSION = "sasrec-v1"


@dataclass(frozen=True)
class SASRecConfig:
    """Settings of :class:`SASRec`; the defaults are the paper's for MovieLens.

    ``max_len`` is n, the number of latest train items read (and trained on: a longer history
    contributes its last ``max_len`` next-item targets per epoch, as in the authors' sampler).
    ``epochs`` is the most that early stopping may use; it stops after ``patience`` epochs
    without a better validation NDCG@10.
    """

    max_len: int = 200
    blocks: int = 2
    heads: int = 2
    hidden: int = 64
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    patience: int = 20
    refit: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # Stored as plain ints (a numpy integer from a validation table would not go into JSON).
        for name in ("max_len", "blocks", "heads", "hidden", "batch_size", "epochs", "patience"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum=1))
        object.__setattr__(self, "seed", check_int(self.seed, "seed"))
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not 0 <= check_number(self.dropout, "dropout") < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        check_number(self.lr, "lr", low=0, low_open=True)


class SASRecBlock(nn.Module):
    """One self-attention block: x + Dropout(SA(LN(x))), then x + Dropout(FFN(LN(x))).

    FFN(x) = ReLU(x W₁ + b₁) W₂ + b₂ with d × d weights, as in the paper.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_attention, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Args: x (b, L, d); padding (b, L) bool, True at padded positions. Returns: (b, L, d),
        zero at padded positions."""
        x = x + self.drop(self.attention(self.norm_attention(x), padding))
        x = x + self.drop(self.ffn(self.norm_ffn(x)))
        return x * (~padding).unsqueeze(-1)


class SASRecNet(nn.Module):
    """Item and position embeddings, ``config.blocks`` blocks and a final layer norm.

    Args:
        n_items: size of the item index space.
        config: sizes.
    """

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden
        self.items = nn.Embedding(n_items, d)
        self.positions = nn.Embedding(config.max_len, d)
        # Xavier-normal embeddings, as the authors' code initialises its lookup tables.
        nn.init.xavier_normal_(self.items.weight)
        nn.init.xavier_normal_(self.positions.weight)
        self.blocks = nn.ModuleList(
            SASRecBlock(d, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.norm_out = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)

    def encode(self, sequences: torch.Tensor) -> torch.Tensor:
        """The network at every position.

        Args:
            sequences: (b, L) item indices, oldest first, padded on the left with -1; L <= max_len.
        Returns: (b, L, hidden); row t summarises the items up to position t. The output at a
            real position does not depend on how much padding precedes it.
        """
        padding = sequences < 0
        length = sequences.shape[1]
        x = self.items(sequences.clamp(min=0)) * math.sqrt(self.config.hidden)
        # The last item always gets the last position embedding, however long the history.
        x = self.drop(x + self.positions.weight[self.config.max_len - length :])
        x = x * (~padding).unsqueeze(-1)
        for block in self.blocks:
            x = block(x, padding)
        return self.norm_out(x)


def trim_padding(sequences: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row (of ``sequences`` and of each
    ``aligned`` (b, L) tensor): the outputs at real positions stay the same, and a batch of
    short histories need not run at ``max_len``."""
    width = max(1, int((sequences >= 0).sum(dim=1).max()))
    return tuple(t[:, -width:] for t in (sequences, *aligned))


def _user_states(
    net: SASRecNet, histories: list[np.ndarray], users: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """(b, hidden) each user's last-position output, from their last ``max_len`` train items."""
    # Chunks of users with similar history lengths carry little padding (trim_padding drops
    # it); the outputs are those of any other grouping.
    lengths = torch.tensor([min(len(histories[u]), net.config.max_len) for u in users.tolist()])
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(users), net.config.hidden, device=device)
    with torch.inference_mode():
        for start in range(0, len(users), 256):
            rows = order[start : start + 256]
            (sequences,) = trim_padding(last_windows(histories, users[rows], net.config.max_len))
            out[rows.to(device)] = net.encode(sequences.to(device))[:, -1]
    return out


def _score_with(
    net: SASRecNet, histories: list[np.ndarray], users: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """(b, n_items) scores F · M_i."""
    with torch.inference_mode():
        return (_user_states(net, histories, users, device) @ net.items.weight.T).cpu()


def sample_unseen(seen: torch.Tensor, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One negative per position: items drawn uniformly from those each row's user has not seen.

    Args:
        seen: (b, n_items) bool, each row's train items; no row may be all True.
        shape: (b, L).
    Returns: (b, L) int64 item indices.
    """
    if bool(seen.all(dim=1).any()):
        raise ValueError("a row has no unseen item to draw a negative from")  # else the loop never ends
    negatives = torch.randint(seen.shape[1], shape, generator=generator)
    clash = seen.gather(1, negatives)
    while clash.any():  # rejection sampling, as the authors' code does: redraw the seen ones
        negatives[clash] = torch.randint(seen.shape[1], (int(clash.sum()),), generator=generator)
        clash = seen.gather(1, negatives)
    return negatives


class SASRec(EarlyStopped, VectorRecommender):
    """SASRec (see the module docstring) behind the book's recommender interface.

    A user with one train item is scored from it (and gives no training pair); a user with none
    cannot be scored (ValueError). Items with no train interaction are never sampled as
    negatives and keep their initial embedding (rank only the split's candidates).

    Args:
        config: a :class:`SASRecConfig`; keyword arguments override its fields.
        validation: ``validation_split`` of the split ``fit`` receives; training early-stops on
            its NDCG@10, then (``refit``) retrains on all of train for the chosen epoch count.
            Without it, training runs ``epochs`` epochs.
        device: where to train and score; default CUDA when present, else the CPU.
        use_cache: reuse a model trained on identical inputs (``{cache}/sasrec``).
        label: the name in result tables.
        progress: show a progress bar over epochs.
    """

    def __init__(
        self,
        config: SASRecConfig | None = None,
        validation: Split | None = None,
        device: str | torch.device | None = None,
        use_cache: bool = True,
        label: str | None = None,
        progress: bool = True,
        **overrides: object,
    ) -> None:
        self.config = SASRecConfig(**{**asdict(config or SASRecConfig()), **overrides})
        self.validation, self.device, self.use_cache = validation, pick_device(device), use_cache
        self.label, self.progress = label, progress
        self.use_index("exact")

    @property
    def name(self) -> str:
        return self.label or "SASRec"

    def _fit(self, train: Interactions) -> None:
        n_in_train = int((train.item_counts() > 0).sum())
        full = torch.nonzero(train.user_counts() >= n_in_train).squeeze(1)
        if len(full):
            raise ValueError(
                f"user {int(full[0])} has interacted with every item in train ({n_in_train}): no negative to sample"
            )
        cached_folder(
            "sasrec", self._cache_key(train), lambda folder: self._load(folder, train),
            lambda: self._train_and_refit(train), lambda folder: self._save(folder, train), self.use_cache,
        )

    def _train_and_refit(self, train: Interactions) -> None:
        self.net_, self.log_, _, self.validation_log_ = early_stop_then_refit(
            self._train, train, self.validation, self.config.epochs, self.config.refit
        )
        self._histories = ordered_histories(train)

    def _train(
        self, train: Interactions, epochs: int, monitor: Split | None
    ) -> tuple[SASRecNet, TrainingLog]:
        with repeatable_training():
            return self._train_loop(train, epochs, monitor)

    def _train_loop(
        self, train: Interactions, epochs: int, monitor: Split | None
    ) -> tuple[SASRecNet, TrainingLog]:
        c = self.config
        torch.manual_seed(c.seed)
        generator = torch.Generator().manual_seed(c.seed)
        histories = ordered_histories(train)
        users = torch.tensor([u for u, h in enumerate(histories) if len(h) >= 2], dtype=torch.int64)
        if len(users) == 0:
            raise ValueError(f"{self.name}: no user has two train items: nothing to learn the next item from")
        # Negatives come from the items in train, as the authors' re-indexed item set holds only
        # those: an item no one has (filtered out by a k-core) would be a free, easy negative.
        excluded = train.seen() | (train.item_counts() == 0)
        net = SASRecNet(train.n_items, c).to(self.device)
        optimiser = torch.optim.Adam(net.parameters(), lr=c.lr, betas=(0.9, 0.98))
        # Built once: the frozen view scores the network as it trains.
        frozen = None if monitor is None else _FrozenSASRec(net, monitor.train, self.device)
        log, stopping = TrainingLog(), EarlyStopping(c.patience)
        bar = tqdm(
            range(epochs), desc=f"training {self.name}", unit="epoch", leave=False, disable=not self.progress
        )
        for epoch in bar:
            net.train()
            started, total = time.perf_counter(), 0.0
            order = users[torch.randperm(len(users), generator=generator)]
            steps = math.ceil(len(order) / c.batch_size)
            for step in range(steps):
                batch = order[step * c.batch_size : (step + 1) * c.batch_size]
                window = last_windows(histories, batch, c.max_len + 1)
                inputs = window[:, :-1]
                inputs, targets = trim_padding(inputs, torch.where(inputs < 0, -1, window[:, 1:]))
                negatives = sample_unseen(excluded[batch], tuple(targets.shape), generator)
                valid = (targets >= 0).to(self.device)
                outputs = net.encode(inputs.to(self.device))
                positive = (outputs * net.items(targets.clamp(min=0).to(self.device))).sum(-1)[valid]
                negative = (outputs * net.items(negatives.to(self.device))).sum(-1)[valid]
                bce = nn.functional.binary_cross_entropy_with_logits
                loss = bce(positive, torch.ones_like(positive)) + bce(negative, torch.zeros_like(negative))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item()
            record_epoch(log, total, steps, started, self.name, f"lr {c.lr:g}")
            if frozen is not None and check_epoch(log, stopping, frozen, monitor, epoch, bar, net):
                break
        return finish_training(log, stopping, net), log

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return _score_with(self.net_, self._histories, users, self.device)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return _user_states(self.net_, self._histories, users, self.device).cpu()

    def item_embeddings(self) -> torch.Tensor:
        return self.net_.items.weight.detach().cpu().clone()

    # --- persistence -----------------------------------------------------------------------

    def _cache_key(self, train: Interactions) -> str:
        # The device too: CUDA kernels add in another order than the CPU's.
        digest = hashlib.sha256(f"{MODEL_VERSION}|{kernel_paths()}|{self.device.type}".encode())
        digest.update(json.dumps(asdict(self.config), sort_keys=True).encode())
        digest.update(train.fingerprint().encode())
        if self.validation is not None:
            v = self.validation
            digest.update(f"{v.train.fingerprint()}|{v.test.fingerprint()}".encode())
            if v.candidates is not None:  # what validation ranks decides the epoch count
                digest.update(v.candidates.numpy().tobytes())
        return digest.hexdigest()[:32]

    def _save(self, folder: Path, train: Interactions) -> None:
        save_checkpoint(folder, {"model": self.net_}, self.training_meta(MODEL_VERSION, train))

    def _load(self, folder: Path, train: Interactions) -> None:
        meta, state = read_checkpoint(folder, "SASRec", asdict(self.config), train.fingerprint(), {}, {})
        net = SASRecNet(train.n_items, self.config)
        net.load_state_dict(state)
        self.net_ = net.to(self.device).eval()
        self.log_ = TrainingLog(**meta["log"])
        self.validation_log_ = TrainingLog(**meta["validation_log"]) if meta["validation_log"] else None
        self._histories = ordered_histories(train)


class _FrozenSASRec(Recommender):
    """A network being trained, seen through the recommender interface for validation."""

    def __init__(self, net: SASRecNet, train: Interactions, device: torch.device) -> None:
        self.net, self.device = net, device
        self.fit(train)

    def _fit(self, train: Interactions) -> None:
        self.histories = ordered_histories(train)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return _score_with(self.net, self.histories, users, self.device)
