"""Scoring explanations: against ground-truth masks, and by perturbing the input (see :mod:`.metrics`)."""
from toolkit.evaluation.metrics import (
    DEFAULT_STEPS,
    PerturbationCurve,
    mean_confidence_interval,
    perturbation_auc,
    perturbation_curve,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    student_t_quantile,
    token_pointing_game,
    token_relevance_mass_accuracy,
    token_relevance_rank_accuracy,
)

__all__ = [
    "DEFAULT_STEPS", "PerturbationCurve", "mean_confidence_interval", "perturbation_auc", "perturbation_curve",
    "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "student_t_quantile",
    "token_pointing_game", "token_relevance_mass_accuracy", "token_relevance_rank_accuracy",
]
