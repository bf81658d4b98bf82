"""Metrics that score an explanation against ground truth, and the perturbation tests.

Ground-truth metrics (Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground truth
evaluation of neural network explanations", Information Fusion 2022; Zhang et al., "Top-down
neural attention by excitation backprop", ECCV 2016, for the pointing game) compare a relevance map
with a boolean mask of what the answer depends on. They come in an image form (2-D map against an
HxW mask) and a token form (1-D scores against a boolean token mask), sharing one implementation.

Shared conventions, all following CLEVR-XAI:

- Only positive relevance counts. Negative values are set to zero first, as in the reference
  evaluation's "sum,pos" pooling: negative relevance is evidence against the target, so it neither
  adds to nor subtracts from the mass inside the mask.
- A map with no positive relevance at all points nowhere; every ground-truth metric returns NaN
  for it, so filter with ``numpy.isfinite`` before averaging.
- Ties are broken in expectation: when pixels of equal relevance straddle the top-k cut-off or
  share the maximum, the score is the average over all ways of breaking the tie. This matters for
  patch-grid maps, where every pixel of a patch carries the same value.

The perturbation tests are those of Chefer, Gur & Wolf, "Transformer Interpretability Beyond
Attention Visualization" (CVPR 2021), section 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from toolkit.errors import InputError

ArrayLike = np.ndarray | torch.Tensor | Sequence

UPSAMPLING_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear"}
DEFAULT_STEPS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("positive", "negative")


# --- inputs -------------------------------------------------------------------------------------

def _to_numpy(values: ArrayLike, name: str) -> np.ndarray:
    """A float64 copy of a numpy array, tensor or sequence; non-finite values are refused."""
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    array = np.array(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def _to_mask(mask: ArrayLike, ndim: int) -> np.ndarray:
    """A boolean mask with ``ndim`` dimensions and at least one True: ground truth must point somewhere."""
    if torch.is_tensor(mask):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != ndim:
        raise InputError(f"the mask must have {ndim} dimension(s), got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise InputError("the mask must be boolean (or hold only 0 and 1)")
        mask = mask.astype(bool)
    if not mask.any():
        raise InputError("the ground-truth mask is empty: there is nothing to localise")
    return mask


def _positive_map(relevance: ArrayLike, mask_shape: tuple[int, int], upsample: str) -> np.ndarray:
    """The positive part of a 2-D relevance map, resized to the mask's HxW.

    ``"nearest"`` (the default) gives every pixel of a patch its patch's value: the relevance of a
    ViT patch is a statement about the whole patch, and spreading it evenly neither moves relevance
    across patch borders nor invents detail finer than the model can resolve. ``"bilinear"`` (half-
    pixel centres, as ``torch.nn.functional.interpolate`` with ``align_corners=False``) is how Chefer
    et al. draw their heatmaps; it smooths relevance into neighbouring patches, which favours maps
    whose relevant patches lie next to each other. Clipping happens before resizing, so both keep
    the map non-negative.
    """
    values = _to_numpy(relevance, "relevance")
    if values.ndim != 2:
        raise InputError(f"relevance must be a 2-D map (a patch grid or pixels), got shape {values.shape}")
    if values.shape[0] > mask_shape[0] or values.shape[1] > mask_shape[1]:
        raise InputError(f"relevance {values.shape} is larger than the mask {mask_shape}: resize the mask instead")
    if upsample not in UPSAMPLING_MODES:
        raise InputError(f"upsample must be one of {sorted(UPSAMPLING_MODES)}, got {upsample!r}")
    values = np.clip(values, 0.0, None)
    if values.shape == mask_shape:
        return values
    resized = F.interpolate(torch.from_numpy(values)[None, None], size=mask_shape, mode=UPSAMPLING_MODES[upsample])
    return resized[0, 0].numpy()


def _token_scores(scores: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The positive part of 1-D token scores, and the token mask, checked to match."""
    values = _to_numpy(scores, "scores")
    token_mask = _to_mask(mask, ndim=1)
    if values.shape != token_mask.shape:
        raise InputError(f"scores {values.shape} and mask {token_mask.shape} must have the same length")
    return np.clip(values, 0.0, None), token_mask


