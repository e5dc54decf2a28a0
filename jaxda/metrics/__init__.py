"""Verification metrics: weighted norm ``||Y-Ŷ||_W``, RMSE, spread, CRPS, rank histogram."""

from ._metrics import crps, ensemble_mean_rmse, rank_histogram, rmse, spread, weighted_norm
from ._rank import rank_counts

__all__ = ["crps", "ensemble_mean_rmse", "rank_histogram", "rmse", "spread", "weighted_norm"]
__all__ += ["rank_counts"]
