"""A sequence-aware user tower: causal self-attention over the user's last L items.

The item tower is chapter 4's (frozen BERT vector, optionally beside a learned id
vector, through an MLP), so a new item still embeds from its text. The user tower
reads the item-tower outputs of the user's last ``window`` train items in time
order, adds a learned embedding of each position, and runs one transformer block
whose attention is causal (position t sees positions ≤ t only). Trained like
SASRec (Kang & McAuley 2018): every position predicts the next item, here with an
in-batch softmax over the batch's target items, logQ-corrected, the user's other
train items masked. A user's vector is the block's output at the last position.
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
from recutils.twotower import mlp

# Bump when training or architecture code changes, so cached models are retrained.
MODEL_VERSION = "seqtower-v1"


@dataclass(frozen=True)
class SequenceConfig:
    """Architecture and training settings of :class:`SequenceTower`.

    ``window`` is L, the number of latest train items the user tower reads; histories
    shorter than L are padded on the left (so L larger than every history behaves as L =
    the longest history). ``shuffle`` trains on each history in a new random order every
    epoch: the same model with order made meaningless, the control that measures what
    order is worth. A batch holds ``batch_positions // window`` windows (at least one), so
    every window length trains with about the same number of next-item targets per step.
    """

    window: int = 50
    heads: int = 1
    id_dim: int = 64
    hidden: int = 128
    out_dim: int = 64
    dropout: float = 0.0
    temperature: float = 0.05
    batch_positions: int = 1280
    lr: float = 3e-3
    lr_decay: float = 0.93
    epochs: int = 40
    patience: int = 5
    refit: bool = True
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # Stored as plain ints (a numpy integer from a validation table would not go into JSON).
        for name in ("window", "heads", "hidden", "out_dim", "batch_positions", "epochs", "patience"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum=1))
        object.__setattr__(self, "id_dim", check_int(self.id_dim, "id_dim", minimum=0))
        object.__setattr__(self, "seed", check_int(self.seed, "seed"))
        if self.out_dim % self.heads:
            raise ValueError(f"out_dim ({self.out_dim}) must be a multiple of heads ({self.heads})")
        if not 0 <= check_number(self.dropout, "dropout") < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        check_number(self.temperature, "temperature", low=0, low_open=True)
        check_number(self.lr, "lr", low=0, low_open=True)
        check_number(self.lr_decay, "lr_decay", low=0, high=1, low_open=True)


def causal_mask(length: int) -> torch.Tensor:
    """Returns: (length, length) bool, True where query position t must not see key s (s > t)."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions ≤ t only.

    For one head: Q = X W_q, K = X W_k, V = X W_v, A = softmax(Q Kᵀ / √d + M) with
    M = −∞ above the diagonal and at padded keys, output (A V) W_o.
    """

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x (b, L, d); padding (b, L) bool, True at padded positions.
        Returns: (b, L, d). A padded position attends to itself only, so no row is empty."""
        b, length, dim = x.shape
        split = lambda t: t.view(b, length, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)  # (b, heads, L, L)
        hidden = causal_mask(length).to(x.device).expand(b, length, length)
        if padding is not None:
            hidden = hidden | padding.unsqueeze(1)
            hidden = hidden & ~torch.eye(length, dtype=torch.bool, device=x.device)
        weights = torch.softmax(scores.masked_fill(hidden.unsqueeze(1), float("-inf")), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, dim))