# --- the three ground-truth metrics, on flat non-negative values ----------------------------------

def _mass_share(values: np.ndarray, mask: np.ndarray) -> float:
    total = values.sum()
    return float(values[mask].sum() / total) if total > 0 else math.nan


def _top_k_share(values: np.ndarray, mask: np.ndarray, k: int | None) -> float:
    if not values.any():
        return math.nan
    k = int(mask.sum()) if k is None else k
    if not 1 <= k <= values.size:
        raise InputError(f"k must lie between 1 and the number of values ({values.size}), got {k}")
    cut_off = np.partition(values.ravel(), values.size - k)[values.size - k]  # the k-th largest value
    above, tied = values > cut_off, values == cut_off
    free_slots = k - above.sum()  # the top k takes this many of the tied values, each equally likely
    inside = (above & mask).sum() + free_slots * (tied & mask).sum() / tied.sum()
    return float(inside / k)


def _max_share(values: np.ndarray, hit_region: np.ndarray) -> float:
    if not values.any():
        return math.nan
    at_max = values == values.max()
    return float((at_max & hit_region).sum() / at_max.sum())


# --- images ---------------------------------------------------------------------------------------

def relevance_mass_accuracy(relevance: ArrayLike, mask: ArrayLike, upsample: str = "nearest") -> float:
    """Share of the positive relevance that falls inside the ground-truth mask (CLEVR-XAI).

    ``R_within / R_total`` with ``R`` the positive part of the map after resizing it to the mask
    (see :func:`_positive_map` for ``upsample``). 1 means all relevance lies on the objects; the
    chance level of a uniform map is the mask's share of the image. NaN without positive relevance.
    """
    gt = _to_mask(mask, ndim=2)
    return _mass_share(_positive_map(relevance, gt.shape, upsample), gt)


def relevance_rank_accuracy(relevance: ArrayLike, mask: ArrayLike, k: int | None = None, upsample: str = "nearest") -> float:
    """Share of the ``k`` most relevant pixels that lie inside the mask (CLEVR-XAI).

    CLEVR-XAI sets ``k`` to the mask's size in pixels, so that a perfect map scores 1; pass ``k`` to
    ask about a fixed budget instead. Pixels tied at the cut-off count in proportion (see the module
    docstring). NaN without positive relevance.
    """
    gt = _to_mask(mask, ndim=2)
    return _top_k_share(_positive_map(relevance, gt.shape, upsample), gt, k)


def pointing_game(relevance: ArrayLike, mask: ArrayLike, tolerance: float = 0, upsample: str = "nearest") -> float:
    """1.0 when the most relevant pixel lies inside the mask, else 0.0 (Zhang et al. 2016).

    A pixel within ``tolerance`` pixels (Euclidean distance between pixel centres) of the mask also
    counts as a hit; Zhang et al. use 15 pixels at ImageNet resolution. When several pixels share
    the maximum, as all pixels of a patch do, the score is the share of them that hit: the chance
    of a hit when one of them is picked at random. NaN without positive relevance.
    """
    gt = _to_mask(mask, ndim=2)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    if tolerance > 0:
        distance_to_mask = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        gt = distance_to_mask <= tolerance
    return _max_share(_positive_map(relevance, gt.shape, upsample), gt)


# --- tokens ---------------------------------------------------------------------------------------

def token_relevance_mass_accuracy(scores: ArrayLike, mask: ArrayLike) -> float:
    """:func:`relevance_mass_accuracy` over tokens: share of positive token relevance on the masked tokens."""
    return _mass_share(*_token_scores(scores, mask))


def token_relevance_rank_accuracy(scores: ArrayLike, mask: ArrayLike, k: int | None = None) -> float:
    """:func:`relevance_rank_accuracy` over tokens: share of the top-``k`` tokens (``k`` = masked tokens) that are masked."""
    return _top_k_share(*_token_scores(scores, mask), k)


