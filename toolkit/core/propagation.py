"""Propagation of relevance through stacks of attention layers.

``propagate_row`` multiplies a single row through per-layer token-mixing matrices: only the
read-out row of a product such as rollout's A_L ... A_1 is ever needed, so we carry a (B, N)
vector instead of forming (B, N, N) products (O(L N^2) instead of O(L N^3)).

``lrp_through_layers`` applies a set of LRP rules (:class:`toolkit.core.lrp.PropagationRules`: the CVPR 2021
paper's own or the plain ones of its baselines) backwards through captured layers and returns the relevance of
every attention map.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import lrp
from .lrp import working
from .capture import ModuleCall, Recorder
from .spec import LayerSpec, ModelSpec


def head_mean_positive(values: torch.Tensor) -> torch.Tensor:
    """mean over heads (dim 1) of max(values, 0): the head-averaging used by both Chefer et al. papers."""
    return values.clamp(min=0).mean(dim=1)


def propagate_row(readout: torch.Tensor, maps: list[torch.Tensor], start_layer: int = 0,
                  add_identity: bool = True, normalise_rows: bool = False) -> torch.Tensor:
    """readout^T (M_L ... M_start) with M_l = maps[l] (+ I) (rows normalised), as a (B, N) row."""
    row = readout
    for matrix in reversed(maps[start_layer:]):
        row = row.to(matrix.dtype)  # LRP relevance is float64 for a float64 model
        if normalise_rows:
            matrix = matrix + torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
            matrix = matrix / matrix.sum(dim=-1, keepdim=True)
            row = torch.einsum("bi,bij->bj", row, matrix)
        elif add_identity:
            row = row + torch.einsum("bi,bij->bj", row, matrix)
        else:
            row = torch.einsum("bi,bij->bj", row, matrix)
    return row


def identity_share(readout: torch.Tensor, maps: list[torch.Tensor], normalise_rows: bool = False) -> torch.Tensor:
    """The part of :func:`propagate_row`'s result that flows through the identity of every layer.

    With I added, that is the read-out row itself; with rows normalised, each layer scales token i's
    identity path by 1 / (row sum of M_l + I)_i, and diagonal factors commute, so their product applies.
    """
    share = readout
    if normalise_rows:
        for matrix in maps:
            share = share / (matrix.sum(dim=-1) + 1)
    return share


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = t.shape
    return t.reshape(b, n, heads, -1).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def _linear_relevance(linear: torch.nn.Linear, call: ModuleCall, relevance: torch.Tensor,
                      rules: lrp.PropagationRules) -> torch.Tensor:
    """The rules' relevance of a recorded Linear call's input. Its output less the bias is the rule's x W^T
    (one product fewer), unless the model computed it in a lower precision than the rules run in (bfloat16,
    float16: the rule's z, a difference, would inherit its rounding) or changed it in place after the call."""
    output, version = call.output, call.output_version
    usable = version is not None and output.dtype == lrp.working_dtype(output.dtype) and output._version == version
    product = None if not usable else output if linear.bias is None else output - linear.bias
    return rules.linear(working(call.input), working(linear.weight), relevance, product)


def _projection_relevance(spec: LayerSpec, rec: Recorder, rules: lrp.PropagationRules, r_q, r_k, r_v
                          ) -> torch.Tensor:
    """Relevance of the attention input, through the Q, K, V projections (fused or separate)."""
    c = spec.call
    if spec.qkv is not None:
        call = rec.call(spec.qkv, c)
        r_qkv = torch.cat([_merge_heads(r) for r in (r_q, r_k, r_v)], dim=-1)
        return _linear_relevance(spec.qkv, call, r_qkv, rules)
    total = 0
    for linear, r in zip((spec.query, spec.key, spec.value), (r_q, r_k, r_v)):
        total = total + _linear_relevance(linear, rec.call(linear, c), _merge_heads(r), rules)
    return total


def _qkv(spec: LayerSpec, rec: Recorder):
    c, h = spec.call, spec.num_heads
    if spec.qkv is not None:
        out = working(rec.call(spec.qkv, c).output)
        b, n, _ = out.shape
        q, k, v = out.reshape(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)
        return q, k, v
    return tuple(_split_heads(working(rec.call(m, c).output), h) for m in (spec.query, spec.key, spec.value))


def _scaled(branch: torch.Tensor, scale: torch.Tensor | float | None) -> torch.Tensor:
    """A branch's output times its layer-scale parameter (BEiT, EVA), as the layer adds it to the residual; the
    scale passes relevance unchanged, like the other element-wise factors."""
    if scale is None:
        return branch
    return branch * (working(scale).to(branch.device) if torch.is_tensor(scale) else scale)


def lrp_through_layer(spec: LayerSpec, rec: Recorder, relevance: torch.Tensor, probs: torch.Tensor,
                      rules: lrp.PropagationRules = lrp.CVPR2021_RULES):
    """Relevance of the layer's input and of its attention map, from the relevance of its output."""
    c = spec.call
    x = working(rec.call(spec.block, c).input)
    attn_out = _scaled(working(rec.call(spec.attn_branch, c).output), spec.attn_scale)
    mlp_out = _scaled(working(rec.call(spec.mlp_branch, c).output), spec.mlp_scale)
    fc1_in = working(rec.call(spec.fc1, c).input)
    # Pre-LN: the MLP's residual stream is x + attention; post-LN: it is the LayerNorm output, fc1's input.
    mid = x + attn_out if spec.norm_first else fc1_in

    r_mid_skip, r_mlp = rules.residual(mid, mlp_out, relevance)
    r_hidden = _linear_relevance(spec.fc2, rec.call(spec.fc2, c), r_mlp, rules)
    r_mid = r_mid_skip + _linear_relevance(spec.fc1, rec.call(spec.fc1, c), r_hidden, rules)

    r_x_skip, r_attn = rules.residual(x, attn_out, r_mid)
    r_context = _linear_relevance(spec.out_proj, rec.call(spec.out_proj, c), r_attn, rules)
    q, k, v = _qkv(spec, rec)
    r_probs, r_q, r_k, r_v = lrp.attention_core(q, k, v, probs, _split_heads(r_context, spec.num_heads))
    return r_x_skip + _projection_relevance(spec, rec, rules, r_q, r_k, r_v), r_probs


@torch.no_grad()
def lrp_through_layers(spec: ModelSpec, rec: Recorder, probs: list[torch.Tensor], start: torch.Tensor,
                       readout: torch.Tensor, lowest_layer: int = 0,
                       rules: lrp.PropagationRules = lrp.CVPR2021_RULES,
                       keep: Callable[[int, torch.Tensor], torch.Tensor | None] = lambda index, relevance: relevance):
    """Run LRP from ``start``, the relevance at the output of the spec's last head module (B, D) (a one-hot target
    logit for a classifier), through the head to the token rows it reads (``readout`` (B, N) weights), then down
    to the input of layer ``lowest_layer``. With ``readout`` None, ``start`` is the relevance of the last layer's
    output tokens (B, N, D) already (a head without Linear layers: ``ModelSpec.token_start``).

    Returns (relevance of that layer's input (B, N, D), ``keep(layer, relevance)`` of each attention map's
    relevance (B, H, N, N), None below ``lowest_layer``): methods that read only upper layers do not pay for the
    lower ones, and what a method does not read of a map is let go as soon as the pass is below it.
    What the Recorder kept of a layer for the pass is let go once the pass is below it (the block's call stays).
    """
    spec.check_lrp()
    if readout is None:
        tokens = working(start)
    else:
        relevance = start.to(lrp.working_dtype(spec.head[-1].weight.dtype))
        for linear in reversed(spec.head):
            relevance = _linear_relevance(linear, rec.call(linear), relevance, rules)
        tokens = readout.to(relevance.dtype)[:, :, None] * relevance[:, None, :]
    attention_relevance: list[torch.Tensor] = [None] * len(spec.layers)
    for index in reversed(range(lowest_layer, len(spec.layers))):
        tokens, relevance = lrp_through_layer(spec.layers[index], rec, tokens, probs[index], rules)
        spec.layers[index].forget(rec)
        attention_relevance[index] = keep(index, relevance)
        del relevance
    return tokens, attention_relevance


def one_hot(targets: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, size) rows with a one at each sample's target: where LRP starts from a class logit."""
    rows = torch.zeros(targets.shape[0], size, dtype=dtype, device=targets.device)
    rows[torch.arange(targets.shape[0], device=targets.device), targets] = 1.0
    return rows