class SequenceNet(nn.Module):
    """Item tower (chapter 4's) and a one-block causal transformer as the user tower.

    Args:
        item_text: (n_items, text_dim) frozen BERT item vectors.
        config: sizes.
    """

    def __init__(self, item_text: torch.Tensor, config: SequenceConfig) -> None:
        super().__init__()
        self.config = config
        n_items, text_dim = item_text.shape
        d = config.out_dim
        self.register_buffer("item_text", item_text.float().clone())
        self.item_ids = nn.Embedding(n_items, config.id_dim) if config.id_dim else None
        if self.item_ids is not None:
            nn.init.normal_(self.item_ids.weight, std=0.05)
        self.item_tower = mlp(text_dim + config.id_dim, config.hidden, d, 2, config.dropout)
        self.positions = nn.Embedding(config.window, d)
        nn.init.normal_(self.positions.weight, std=0.05)
        self.norm_attention, self.norm_ffn, self.norm_out = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attention = CausalSelfAttention(d, config.heads)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(config.dropout)

    def item_vectors(self, items: torch.Tensor | None = None, normalise: bool = True) -> torch.Tensor:
        """Returns: (n, out_dim) item-tower outputs of ``items`` (all when None), unit length when
        ``normalise``."""
        x = self.item_text if items is None else self.item_text[items]
        if self.item_ids is not None:
            x = torch.cat([x, self.item_ids.weight if items is None else self.item_ids(items)], dim=1)
        out = self.item_tower(x)
        return nn.functional.normalize(out, dim=1) if normalise else out

    def encode(self, sequences: torch.Tensor, all_items: torch.Tensor) -> torch.Tensor:
        """The user tower at every position.

        Args:
            sequences: (b, L) item indices, oldest first, padded on the left with -1.
            all_items: (n_items, out_dim) unnormalised item-tower outputs.
        Returns: (b, L, out_dim) unit vectors; row t summarises the items up to position t.
        """
        padding = sequences < 0
        x = all_items[sequences.clamp(min=0)] * (~padding).unsqueeze(-1)
        x = self.drop(x + self.positions.weight[-sequences.shape[1]:])
        x = x + self.drop(self.attention(self.norm_attention(x), padding))
        x = x + self.drop(self.ffn(self.norm_ffn(x)))
        return nn.functional.normalize(self.norm_out(x), dim=-1)


def last_windows(histories: list[np.ndarray], users: torch.Tensor, window: int) -> torch.Tensor:
    """Returns: (len(users), window) each user's last ``window`` items, left-padded with -1."""
    out = torch.full((len(users), window), -1, dtype=torch.long)
    for row, user in enumerate(users.tolist()):
        tail = histories[user][-window:]
        if len(tail):
            out[row, window - len(tail):] = torch.tensor(tail)
    return out


