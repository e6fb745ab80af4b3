"""What the training loops share: the epoch log, history dropout, early stopping on validation, the refit."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from recutils.metrics import evaluate
from recutils.recommender import Recommender
from recutils.split import Interactions, Split


@dataclass
class TrainingLog:
    """What one training run did, for plots and the closing table."""

    loss: list[float] = field(default_factory=list)
    validation_ndcg: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int = 0


class EarlyStopped:
    """What a model trained with early stopping on validation offers beside its recommender face:
    the best validation score, and its training logs as a cache entry's metadata."""

    validation_log_: TrainingLog | None

    @property
    def validation_score_(self) -> float:
        """The best validation NDCG@10 reached while training (what early stopping kept)."""
        if getattr(self, "validation_log_", None) is None or not self.validation_log_.validation_ndcg:
            raise RuntimeError(f"{self.name} was not trained with a validation split")
        return max(self.validation_log_.validation_ndcg)

    def training_meta(self, version: str, train: Interactions) -> dict[str, object]:
        """The metadata a cache entry stores: version, config, train fingerprint and both logs."""
        return {
            "version": version,
            "config": asdict(self.config),
            "train_fingerprint": train.fingerprint(),
            "log": asdict(self.log_),
            "validation_log": asdict(self.validation_log_) if self.validation_log_ else None,
        }


def record_epoch(log: object, total_loss: float, steps: int, started: float, name: str, settings: str) -> None:
    """Append an epoch's mean loss and seconds to ``log`` (``loss``, ``epoch_seconds``).

    Raises:
        FloatingPointError: the loss is NaN or infinite; the message names the model and its settings.
    """
    log.loss.append(total_loss / steps)
    log.epoch_seconds.append(time.perf_counter() - started)
    if not math.isfinite(log.loss[-1]):
        raise FloatingPointError(
            f"{name}: the training loss became {log.loss[-1]} in epoch {len(log.loss)} ({settings}); "
            "try a smaller learning rate or a larger temperature"
        )


class EarlyStopping:
    """Keep the weights of the best validation score; stop after ``patience`` checks without a gain."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_at, self.stale, self.state = patience, -math.inf, 0, 0, None

    def update(self, score: float, at: int, *modules: nn.Module) -> bool:
        """Record the score reached at check ``at`` (an epoch or a step); returns whether to stop."""
        if score > self.best:
            self.best, self.best_at, self.stale = score, at, 0
            self.state = [copy.deepcopy(m.state_dict()) for m in modules]
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self, *modules: nn.Module) -> None:
        """Load the best weights back (nothing happens when no check was recorded)."""
        if self.state is not None:
            for module, state in zip(modules, self.state, strict=True):
                module.load_state_dict(state)


def check_epoch(
    log: TrainingLog,
    stopping: EarlyStopping,
    probe: Recommender,
    monitor: Split,
    epoch: int,
    bar: tqdm,
    net: nn.Module,
) -> bool:
    """After epoch ``epoch`` (counted from 0): the validation NDCG@10 of ``net``, read through
    ``probe`` (the network behind the recommender interface), logged and shown on the progress
    bar. Returns whether early stopping says to stop."""
    ndcg = float(evaluate(probe, monitor)["NDCG@10"].iloc[0])
    log.validation_ndcg.append(ndcg)
    bar.set_postfix(loss=f"{log.loss[-1]:.3f}", val_ndcg=f"{ndcg:.4f}")
    return stopping.update(ndcg, epoch + 1, net)


def finish_training(log: TrainingLog, stopping: EarlyStopping, net: nn.Module) -> nn.Module:
    """``net`` with the best validation weights back, in eval mode; their epoch in ``log.best_epoch``."""
    stopping.restore(net)
    log.best_epoch = stopping.best_at
    return net.eval()


def history_keep_mask(
    targets: torch.Tensor, n_items: int, rate: float, generator: torch.Generator
) -> torch.Tensor | None:
    """History dropout: a (b, n_items) 0/1 mask hiding each history item with probability ``rate``.

    The tower then learns from partial histories. Each row's target stays in, for the caller
    to leave out of the history itself. Returns None when ``rate`` is 0 (nothing hidden).
    """
    if rate <= 0:
        return None
    keep = torch.rand(len(targets), n_items, generator=generator) >= rate
    keep[torch.arange(len(targets)), targets.cpu()] = True
    return keep.float()


def check_validation(validation: Split, train: Interactions) -> None:
    """Refuse a validation split a model cannot early-stop on while it fits ``train``.

    Raises:
        ValueError: ``validation`` has no test interactions, or is not ``validation_split`` of
            the split whose train data is ``train``.
    """
    if len(validation.test) == 0:
        raise ValueError("the validation split has no test interactions to stop training on")
    if not _is_validation_of(validation, train):
        raise ValueError("validation must be validation_split(...) of the split whose train data fit receives")


def _is_validation_of(validation: Split, train: Interactions) -> bool:
    """Whether ``validation`` splits ``train`` (all of it; for G, all of it before the validation cut)."""
    if (validation.train.n_users, validation.train.n_items) != (train.n_users, train.n_items):
        return False
    if validation.protocol == "G":
        frame = train.frame
        cut = validation.test.frame["timestamp"].min()
        before, after = frame[frame["timestamp"] < cut], frame[frame["timestamp"] >= cut]
        warm = after[after["user"].isin(before["user"]) & after["item"].isin(before["item"])]
        return all(
            part.fingerprint() == Interactions(rows, train.n_users, train.n_items).fingerprint()
            for part, rows in ((validation.train, before), (validation.test, warm))
        )
    merged = Interactions(
        pd.concat([validation.train.frame, validation.test.frame]), train.n_users, train.n_items
    )
    return merged.fingerprint() == train.fingerprint()


def early_stop_then_refit(
    train_fn: Callable[[Interactions, int, Split | None], tuple[nn.Module, TrainingLog]],
    train: Interactions,
    validation: Split | None,
    epochs: int,
    refit: bool,
    early_run: tuple[nn.Module, TrainingLog] | None = None,
) -> tuple[nn.Module, TrainingLog, nn.Module | None, TrainingLog | None]:
    """Train early-stopped on ``validation``, then, with ``refit``, again on all of ``train`` for
    the number of epochs validation chose; without ``validation``, for ``epochs``.

    Args:
        train_fn: ``(interactions, epochs, monitor)`` -> the trained network and its log; with a
            ``monitor`` split it stops early on that split and restores the best epoch's weights.
            Each call seeds its own random state, so the refit does not depend on the early run.
        early_run: the early-stopped network and log of this very run when they are already at
            hand (a cached model that differs only in ``refit``): used instead of training them again.
    Returns: the network to keep and its log (without refit, the early-stopped network and a
        copy of its log), then the early-stopped network and its log (None without ``validation``).
    """
    early, early_log = None, None
    if validation is not None:
        check_validation(validation, train)
        early, early_log = early_run if early_run is not None else train_fn(validation.train, epochs, validation)
        epochs = max(1, early_log.best_epoch)
        if not refit:
            return early, copy.deepcopy(early_log), early, early_log
    net, log = train_fn(train, epochs, None)
    log.best_epoch = epochs
    return net, log, early, early_log
