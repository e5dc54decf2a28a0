"""Verification metrics: weighted norm ``||Y-Ŷ||_W``, RMSE, spread, CRPS, rank histogram."""

from ._metrics import crps, ensemble_mean_rmse, rank_histogram, rmse, spread, weighted_norm

__all__ = ["crps", "ensemble_mean_rmse", "rank_histogram", "rmse", "spread", "weighted_norm"]
