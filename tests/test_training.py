"""The bookkeeping the training loops share (recutils.training): the epoch log, history dropout,
early stopping, the validation check and early stop then refit."""

import dataclasses

import pytest
import torch
from torch import nn

from recutils.data import make_synthetic
from recutils.split import Interactions, temporal_split, validation_split
from recutils.training import (
    EarlyStopping,
    TrainingLog,
    check_validation,
    early_stop_then_refit,
    history_keep_mask,
    record_epoch,
)


@pytest.fixture(scope="module")
def split():
    return temporal_split(make_synthetic(n_users=40, n_items=30, per_user=8).interactions)


def test_record_epoch_keeps_the_mean_loss_and_refuses_a_nan():
    log = TrainingLog()
    record_epoch(log, 6.0, 3, started=0.0, name="m", settings="lr 1")
    assert log.loss == [2.0] and len(log.epoch_seconds) == 1
    with pytest.raises(FloatingPointError, match="m: the training loss became nan in epoch 2 \\(lr 1\\)"):
        record_epoch(log, float("nan"), 3, started=0.0, name="m", settings="lr 1")


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience():
    net, stopping = nn.Linear(2, 1), EarlyStopping(patience=2)
    assert not stopping.update(0.5, 1, net)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    nn.init.zeros_(net.weight)
    assert not stopping.update(0.4, 2, net) and stopping.update(0.5, 3, net)  # equal is no gain
    stopping.restore(net)
    assert stopping.best_at == 1 and torch.equal(net.weight, best["weight"])


def test_history_keep_mask_hides_items_but_never_the_target():
    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([0, 3, 3])
    keep = history_keep_mask(targets, 200, 0.5, generator)
    assert keep.shape == (3, 200) and set(keep.unique().tolist()) == {0.0, 1.0}
    assert keep[torch.arange(3), targets].eq(1).all() and 0.3 < keep.mean() < 0.7
    assert history_keep_mask(targets, 200, 0.0, generator) is None


def test_check_validation_refuses_a_split_of_other_data(split):
    validation = validation_split(split)
    check_validation(validation, split.train)
    with pytest.raises(ValueError, match="validation must be validation_split"):
        check_validation(validation, validation.train)
    none = Interactions(validation.test.frame.iloc[:0], validation.test.n_users, validation.test.n_items)
    empty = dataclasses.replace(validation, test=none)
    with pytest.raises(ValueError, match="no test interactions"):
        check_validation(empty, split.train)


class Recorder:
    """A stand-in training function: records each call; the early-stopped run's best epoch is 2."""

    def __init__(self):
        self.calls = []

    def __call__(self, interactions, epochs, monitor):
        self.calls.append((interactions, epochs, monitor))
        return nn.Linear(1, 1), TrainingLog(loss=[1.0] * epochs, best_epoch=2 if monitor is not None else 0)


def test_early_stop_then_refit_trains_on_all_train_for_the_chosen_epochs(split):
    validation = validation_split(split)
    train = Recorder()
    net, log, early, early_log = early_stop_then_refit(train, split.train, validation, 5, refit=True)
    assert train.calls == [(validation.train, 5, validation), (split.train, 2, None)]
    assert log.best_epoch == 2 and early_log.best_epoch == 2 and net is not early


def test_early_stop_then_refit_without_refit_keeps_the_early_stopped_network(split):
    validation = validation_split(split)
    train = Recorder()
    net, log, early, early_log = early_stop_then_refit(train, split.train, validation, 5, refit=False)
    assert len(train.calls) == 1 and net is early and log == early_log and log is not early_log


def test_early_stop_then_refit_without_validation_trains_once_for_every_epoch(split):
    train = Recorder()
    net, log, early, early_log = early_stop_then_refit(train, split.train, None, 4, refit=True)
    assert train.calls == [(split.train, 4, None)] and log.best_epoch == 4 and early is early_log is None
    with pytest.raises(ValueError, match="validation must be"):
        early_stop_then_refit(train, validation_split(split).train, validation_split(split), 4, refit=True)