def token_pointing_game(scores: ArrayLike, mask: ArrayLike) -> float:
    """:func:`pointing_game` over tokens: whether the most relevant token is a masked one."""
    return _max_share(*_token_scores(scores, mask))


# --- perturbation tests ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PerturbationCurve:
    """The model's score after removing each share of the units (patches, pixels or tokens)."""

    order: str
    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve by the trapezoid rule over the fractions actually removed.

        Not normalised by their range: the x-axis runs from 0 to the largest share actually
        removed (about 0.9 with the default steps), so a score that stays at 1 gives about 0.9.
        The AUC is linear in the scores, so averaging per-example AUCs over a dataset equals
        the AUC of the mean curve, as long as the examples have the same number of units.
        """
        widths = np.diff(self.fractions)
        return float(np.sum(widths * (self.scores[1:] + self.scores[:-1]) / 2))


def perturbation_curve(
    predict: Callable[[np.ndarray | torch.Tensor], ArrayLike],
    inputs: np.ndarray | torch.Tensor,
    relevance: ArrayLike,
    order: str = "positive",
    steps: Sequence[float] = DEFAULT_STEPS,
    baseline: float | str | np.ndarray | torch.Tensor = 0.0,
    protected: ArrayLike | None = None,
    batch_size: int | None = None,
) -> PerturbationCurve:
    """Remove ever more of the input in relevance order and track the model's score (Chefer et al. 2021, sec. 4).

    ``order="positive"`` removes the most relevant units first (MoRF): the score should collapse,
    so a *lower* AUC is better. ``order="negative"`` removes the least relevant first (LeRF): the
    score should hold, so a *higher* AUC is better. Chefer et al. remove 0%, 10%, ..., 90% and
    report the AUC of top-1 accuracy over a dataset; here one example gives one curve, and
    ``predict`` decides what is tracked (correctness, or the target's probability), to be averaged
    over examples by the caller. Their code removes pixels of the bilinearly upsampled map and sets
    them to 0 before normalisation (black): pass a pixel-resolution map and unnormalised pixels,
    and normalise inside ``predict``, to reproduce it.

    Units follow the relevance: a 2-D map of shape (h, w) splits an image ``inputs`` of shape
    (C, H, W) or (H, W) into h x w patches (H and W must be multiples), so a patch-grid map removes
    patches and a pixel map removes pixels, as Chefer et al. do for ViT. A 1-D map of length T
    removes positions along the first axis of ``inputs`` (token ids (T,) or embeddings (T, D)).
    ``f * n`` rounded half up of the n removable units go at step ``f`` (Chefer et al. truncate;
    the counts differ by at most one), by their rank in relevance, ties in their original order
    (so a constant map removes the same units in both orders). Steps that round to the same count
    are evaluated once, and the curve's ``fractions`` are the counts over n.

    ``baseline`` is what removed units become: a number (0 by default; on inputs normalised with
    the dataset mean 0 is that mean; for token ids pass the tokenizer's mask or pad id), ``"mean"``
    (each channel's mean over the image, for float images), an array broadcastable to ``inputs``
    (such as a blurred copy), or ``"drop"`` to delete tokens from the sequence (1-D maps only).
    ``protected`` is a boolean mask over the units that are never removed, such as [CLS] and [SEP];
    the removed shares are of the remaining units.

    ``predict`` receives a batch, stacked along a new first axis, of the same type as ``inputs``
    (tensor or numpy array) and returns one score per row. All steps go in one call, or in chunks of
    ``batch_size``; with ``"drop"`` the sequences differ in length, so each step is its own call.
    """
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    x = torch.as_tensor(inputs)
    values = _to_numpy(relevance, "relevance")
    unit_index = _unit_index(x.shape, values.shape, baseline)
    fractions, removed_units = removal_masks(values, order, steps, protected)

    if isinstance(baseline, str) and baseline == "drop":
        kept_positions = torch.from_numpy(~removed_units).to(x.device)
        scores = np.concatenate([_predict(predict, x[kept][None], inputs) for kept in kept_positions])
    else:
        removed = torch.from_numpy(removed_units[:, unit_index]).to(x.device)  # (steps, *inputs.shape)
        perturbed = torch.where(removed, _baseline_tensor(baseline, x), x[None])
        chunks = perturbed.split(batch_size or len(fractions))
        scores = np.concatenate([_predict(predict, chunk, inputs) for chunk in chunks])
    return PerturbationCurve(order, fractions, scores)


def ranked_units(relevance: ArrayLike, order: str = "positive", protected: ArrayLike | None = None) -> np.ndarray:
    """Flat indices of the removable (not ``protected``) units in the order they are removed: most relevant first
    for ``"positive"``, least relevant first for ``"negative"``, ties in their original order."""
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    values = _to_numpy(relevance, "relevance")
    candidates = np.flatnonzero(_removable_units(protected, values.shape))
    ranking = -values.ravel()[candidates] if order == "positive" else values.ravel()[candidates]
    return candidates[np.argsort(ranking, kind="stable")]


def removal_masks(relevance: ArrayLike, order: str = "positive", steps: Sequence[float] = DEFAULT_STEPS,
                  protected: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the shares actually removed, one boolean row per share over the flat units: True where removed) for the
    steps of :func:`perturbation_curve`, which perturbs the input with these rows."""
    values = _to_numpy(relevance, "relevance")
    ranked = ranked_units(values, order, protected)
    counts = _removal_counts(steps, ranked.size)
    removed = np.zeros((len(counts), values.size), dtype=bool)
    for row, count in enumerate(counts):
        removed[row, ranked[:count]] = True
    return np.asarray(counts, dtype=np.float64) / ranked.size, removed


def perturbation_auc(
    predict: Callable[[np.ndarray | torch.Tensor], ArrayLike],
    inputs: np.ndarray | torch.Tensor,
    relevance: ArrayLike,
    order: str = "positive",
    **options,
) -> float:
    """The :attr:`PerturbationCurve.auc` of :func:`perturbation_curve` (lower is better for
    ``"positive"``, higher for ``"negative"``); ``options`` are its further keyword arguments."""
    return perturbation_curve(predict, inputs, relevance, order, **options).auc


def _unit_index(input_shape: torch.Size, relevance_shape: tuple[int, ...], baseline: object) -> np.ndarray:
    """For every element of the input, the flat index of the relevance unit it belongs to."""
    if len(relevance_shape) == 1:
        if len(input_shape) < 1 or input_shape[0] != relevance_shape[0]:
            raise InputError(f"token relevance of length {relevance_shape[0]} does not match "
                             f"inputs of shape {tuple(input_shape)}")
        positions = np.arange(relevance_shape[0]).reshape(-1, *([1] * (len(input_shape) - 1)))
        return np.broadcast_to(positions, tuple(input_shape))
    if len(relevance_shape) != 2:
        raise InputError(f"relevance must be 1-D (tokens) or 2-D (an image grid), got shape {relevance_shape}")
    if isinstance(baseline, str) and baseline == "drop":
        raise InputError('baseline "drop" deletes tokens and needs 1-D relevance; images need a replacement value')
    if len(input_shape) not in (2, 3):
        raise InputError(f"an image must have shape (C, H, W) or (H, W) without a batch axis, got {tuple(input_shape)}")
    (height, width), (rows, cols) = input_shape[-2:], relevance_shape
    if height % rows or width % cols:
        raise InputError(f"the image ({height}x{width}) does not split into the relevance grid ({rows}x{cols})")
    grid = np.arange(rows * cols).reshape(rows, cols)
    pixels = grid.repeat(height // rows, axis=0).repeat(width // cols, axis=1)
    return np.broadcast_to(pixels, tuple(input_shape))


def _removable_units(protected: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """Flat boolean mask of the units that may be removed: all but the ``protected`` ones."""
    if protected is None:
        return np.ones(math.prod(shape), dtype=bool)
    if torch.is_tensor(protected):
        protected = protected.detach().cpu().numpy()
    protected = np.asarray(protected, dtype=bool)
    if protected.shape != shape:
        raise InputError(f"protected has shape {protected.shape}, the relevance {shape}")
    if protected.all():
        raise InputError("every unit is protected: there is nothing to remove")
    return ~protected.ravel()


def _removal_counts(steps: Sequence[float], units: int) -> list[int]:
    """How many units each step removes, rounded half up, without repeats."""
    if not len(steps) or any(not 0 <= step <= 1 for step in steps):
        raise InputError(f"steps must be a non-empty sequence of shares in [0, 1], got {steps}")
    if list(steps) != sorted(steps):
        raise InputError(f"steps must be in increasing order, got {steps}")
    return sorted({math.floor(step * units + 0.5) for step in steps})


def _baseline_tensor(baseline: float | str | np.ndarray | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "mean":
            raise InputError(f'baseline must be a number, an array, "mean" or "drop", got {baseline!r}')
        if not x.is_floating_point() or x.dim() not in (2, 3):
            raise InputError('baseline "mean" needs a float image of shape (C, H, W) or (H, W)')
        return x.mean(dim=(-2, -1), keepdim=True)
    value = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        torch.broadcast_shapes(value.shape, x.shape)
    except RuntimeError as error:
        raise InputError(f"baseline of shape {tuple(value.shape)} does not broadcast to inputs {tuple(x.shape)}") from error
    return value


def _predict(predict: Callable, batch: torch.Tensor, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Call ``predict`` on ``batch`` in the caller's array type and check it returns one score per row."""
    argument = batch if torch.is_tensor(inputs) else batch.cpu().numpy()
    scores = _to_numpy(predict(argument), "predict's scores").ravel()
    if scores.size != batch.shape[0]:
        raise InputError(f"predict must return one score per input: got {scores.size} for a batch of {batch.shape[0]}")
    return scores


# --- tables ---------------------------------------------------------------------------------------

def mean_confidence_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its confidence interval, for "mean ± half-width" tables.

    The interval is Student's t: ``t(1 - (1 - confidence) / 2, n - 1) * s / sqrt(n)`` with ``s``
    the sample standard deviation (ddof=1). It assumes independent values and a roughly normal
    mean, which holds for averages over a few dozen examples or more. One value has no spread
    estimate: its half-width is NaN. Filter NaN metric values out before calling.
    """
    data = _to_numpy(values, "values").ravel()
    if data.size == 0:
        raise InputError("values is empty")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    critical = student_t_quantile(1 - (1 - confidence) / 2, data.size - 1)
    return mean, critical * float(data.std(ddof=1)) / math.sqrt(data.size)


def student_t_quantile(probability: float, degrees_of_freedom: float) -> float:
    """The ``probability`` quantile of Student's t distribution, for ``probability`` in [0.5, 1).

    Solved by bisection on ``t``, whose upper tail ``P(T > t) = I_x(df/2, 1/2) / 2`` with
    ``x = df / (df + t^2)`` falls as ``t`` grows; ``I`` is the regularised incomplete beta
    function. Agrees with ``scipy.stats.t.ppf`` to about 1e-10, plenty for a table.
    """
    if not 0.5 <= probability < 1 or degrees_of_freedom <= 0:
        raise InputError(f"need 0.5 <= probability < 1 and degrees_of_freedom > 0, got {probability}, {degrees_of_freedom}")
    tail, half_df = 1 - probability, degrees_of_freedom / 2

    def upper_tail(t: float) -> float:
        return _regularized_incomplete_beta(half_df, 0.5, degrees_of_freedom / (degrees_of_freedom + t * t)) / 2

    low, high = 0.0, 1.0
    while upper_tail(high) > tail:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if upper_tail(middle) > tail else (low, middle)
    return (low + high) / 2


def _regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)`` by its continued fraction (modified Lentz), using the symmetry
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` where the fraction converges slowly (Numerical Recipes, 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300

    def nudged(value: float) -> float:
        return tiny if abs(value) < tiny else value

    c, d = 1.0, 1.0 / nudged(1.0 - (a + b) * x / (a + 1))
    fraction = d
    for m in range(1, 500):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 / nudged(1.0 + coefficient * d)
            c = nudged(1.0 + coefficient / c)
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return fraction
