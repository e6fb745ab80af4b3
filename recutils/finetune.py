"""Fine-tuning the encoder's top layer with the two-tower loss: the article's BERT_θ, on a CPU.

Only the last transformer layer is trained, so the token states entering it are the
same for every step: they are computed once for every item text (:func:`layer_states`,
cached on disk) and each training step runs one layer instead of six. The item side of a
two-tower reads the tuned vectors; the user side keeps reading the frozen ones (the
article's u_emb), so a step needs the layer only for the batch's items.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from recutils.cache import atomic_path, cache_dir, kernel_paths, warn_rebuild
from recutils.checks import check_int, check_number
from recutils.metrics import evaluate
from recutils.recommender import Recommender
from recutils.repeatable import repeatable_training
from recutils.split import Interactions, Split
from recutils.text import TextEncoder, mean_pool
from recutils.training import EarlyStopping, history_keep_mask
from recutils.twotower import Histories, TwoTower, TwoTowerNet, in_batch_softmax_loss

# Bump when the fine-tuning code changes, so cached results are recomputed.
FINETUNE_VERSION = "finetune-v1"


def layer_states(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The token states that enter the encoder's last layer, for every text (cached).

    Returns: states (n, T, d) float32 and mask (n, T) int64 (1 at real tokens), T the
    longest text in tokens; rows are padded with zeros.
    """
    texts = list(texts)
    digest = hashlib.sha256(f"{encoder.fingerprint}|{encoder.max_length}|layer-input|{kernel_paths()}".encode())
    for text in texts:
        digest.update(text.encode() + b"\x1f")
    path = cache_dir() / "layerstates" / f"{digest.hexdigest()[:32]}.safetensors"
    if path.is_file():
        try:
            saved = load_file(path)
            return saved["states"], saved["mask"]
        except Exception as exc:  # a damaged file: compute again
            warn_rebuild(path, f"{type(exc).__name__}: {exc}")
    tokens = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length,
                               return_tensors="pt")
    states = torch.empty(*tokens["input_ids"].shape, encoder.dim)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            part = {k: v[start : start + batch_size].to(encoder.device) for k, v in tokens.items()}
            hidden = encoder.model(**part, output_hidden_states=True).hidden_states
            states[start : start + batch_size] = hidden[-2].float().cpu()
    mask = tokens["attention_mask"].long()
    with atomic_path(path) as partial:
        save_file({"states": states.contiguous(), "mask": mask.contiguous()}, partial)
    return states, mask


