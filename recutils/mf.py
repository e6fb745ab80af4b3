"""Matrix factorisation for implicit feedback (iALS, Hu, Koren & Volinsky 2008), via ``implicit``.

Each user u and item i get a vector of ``factors`` numbers; r̂(u, i) = p_u · q_i.
iALS fits them to the 0/1 interaction matrix with a confidence 1 + α for the
observed cells and 1 for the rest, alternating closed-form least-squares solves
for the users and the items. The solver is the ``implicit`` package's CPU one,
a well-kept implementation; this class only adapts it to the book's interface.
"""

from __future__ import annotations

import numpy as np
import torch

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
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 10.0,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        for name, value in (("factors", factors), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("regularization", regularization), ("alpha", alpha)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.factors, self.regularization, self.alpha = int(factors), float(regularization), float(alpha)
        self.iterations, self.seed = int(iterations), seed

    @property
    def name(self) -> str:
        return f"iALS(f={self.factors}, λ={self.regularization:g}, α={self.alpha:g})"

    def _fit(self, train: Interactions) -> None:
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
