"""Bookkeeping shared by the training loops: the epoch log and early stopping on validation."""

from __future__ import annotations

import copy
import math
import time

from torch import nn


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