class TopLayer(nn.Module):
    """The encoder's last layer over cached states, then mean pooling and L2 normalisation.

    With the pretrained weights and in eval mode this reproduces ``encoder.encode`` exactly.

    Args:
        encoder: the frozen encoder whose last layer is copied (and then trained).
        states, mask: from :func:`layer_states` for the item texts.
    """

    def __init__(self, encoder: TextEncoder, states: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.layer = copy.deepcopy(encoder.model.encoder.layer[-1]).float()
        self.register_buffer("states", states)
        self.register_buffer("mask", mask)

    def forward(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Returns: (len(items), d) unit vectors of the items (all items when None)."""
        if items is None:
            # Every item, in chunks of similar length: far less padding than one batch.
            order = torch.argsort(self.mask.sum(dim=1), stable=True)
            out = torch.empty(len(order), self.states.shape[-1], device=self.states.device)
            for chunk in order.split(256):
                out[chunk] = self(chunk)
            return out
        states, mask = self.states[items], self.mask[items]
        length = int(mask.sum(dim=1).max())  # drop the columns that are padding for every row
        states, mask = states[:, :length], mask[:, :length]
        # BERT adds a large negative number to the attention logits of padded keys.
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        out = self.layer(states, attention_mask=additive)
        out = out[0] if isinstance(out, tuple) else out
        return nn.functional.normalize(mean_pool(out, mask), dim=-1)


@dataclass
class FineTuneLog:
    """Validation NDCG@10 after every ``check_every`` steps (the first entry is step 0, the
    frozen model), the loss between checks, the seconds spent and the step validation chose."""

    steps: list[int] = field(default_factory=list)
    validation_ndcg: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    best_step: int = 0


class FineTunedTower(Recommender):
    """A two-tower whose item side reads the encoder's top layer, trained on with the tower.

    Starts from ``base``, a :class:`~recutils.twotower.TwoTower` with the article's u_emb
    (``user_input="text"``) trained with a validation split, as early stopping left it (before
    any refit, so its network has seen only ``validation.train``), and continues training it
    together with the encoder's last layer
    on ``validation.train``, checking validation NDCG@10 every ``check_every`` steps and
    keeping the best check (step 0 is the early-stopped ``base``). It then scores users
    from their full train histories without retraining.

    Args:
        base: the fitted tower to start from.
        top: a fresh :class:`TopLayer` over the item texts.
        steps: at most this many steps; ``patience`` checks without improvement stop early.
        lr_encoder, lr_towers: Adam learning rates of the layer and of the towers; ``lr_encoder=0``
            keeps the layer frozen, so only the towers train on (the control for fine-tuning).
        batch_size: interactions per step (each step runs the layer for the batch's distinct items).
        seed: the order of the batches and the dropout.
    """

    def __init__(
        self,
        base: TwoTower,
        top: TopLayer,
        steps: int = 300,
        check_every: int = 50,
        patience: int = 2,
        lr_encoder: float = 3e-5,
        lr_towers: float = 1e-4,
        batch_size: int = 256,
        seed: int = 0,
        use_cache: bool = True,
        label: str | None = None,
        progress: bool = True,
    ) -> None:
        if not hasattr(base, "net_"):
            raise ValueError(f"{base.name} is not fitted; fit the base tower first")
        if base.config.user_input != "text" or base.validation is None:
            raise ValueError(
                "fine-tuning starts from a tower with user_input='text' trained with a validation split; "
                f"got user_input={base.config.user_input!r}, "
                f"validation={'given' if base.validation is not None else 'None'}"
            )
        for name, value in (("steps", steps), ("check_every", check_every), ("patience", patience),
                            ("batch_size", batch_size)):
            check_int(value, name, minimum=1)
        check_number(lr_encoder, "lr_encoder", low=0)
        check_number(lr_towers, "lr_towers", low=0)
        if len(top.states) != len(base.item_vectors):
            raise ValueError(f"top has states for {len(top.states)} items, the tower {len(base.item_vectors)}")
        self.base, self.top = base, top
        self.steps, self.check_every, self.patience = steps, check_every, patience
        self.lr_encoder, self.lr_towers, self.batch_size, self.seed = lr_encoder, lr_towers, batch_size, seed
        self.use_cache, self.label, self.progress = use_cache, label, progress

    @property
    def name(self) -> str:
        return self.label or f"{self.base.name}, top layer fine-tuned"

    def _fit(self, train: Interactions) -> None:
        if self.base.train_.fingerprint() != train.fingerprint():
            raise ValueError(f"{self.base.name} is fitted on other train data than the data given")
        path = cache_dir() / "finetune" / f"{self._cache_key(train)}.safetensors"
        if self.use_cache and path.is_file():
            try:
                self._load(path)
                self._finish(train)
                return
            except Exception as exc:  # a damaged entry: train again
                warn_rebuild(path, f"{type(exc).__name__}: {exc}")
        with repeatable_training():
            self._train(self.base.validation)
        self._finish(train)
        if self.use_cache:
            self._save(path)

    def _train(self, validation: Split) -> None:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        net, top = copy.deepcopy(self.base.early_stopped_net()), copy.deepcopy(self.top)
        optimiser = torch.optim.Adam([
            {"params": top.layer.parameters(), "lr": self.lr_encoder},
            {"params": net.parameters(), "lr": self.lr_towers},
        ])
        train = validation.train
        histories = Histories(train)
        users, items = train.column("user"), train.column("item")
        counts = train.item_counts().float()
        log_q = torch.log((counts / counts.sum()).clamp(min=1e-12))
        log, stopping = FineTuneLog(), EarlyStopping(self.patience)
        stopping.update(self._validation_ndcg(net, top, validation), 0, net, top)
        log.steps.append(0)
        log.validation_ndcg.append(stopping.best)
        started, total, step, stop = time.perf_counter(), 0.0, 0, False
        order = torch.randperm(len(users), generator=generator)
        bar = tqdm(total=self.steps, desc="fine-tuning the top layer", unit="step", leave=False,
                   disable=not self.progress)
        while step < self.steps and not stop:
            net.train(), top.train()
            start = (step * self.batch_size) % len(order)
            if start + self.batch_size > len(order):  # a new pass over the data
                order, start = torch.randperm(len(users), generator=generator), 0
            batch = order[start : start + self.batch_size]
            u, i = users[batch], items[batch]
            distinct, where = torch.unique(i, return_inverse=True)
            item_h = nn.functional.normalize(_item_outputs(net, top(distinct), distinct), dim=1)[where]
            keep = history_keep_mask(i, train.n_items, net.config.history_dropout, generator)
            user_h = net.user_vectors(u, histories, leave_out=i, keep=keep)
            accidental = histories.seen[u.unsqueeze(1), i.unsqueeze(0)]
            loss = in_batch_softmax_loss(user_h, item_h, net.config.temperature, log_q[i], accidental)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, step = total + loss.item(), step + 1
            bar.update(1)
            if step % self.check_every == 0 or step == self.steps:
                ndcg = self._validation_ndcg(net, top, validation)
                log.steps.append(step)
                log.validation_ndcg.append(ndcg)
                log.loss.append(total / self.check_every)
                total = 0.0
                bar.set_postfix(val_ndcg=f"{ndcg:.4f}")
                stop = stopping.update(ndcg, step, net, top)
        bar.close()
        stopping.restore(net, top)
        log.seconds, log.best_step = time.perf_counter() - started, stopping.best_at
        self.net_, self.top_, self.log_ = net.eval(), top.eval(), log

    def _validation_ndcg(self, net: TwoTowerNet, top: TopLayer, validation: Split) -> float:
        probe = _TunedScores(net, top, validation.train)
        return float(evaluate(probe, validation)["NDCG@10"].iloc[0])

    def _finish(self, train: Interactions) -> None:
        self.scorer_ = _TunedScores(self.net_, self.top_, train)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.scorer_.score(users)

    def item_text_vectors(self) -> torch.Tensor:
        """Returns: (n_items, d) the tuned encoder's unit item vectors (compare them with the frozen ones)."""
        with torch.inference_mode():
            return self.top_.eval()(None)

    def parameter_count(self) -> tuple[int, int]:
        """Trainable parameters: (the encoder's top layer, the towers)."""
        return (sum(p.numel() for p in self.top_.layer.parameters()),
                sum(p.numel() for p in self.net_.parameters()))

    # --- persistence -----------------------------------------------------------------------

    def _cache_key(self, train: Interactions) -> str:
        digest = hashlib.sha256(FINETUNE_VERSION.encode())
        settings = (self.steps, self.check_every, self.patience, self.lr_encoder, self.lr_towers,
                    self.batch_size, self.seed)
        digest.update(repr(settings).encode())
        digest.update(self.base._cache_key(train).encode())
        for tensor in (self.top.states, self.top.mask, *self.top.layer.state_dict().values()):
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        return digest.hexdigest()[:32]

    def _save(self, path: Path) -> None:
        state = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        state |= {f"top.{k}": v for k, v in self.top_.layer.state_dict().items()}
        log = self.log_
        state["log.steps"] = torch.tensor(log.steps)
        state["log.validation_ndcg"] = torch.tensor(log.validation_ndcg, dtype=torch.float64)
        state["log.loss"] = torch.tensor(log.loss, dtype=torch.float64)
        state["log.meta"] = torch.tensor([log.seconds, log.best_step], dtype=torch.float64)
        with atomic_path(path) as partial:
            save_file({k: v.detach().contiguous() for k, v in state.items()}, partial)

    def _load(self, path: Path) -> None:
        state = load_file(path)
        net, top = copy.deepcopy(self.base.early_stopped_net()), copy.deepcopy(self.top)
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        top.layer.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("top.")})
        seconds, best_step = state["log.meta"].tolist()
        self.log_ = FineTuneLog(state["log.steps"].tolist(), state["log.validation_ndcg"].tolist(),
                                state["log.loss"].tolist(), seconds, int(best_step))
        self.net_, self.top_ = net.eval(), top.eval()


def _item_outputs(net: TwoTowerNet, text: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The item tower over given text vectors (beside the items' id vectors): (len(items), out_dim)."""
    x = text if net.item_ids is None else torch.cat([text, net.item_ids(items)], dim=1)
    return net.item_tower(x)


class _TunedScores(Recommender):
    """Cosine scores of a tower whose item side reads tuned text vectors (users: frozen ones)."""

    def __init__(self, net: TwoTowerNet, top: TopLayer, train: Interactions) -> None:
        self.net, self.top = net, top
        self.fit(train)

    def _fit(self, train: Interactions) -> None:
        self.net.eval(), self.top.eval()
        self.histories = Histories(train)
        with torch.inference_mode():
            every = torch.arange(train.n_items)
            self.items = nn.functional.normalize(_item_outputs(self.net, self.top(None), every), dim=1)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net.user_vectors(users, self.histories) @ self.items.T
