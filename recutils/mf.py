"""Matrix factorisation for implicit feedback (iALS, Hu, Koren & Volinsky 2008), via ``implicit``.

Each user u and item i get a vector of ``factors`` numbers; r̂(u, i) = p_u · q_i.
iALS fits them to the 0/1 interaction matrix with a confidence 1 + α for the
observed cells and 1 for the rest, alternating closed-form least-squares solves
for the users and the items. The solver is the ``implicit`` package's CPU one,
a well-kept implementation; this class only adapts it to the book's interface. Fitted
factors are cached (``{cache}/ials``), keyed by every setting, the interactions and the kernels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recutils.cache import cached_folder, kernel_paths
from recutils.recommender import Recommender
from recutils.split import Interactions


class ImplicitALS(Recommender):
    """iALS behind the recommender interface.

    Args:
        factors: length of the user and item vectors.
        regularization: the ridge strength on the vectors.
        alpha: confidence weight of an observed interaction (confidence 1 + α).
        iterations: alternating sweeps.
        seed: the random initialisation (iALS is a learned model: report it over seeds).
        use_cache: reuse factors fitted earlier on identical inputs; chapters 1, 3 and 4 tune
            the same grid on the same splits.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 10.0,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        use_cache: bool = True,
    ) -> None:
        for name, value in (("factors", factors), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("regularization", regularization), ("alpha", alpha)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.factors, self.regularization, self.alpha = int(factors), float(regularization), float(alpha)
        self.iterations, self.seed, self.use_cache = int(iterations), seed, use_cache

    @property
    def name(self) -> str:
        return f"iALS(f={self.factors}, λ={self.regularization:g}, α={self.alpha:g})"

    def _fit(self, train: Interactions) -> None:
        cached_folder("ials", self._cache_key(train), self._load, lambda: self._solve(train), self._save, self.use_cache)

    def _cache_key(self, train: Interactions) -> str:
        from implicit import __version__ as implicit_version

        settings = [self.factors, self.regularization, self.alpha, self.iterations, int(self.seed)]
        digest = hashlib.sha256(json.dumps(["ials-v1", settings, implicit_version, kernel_paths()]).encode())
        digest.update(train.fingerprint().encode())
        return digest.hexdigest()[:32]

    def _save(self, folder: Path) -> None:
        save_file({"user_factors": self.user_factors_, "item_factors": self.item_factors_}, folder / "factors.safetensors")

    def _load(self, folder: Path) -> None:
        factors = load_file(folder / "factors.safetensors")
        shapes = {name: tuple(v.shape) for name, v in factors.items()}
        expected = {"user_factors": (self.train_.n_users, self.factors), "item_factors": (self.train_.n_items, self.factors)}
        if shapes != expected or not all(torch.isfinite(v).all() for v in factors.values()):
            raise ValueError(f"cached iALS factors {shapes} do not fit {expected} or are not finite")
        self.user_factors_, self.item_factors_ = factors["user_factors"], factors["item_factors"]

    def _solve(self, train: Interactions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares  # imported here: only this model needs it
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits

        users, items = train.column("user").numpy(), train.column("item").numpy()
        matrix = csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)), shape=(train.n_users, train.n_items)
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # binary relevance, as every other model in the book
        # implicit runs its own threads over users; a BLAS pool inside each of them only fights
        # for the same cores (implicit checks for it when built), so BLAS gets one thread here.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
            )
            model.fit(matrix, show_progress=False)
        self.user_factors_ = torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32).copy())
        self.item_factors_ = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32).copy())

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors_[users] @ self.item_factors_.T
