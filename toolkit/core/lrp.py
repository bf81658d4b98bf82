"""The LRP rules of Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
Visualization" (CVPR 2021), applied to tensors captured from a stock model, in two rule sets
(:data:`CVPR2021_RULES`, :data:`PLAIN_RULES`, see :class:`PropagationRules`).

- linear layers: the alpha=1, beta=0 rule (only positive contributions, no bias);
- LayerNorm, GELU, tanh, softmax, dropout: relevance passes unchanged;
- the two attention products (Q K^T and A V): the z-rule, relevance split in half between operands;
- residual additions: the z-rule, then each operand's relevance rescaled so that the shares follow
  |sum R_operand| and the total is conserved ("normalised" residual); the plain rule set keeps the z-rule alone;
- the pixel-facing patch embedding: the z^B rule, bounded by each image's lowest and highest value.

Every function works on a batch; sums that the rules normalise by are taken per sample. The rules run
in float32, or in float64 for a float64 model (see :func:`working`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

EPS = 1e-9
CONDITION = 256  # |x| |W|^T / z above which linear_alpha1_beta0 sums x+ W+ and x- W- apart


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision models, the model's own dtype otherwise (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def working(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, in :func:`working_dtype`. The rules divide by sums that nearly cancel, which amplifies
    rounding (float32 runs of the same rules can differ by several 1e-3 of the maximum); float64 models keep
    float64."""
    return t.detach().to(working_dtype(t.dtype))


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, with the denominator pushed away from zero and 0 where it was exactly 0.

    The push is denominator + EPS (what clamp(min=EPS) + clamp(max=EPS) sums to), EPS where that is 0; written
    with two masks instead of eleven element-wise passes (the LRP pass runs it on every layer's activations)."""
    stabilised = denominator + EPS
    stabilised = stabilised.masked_fill_(stabilised == 0, EPS)
    return (numerator / stabilised).masked_fill_(denominator == 0, 0)


def _rows_with_relevance(relevance: torch.Tensor) -> torch.Tensor | None:
    """Which rows of ``relevance`` (..., D) hold a non-zero value, flattened; None where all do. The first column
    settles almost every row of a dense relevance; only the rows where it is zero are read in full."""
    flat = relevance.reshape(-1, relevance.shape[-1])
    rows = flat[:, 0] != 0
    if bool(rows.all()):
        return None
    unsure = (~rows).nonzero().squeeze(1)
    rows[unsure] = flat[unsure].any(dim=-1)
    return None if bool(rows.all()) else rows


def linear_alpha1_beta0(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                        product: torch.Tensor | None = None) -> torch.Tensor:
    """Relevance of a linear layer's input: positive contributions x+ W+ and x- W-, bias excluded.

    With W+- = (W +- |W|) / 2 and x = x+ + x-, the rule's sums are z = x+ W+^T + x- W-^T = (x W^T + |x| |W|^T) / 2
    and R_in = x+ (s W+) + x- (s W-) = (x (s W) + |x| (s |W|)) / 2 with s = R / z: three matrix products where
    the caller passes ``product`` = x W^T (the layer's recorded output less its bias), four otherwise, and no sign
    splits of x and W. z is then a difference, whose rounding grows with |x| |W|^T / z: the outputs where that
    exceeds :data:`CONDITION` (almost all contributions negative) take the split sums instead. Rows of
    ``relevance`` that are zero (those a classifier does not read, above the last attention) are skipped."""
    rows = _rows_with_relevance(relevance)
    if rows is not None:
        def kept(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, t.shape[-1])[rows]

        out = x.new_zeros(*relevance.shape[:-1], x.shape[-1])
        out.view(-1, x.shape[-1])[rows] = linear_alpha1_beta0(kept(x), weight, kept(relevance),
                                                               None if product is None else kept(product))
        return out
    magnitude, weight_magnitude = x.abs(), weight.abs()
    bound = F.linear(magnitude, weight_magnitude)  # |x| |W|^T >= |x W^T|
    twice_z = bound + (F.linear(x, weight) if product is None else product)
    rounded = twice_z <= bound.mul_(2 / CONDITION)
    del bound
    s = relevance.div(twice_z.add_(2 * EPS)).masked_fill_(rounded, 0)  # R / (z + EPS), halved
    del twice_z
    out = (s @ weight).mul_(x).addcmul_(s @ weight_magnitude, magnitude)
    del s
    if rounded.numel() and rounded.view(torch.uint8).max():  # (any() of a bool tensor is 70x slower on the CPU)
        columns = rounded.reshape(-1, rounded.shape[-1]).any(dim=0).nonzero().squeeze(1)
        out += _alpha1_beta0_split(x, weight[columns], relevance[..., columns] * rounded[..., columns])
    return out


def _alpha1_beta0_split(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The alpha1-beta0 rule from the sign-split sums x+ W+ and x- W- (four products; z a sum of non-negative
    terms, however small)."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(relevance, F.linear(x_pos, w_pos).add_(F.linear(x_neg, w_neg)))
    return (s @ w_pos).mul_(x_pos).addcmul_(s @ w_neg, x_neg)


def linear_alpha1_beta0_plain(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                              product: torch.Tensor | None = None) -> torch.Tensor:
    """alpha=1, beta=0 as the reference's plain-LRP ViT (``ViT_orig_LRP``, the CVPR 2021 paper's LRP baselines)
    computes it: the x- W- contributions divided by twice their own sum instead of by the whole positive sum, so
    that the layer does not conserve. Followed as written: the baselines' numbers come from it (the textbook rule
    moves full LRP maps to a correlation of 0.82-0.96 with the reference's). The x- W- sum has no shortcut through
    the layer's output, so ``product`` (x W^T, see :func:`linear_alpha1_beta0`) goes unused."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    z_pos, z_neg = F.linear(x_pos, w_pos), F.linear(x_neg, w_neg)
    s_pos, s_neg = safe_divide(relevance, z_pos + z_neg), safe_divide(relevance, z_neg + z_neg)
    return (s_pos @ w_pos).mul_(x_pos).addcmul_(s_neg @ w_neg, x_neg)


def residual_add_plain(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The z-rule alone for ``a + b``: each operand's share of every element, without the per-sample
    renormalisation of :func:`residual_add`."""
    s = safe_divide(relevance, a + b)
    return a * s, b * s


def _per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def residual_add(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the relevance of ``a + b`` between the operands, normalised so that nothing is lost."""
    s = safe_divide(relevance, a + b)
    r_a, r_b = a * s, b * s
    sum_a, sum_b, total = _per_sample_sum(r_a), _per_sample_sum(r_b), _per_sample_sum(relevance)
    share_a = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
    share_b = safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
    return r_a * safe_divide(share_a, sum_a), r_b * safe_divide(share_b, sum_b)


@dataclass(frozen=True)
class PropagationRules:
    """The two rules that tell the CVPR 2021 paper's own propagation (Transformer Attribution's) from the plain LRP
    of its baselines; every other rule (attention products, LayerNorm, activations, the pixel z^B) is shared."""

    name: str
    linear: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    residual: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


CVPR2021_RULES = PropagationRules("cvpr2021", linear_alpha1_beta0, residual_add)
PLAIN_RULES = PropagationRules("plain", linear_alpha1_beta0_plain, residual_add_plain)


def matmul_z(left: torch.Tensor, right: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-rule for ``left @ right`` with relevance split in half between the two operands."""
    s = safe_divide(relevance, left @ right)
    r_left = (s @ right.transpose(-1, -2)).mul_(left).mul_(0.5)  # in place: (B, H, N, N) on the attention products
    r_right = (left.transpose(-1, -2) @ s).mul_(right).mul_(0.5)
    return r_left, r_right


def attention_core(q, k, v, probs, relevance_context):
    """Relevance through softmax(Q K^T) V for tensors shaped (B, H, N, d) and probs (B, H, N, N).

    Returns the relevance of the attention map (what CVPR 2021 combines with its gradient) and of Q, K, V.
    The scale of Q K^T does not matter: the z-rule is invariant to it.
    """
    r_probs, r_v = matmul_z(probs, v, relevance_context)
    r_q, r_kt = matmul_z(q, k.transpose(-1, -2), r_probs)  # softmax passes relevance unchanged
    return r_probs, r_q, r_kt.transpose(-1, -2), r_v


def patch_embedding_zb(pixels: torch.Tensor, conv: torch.nn.Conv2d, relevance: torch.Tensor) -> torch.Tensor:
    """z^B rule for the convolution that reads pixels; bounds are each image's min and max value."""
    low = pixels.amin(dim=(1, 2, 3), keepdim=True).expand_as(pixels)
    high = pixels.amax(dim=(1, 2, 3), keepdim=True).expand_as(pixels)
    w, w_pos, w_neg = conv.weight, conv.weight.clamp(min=0), conv.weight.clamp(max=0)
    conv_args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
    z = (F.conv2d(pixels, w, **conv_args) - F.conv2d(low, w_pos, **conv_args)
         - F.conv2d(high, w_neg, **conv_args) + EPS)
    s = relevance / z

    def back(weight):
        return torch.nn.grad.conv2d_input(pixels.shape, weight, s, **conv_args)

    return pixels * back(w) - low * back(w_pos) - high * back(w_neg)