def training_windows(
    histories: list[np.ndarray], window: int, generator: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each history into (input, next-item target) windows of length ``window``, from the end.

    Target t of a window is the item after input t; a history of n items gives n − 1 pairs in
    ceil((n − 1) / window) windows. With ``generator``, each history is first shuffled.
    Returns: inputs (w, window) and targets (w, window), left-padded with -1, and (w,) users.
    """
    inputs, targets, owners = [], [], []
    for user, items in enumerate(histories):
        if generator is not None:
            items = generator.permutation(items)
        for end in range(len(items), 1, -window):
            start = max(end - window - 1, 0)
            chunk = items[start:end]
            pad = window + 1 - len(chunk)
            row = np.concatenate([np.full(pad, -1), chunk])
            inputs.append(row[:-1])
            targets.append(np.where(row[:-1] < 0, -1, row[1:]))
            owners.append(user)
    if not inputs:
        raise ValueError("no user has two train items in a row: nothing to learn the next item from")
    return (torch.from_numpy(np.stack(inputs)).long(), torch.from_numpy(np.stack(targets)).long(),
            torch.tensor(owners))


def next_item_loss(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    item_h: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor,
    seen: torch.Tensor,
) -> torch.Tensor:
    """In-batch softmax for next-item prediction.

    Every non-padded position competes its target against the batch's distinct target items,
    logits cos / τ − log q (logQ correction); the user's other train items are masked.

    Args:
        outputs: (b, L, d) user-tower outputs; targets: (b, L) next items, -1 where padded.
        item_h: (n_items, d) unit item vectors; log_q: (n_items,) log train frequency.
        seen: (b, n_items) bool, each window's user's train items.
    Returns: the mean cross-entropy, a scalar.
    """
    valid = targets >= 0
    rows, flat_targets = outputs[valid], targets[valid]
    candidates, label = torch.unique(flat_targets, return_inverse=True)
    logits = rows @ item_h[candidates].T / temperature - log_q[candidates]
    owner = torch.arange(len(targets), device=targets.device).unsqueeze(1).expand_as(targets)[valid]
    masked = seen[owner][:, candidates]
    masked[torch.arange(len(label)), label] = False
    logits = logits.masked_fill(masked, float("-inf"))
    return nn.functional.cross_entropy(logits, label)


class SequenceTower(EarlyStopped, VectorRecommender):
    """The sequence-aware two-tower recommender (see the module docstring).

    Short histories are padded on the left; a user with one train item is scored from that
    item alone (and gives no training pair); a user with none cannot be scored (ValueError).
    Items with empty text share the encoder's vector of the empty string; their id vectors
    (``id_dim`` > 0) still tell them apart.

    Args:
        item_vectors: (n_items, text_dim) frozen BERT item vectors.
        config: a :class:`SequenceConfig`; keyword arguments override its fields.
        validation: ``validation_split`` of the split ``fit`` receives; training early-stops on
            its NDCG@10, then (``refit``) retrains on all train for the chosen epoch count.
        use_cache: reuse a model trained on identical inputs (``{cache}/seqtower``).
        label: the name in result tables.
        progress: show a progress bar over epochs.
    """

    def __init__(
        self,
        item_vectors: torch.Tensor,
        config: SequenceConfig | None = None,
        validation: Split | None = None,
        device: str | torch.device | None = None,
        use_cache: bool = True,
        label: str | None = None,
        progress: bool = True,
        **overrides: object,
    ) -> None:
        if item_vectors.ndim != 2 or not torch.isfinite(item_vectors).all():
            raise ValueError(f"item_vectors must be a finite (n_items, dim) matrix, got {tuple(item_vectors.shape)}")
        self.item_vectors = item_vectors.float()
        self.config = SequenceConfig(**{**asdict(config or SequenceConfig()), **overrides})
        self.validation, self.device, self.use_cache = validation, pick_device(device), use_cache
        self.label, self.progress = label, progress
        self.use_index("exact")

    @property
    def name(self) -> str:
        c = self.config
        return self.label or f"SequenceTower(L={c.window}{', shuffled' if c.shuffle else ''})"

    def _fit(self, train: Interactions) -> None:
        if len(self.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(self.item_vectors)} rows for {train.n_items} items")
        # Under a lock, like the two-tower: the other notebook group loads what this one trains.
        cached_folder(
            "seqtower", self._cache_key(train), lambda folder: self._load(folder, train),
            lambda: self._train_and_refit(train), lambda folder: self._save(folder, train), self.use_cache,
        )

    def _train_and_refit(self, train: Interactions) -> None:
        self.net_, self.log_, _, self.validation_log_ = early_stop_then_refit(
            self._train, train, self.validation, self.config.epochs, self.config.refit
        )
        self._histories = ordered_histories(train)

    def _train(self, train: Interactions, epochs: int, monitor: Split | None) -> tuple[SequenceNet, TrainingLog]:
        with repeatable_training():
            return self._train_loop(train, epochs, monitor)

    def _train_loop(
        self, train: Interactions, epochs: int, monitor: Split | None
    ) -> tuple[SequenceNet, TrainingLog]:
        c = self.config
        torch.manual_seed(c.seed)
        shuffler = np.random.default_rng(c.seed)
        net = SequenceNet(self.item_vectors, c).to(self.device)
        optimiser = torch.optim.Adam(net.parameters(), lr=c.lr)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, c.lr_decay)
        histories = ordered_histories(train)
        seen = (train.matrix(binary=True) > 0).to(self.device)
        counts = train.item_counts().float()
        log_q = torch.log((counts / counts.sum()).clamp(min=1e-12)).to(self.device)
        windows = None if c.shuffle else training_windows(histories, c.window)
        log, stopping = TrainingLog(), EarlyStopping(c.patience)
        bar = tqdm(range(epochs), desc=f"training {self.name}", unit="epoch", leave=False, disable=not self.progress)
        for epoch in bar:
            net.train()
            started, total = time.perf_counter(), 0.0
            inputs, targets, owners = windows or training_windows(histories, c.window, shuffler)
            order = torch.from_numpy(shuffler.permutation(len(inputs)))
            size = max(1, c.batch_positions // c.window)
            steps = math.ceil(len(order) / size)
            for step in range(steps):
                batch = order[step * size : (step + 1) * size]
                # The item tower runs only for the batch's films (inputs and targets), renumbered.
                sequences, following = inputs[batch], targets[batch]
                needed = torch.unique(torch.cat([sequences[sequences >= 0], following[following >= 0]]))
                local = torch.full((len(net.item_text) + 1,), -1, dtype=torch.long)
                local[needed] = torch.arange(len(needed))
                sequences, following = local[sequences], local[following]  # -1 (padding) maps to -1
                needed = needed.to(self.device)
                raw = net.item_vectors(needed, normalise=False)
                outputs = net.encode(sequences.to(self.device), raw)
                loss = next_item_loss(outputs, following.to(self.device), nn.functional.normalize(raw, dim=1),
                                      c.temperature, log_q[needed], seen[owners[batch].to(self.device)][:, needed])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item()
            record_epoch(log, total, steps, started, self.name, f"lr {c.lr:g}, temperature {c.temperature:g}")
            schedule.step()
            if monitor is not None and check_epoch(
                log, stopping, _FrozenSequence(net, monitor.train, self.device), monitor, epoch, bar, net
            ):
                break
        return finish_training(log, stopping, net), log

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return _score_with(self.net_, self._histories, users, self.device)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            sequences = last_windows(self._histories, users, self.config.window).to(self.device)
            return self.net_.encode(sequences, self.net_.item_vectors(normalise=False))[:, -1].cpu()

    def item_embeddings(self) -> torch.Tensor:
        with torch.inference_mode():
            return self.net_.item_vectors().cpu()

    def parameter_count(self) -> int:
        """Trainable parameters (the frozen BERT vectors are not counted)."""
        return sum(p.numel() for p in self.net_.parameters())

    def scoring(self, train: Interactions) -> Recommender:
        """The trained network scoring users from the histories in ``train``, without retraining
        (e.g. the validation split's train part, to weigh this model in a combination)."""
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{self.name} is not fitted; call fit first")
        return _FrozenSequence(self.net_, train, self.device)

    # --- persistence -----------------------------------------------------------------------

    def _cache_key(self, train: Interactions) -> str:
        digest = hashlib.sha256(f"{MODEL_VERSION}|{kernel_paths()}".encode())
        digest.update(json.dumps(asdict(self.config), sort_keys=True).encode())
        digest.update(train.fingerprint().encode())
        digest.update(self.item_vectors.numpy().tobytes())
        if self.validation is not None:
            digest.update(f"{self.validation.train.fingerprint()}|{self.validation.test.fingerprint()}".encode())
        return digest.hexdigest()[:32]

    def _save(self, folder: Path, train: Interactions) -> None:
        save_checkpoint(folder, {"model": self.net_}, self.training_meta(MODEL_VERSION, train))

    def _load(self, folder: Path, train: Interactions) -> None:
        meta, state = read_checkpoint(
            folder, "sequence-tower", asdict(self.config), train.fingerprint(), {},
            {"item_text": ("item vectors", self.item_vectors)},
        )
        net = SequenceNet(self.item_vectors, self.config)
        net.load_state_dict(state)
        self.net_ = net.to(self.device).eval()
        self.log_ = TrainingLog(**meta["log"])
        self.validation_log_ = TrainingLog(**meta["validation_log"]) if meta["validation_log"] else None
        self._histories = ordered_histories(train)


def _score_with(
    net: SequenceNet, histories: list[np.ndarray], users: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """(b, n_items) cosine scores from each user's last ``window`` train items."""
    out = []
    with torch.inference_mode():
        raw = net.item_vectors(normalise=False)
        items = nn.functional.normalize(raw, dim=1)
        for start in range(0, len(users), 512):
            sequences = last_windows(histories, users[start : start + 512], net.config.window).to(device)
            out.append((net.encode(sequences, raw)[:, -1] @ items.T).cpu())
    return torch.cat(out)


class _FrozenSequence(Recommender):
    """A network being trained, seen through the recommender interface for validation."""

    def __init__(self, net: SequenceNet, train: Interactions, device: torch.device) -> None:
        self.net, self.device = net, device
        self.fit(train)

    def _fit(self, train: Interactions) -> None:
        self.net.eval()
        self.histories = ordered_histories(train)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return _score_with(self.net, self.histories, users, self.device)
