"""The reference computations every method is checked against, written from the papers' equations, one sample at a
time, without padding, on the stock model's own tensors (the library's code is never called).

Attention-based methods (raw attention, rollout, attention Grad-CAM, generic) read the full N x N products of the
eager model's own attention maps and their autograd gradients, from the read-out row (one-hot on [CLS], or the mean
over tokens a pooled model reads).

The LRP reference re-runs every layer from the stock modules' weights on the layer's captured input, checks that
this reproduces the model's own hidden state and attention map, and applies the CVPR 2021 rules in the "gradprop"
style (R_in = X * grad(Z, X, grad_outputs=R/Z)) instead of the library's closed-form matrix products:

- linear: alpha=1, beta=0, no bias;  LayerNorm, activations, softmax, dropout, layer scale: identity;
- Q K^T and A V: z-rule without bias, each operand's relevance halved; R_A is taken from A V;
- residual z = a + b: z-rule, then rescaled to |sum R_a| / (|sum R_a| + |sum R_b|) of sum R (per sample);
  the plain rules of the paper's LRP baselines (``PLAIN``) keep the z-rule alone, and their linear rule divides the
  x- W- part by twice its own sum, as the reference's ViT_orig_LRP does;
- fan-out: relevances summed;  head: from a one-hot at the target logit to the read-out token's row;
- images: the prefix-token/position residual, then z^B on the patch convolution (bounds = the image's min / max).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import RefPass

EPS = 1e-9
# Full LRP is ill-conditioned on these tiny random models: the z-rule on Q K^T and A V and the residual rule
# divide by sums that nearly cancel (|terms| / |sum| up to ~1e5). Float32 rounding alone moves the input
# relevance by up to ~7e-3 of its maximum (a float32 run against a float64 one), and a 1-ulp difference in the
# attention map ((q * scale) @ k^T, as timm computes it, against q @ k^T * scale) by ~1e-3: two float32
# computations of the same rules agree only by luck of rounding, which package updates change.
# So the comparisons run on float64 copies of the models (``cases_float64``; the library keeps float64) and a
# float64 reference. There the library agrees with the reference to the float32 rounding of the returned
# scores (worst error ~5% of the tolerance below), a library that ran the rules in float32 fails, and so do
# small rule changes (a stabiliser of 1e-8 instead of 1e-9, a 0.499 / 0.501 split of the attention products).
DTYPE = torch.float64


def assert_scores(actual, expected, what: str = "", rtol: float = 1e-4, atol_rel: float = 1e-5) -> None:
    """Relative comparison; the absolute floor scales with the reference's magnitude."""
    actual = torch.as_tensor(np.asarray(actual), dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    atol = atol_rel * max(float(expected.abs().max()), 1e-6)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}\n{m}")


# --- attention-based methods (the papers' equations, one sample) -----------------------------------------------
def ref_raw_attention(p: RefPass, target, start: int) -> torch.Tensor:
    """The last layer's attention, heads averaged, in the read-out row."""
    return p.readout @ p.attentions[-1].detach().double().mean(dim=0)


def ref_rollout(p: RefPass, target, start: int) -> torch.Tensor:
    """Abnar & Zuidema: P = Â_L ... Â_s with Â = (mean_h A + I), rows normalised; the read-out row of the full
    product. Under a pooled read-out the pure-identity path, diag(prod_l 1 / row sums of (mean_h A_l + I)), is taken
    out: it is the same for every token and says nothing (the library's default keep_identity=False)."""
    n = p.attentions[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    product, identity = eye.clone(), eye.clone()
    for a in p.attentions[start:]:
        layer = a.detach().double().mean(dim=0) + eye
        identity = identity / layer.sum(dim=-1, keepdim=True)
        layer = layer / layer.sum(dim=-1, keepdim=True)
        product = layer @ product
    return p.readout @ (product - identity if p.pooled else product)


def ref_attention_gradcam(p: RefPass, target, start: int) -> torch.Tensor:
    """Grad-CAM on the last layer's heads: each head weighted by its gradient averaged over the read-out row's content
    tokens; the heads' mean of weight * attention row, clamped at zero."""
    grad, attn = p.attention_grads(target)[-1].double(), p.attentions[-1].detach().double()
    grad_row, attn_row = p.readout @ grad, p.readout @ attn    # (H, N): the read-out row of each head
    weights = grad_row[:, p.content].mean(dim=-1)              # one weight per head
    return (weights[:, None] * attn_row).mean(dim=0).clamp(min=0)


def ref_generic(p: RefPass, target, start: int) -> torch.Tensor:
    """Chefer et al. ICCV 2021: R = I; R <- R + mean_h (grad A * A)+ R, forward order; the read-out row (full N x N),
    without the identity under a pooled read-out (see ref_rollout)."""
    grads = p.attention_grads(target)
    n = p.attentions[0].shape[-1]
    relevance = torch.eye(n, dtype=torch.float64)
    for grad, attn in list(zip(grads, p.attentions))[start:]:
        layer = (grad.double() * attn.detach().double()).clamp(min=0).mean(dim=0)
        relevance = relevance + layer @ relevance
    return p.readout @ (relevance - torch.eye(n, dtype=torch.float64) if p.pooled else relevance)


REFERENCES = {"raw_attention": ref_raw_attention, "rollout": ref_rollout,
              "attention_gradcam": ref_attention_gradcam, "generic": ref_generic}


def other_target(p: RefPass) -> int:
    """A class that is not the predicted one."""
    return (int(p.logits.argmax()) + 1) % p.logits.shape[0]


# --- the rules, gradprop style -------------------------------------------------------------------------
def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / (b.clamp(min=EPS) + b.clamp(max=EPS)) * (b != 0)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def rel_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """alpha=1, beta=0: Z = x+ W+^T + x- W-^T; R_in = x+ * grad_x+(Z; S) + x- * grad_x-(Z; S), S = R / Z."""
    x_pos, x_neg = _leaf(x.clamp(min=0)), _leaf(x.clamp(max=0))
    z = F.linear(x_pos, weight.clamp(min=0)) + F.linear(x_neg, weight.clamp(max=0))
    s = safe_divide(relevance, z.detach())
    g_pos, g_neg = torch.autograd.grad(z, (x_pos, x_neg), s)
    return x_pos.detach() * g_pos + x_neg.detach() * g_neg


def rel_matmul(left: torch.Tensor, right: torch.Tensor, relevance: torch.Tensor):
    """z-rule for left @ right (no bias), each operand's relevance halved."""
    left, right = _leaf(left), _leaf(right)
    z = left @ right
    g_left, g_right = torch.autograd.grad(z, (left, right), safe_divide(relevance, z.detach()))
    return left.detach() * g_left / 2, right.detach() * g_right / 2


def rel_add(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    """Residual a + b: z-rule, then each side rescaled by its |sum| share of sum(R) (one sample)."""
    a, b = _leaf(a), _leaf(b)
    z = a + b
    g_a, g_b = torch.autograd.grad(z, (a, b), safe_divide(relevance, z.detach()))
    r_a, r_b = a.detach() * g_a, b.detach() * g_b
    sum_a, sum_b, total = r_a.sum(), r_b.sum(), relevance.sum()
    share_a = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
    share_b = safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
    return r_a * safe_divide(share_a, sum_a), r_b * safe_divide(share_b, sum_b)


def rel_linear_plain(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """alpha=1, beta=0 as the plain-LRP reference ViT (ViT_orig_LRP) writes it: Z1 = x+ W+^T, Z2 = x- W-^T;
    R_in = x+ * grad_x+(Z1; R / (Z1 + Z2)) + x- * grad_x-(Z2; R / (Z2 + Z2))."""
    x_pos, x_neg = _leaf(x.clamp(min=0)), _leaf(x.clamp(max=0))
    z_pos, z_neg = F.linear(x_pos, weight.clamp(min=0)), F.linear(x_neg, weight.clamp(max=0))
    (g_pos,) = torch.autograd.grad(z_pos, x_pos, safe_divide(relevance, (z_pos + z_neg).detach()))
    (g_neg,) = torch.autograd.grad(z_neg, x_neg, safe_divide(relevance, (z_neg + z_neg).detach()))
    return x_pos.detach() * g_pos + x_neg.detach() * g_neg


def rel_add_plain(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    """Residual a + b by the z-rule alone (plain LRP: no rescaling)."""
    a, b = _leaf(a), _leaf(b)
    z = a + b
    g_a, g_b = torch.autograd.grad(z, (a, b), safe_divide(relevance, z.detach()))
    return a.detach() * g_a, b.detach() * g_b


@dataclass(frozen=True)
class RefRules:
    """The rules that differ between the CVPR 2021 paper's own LRP and the plain LRP of its baselines."""
    linear: Callable
    add: Callable


CVPR2021 = RefRules(rel_linear, rel_add)
PLAIN = RefRules(rel_linear_plain, rel_add_plain)


def rel_patch_conv_zb(pixels: torch.Tensor, weight: torch.Tensor, stride, relevance: torch.Tensor) -> torch.Tensor:
    """z^B: Z = conv(X, W) - conv(L, W+) - conv(H, W-) + eps with L / H the image's min / max."""
    x = _leaf(pixels[None])
    low, high = _leaf(torch.full_like(x, float(pixels.min()))), _leaf(torch.full_like(x, float(pixels.max())))
    z = (F.conv2d(x, weight, stride=stride) - F.conv2d(low, weight.clamp(min=0), stride=stride)
         - F.conv2d(high, weight.clamp(max=0), stride=stride) + EPS)
    g_x, g_low, g_high = torch.autograd.grad(z, (x, low, high), relevance[None] / z.detach())
    return (x.detach() * g_x + low.detach() * g_low + high.detach() * g_high)[0]


# --- the model's structure, read from the stock modules ---------------------------------------------------
Linear = tuple[torch.Tensor, torch.Tensor | None]  # (weight, bias) in DTYPE


def _lin(module: nn.Linear, rows: slice | None = None) -> Linear:
    w = module.weight.detach().to(DTYPE)
    b = None if module.bias is None else module.bias.detach().to(DTYPE)
    if rows is not None:
        w, b = w[rows], (None if b is None else b[rows])
    return w, b


def _in_dtype(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A DTYPE copy of a parameter-holding module (LayerNorm) or the function itself (activation)."""
    import copy

    return copy.deepcopy(module).to(DTYPE) if any(True for _ in module.parameters()) else module


@dataclass
class Layer:
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    fc1: Linear
    fc2: Linear
    act: Callable
    ln1: Callable
    ln2: Callable
    heads: int
    pre_ln: bool
    ls1: torch.Tensor | None = None  # layer scale of the attention branch (BEiT's lambda_1, EVA's gamma_1)
    ls2: torch.Tensor | None = None  # and of the MLP branch
    biased: bool = False             # a position bias enters the scores (MPNet, BEiT): softmax(QK^T) is not rechecked


def _scale(value) -> torch.Tensor | None:
    """A layer scale as a DTYPE tensor: a parameter, timm's LayerScale module, or None (Identity, 1.0, absent)."""
    value = getattr(value, "gamma", value)
    if isinstance(value, nn.Identity) or value is None or (isinstance(value, float) and value == 1.0):
        return None
    return torch.as_tensor(value).detach().to(DTYPE)


@dataclass
class Structure:
    layers: list[Layer]
    final_norm: Callable                          # applied to the last hidden state before the head
    head: list[tuple[Linear, Callable]]           # (linear, activation after it), from the read-out row to logits


# Families a test module defines (a model written only in that test) add their reading of its structure, and of its
# embedding (patch convolution, prefix tokens, position terms), here.
STRUCTURES: dict[str, Callable[[nn.Module], Structure]] = {}
EMBEDDINGS: dict[str, Callable[[nn.Module], tuple[nn.Conv2d, torch.Tensor, torch.Tensor]]] = {}


def structure(case) -> Structure:
    model, fam = case.reference, case.family
    identity = nn.Identity()
    if fam in STRUCTURES:
        return STRUCTURES[fam](model)
    if fam in ("bert", "roberta", "electra"):
        base = model.base_model
        layers = [Layer(_lin(l.attention.self.query), _lin(l.attention.self.key), _lin(l.attention.self.value),
                        _lin(l.attention.output.dense), _lin(l.intermediate.dense), _lin(l.output.dense),
                        l.intermediate.intermediate_act_fn, _in_dtype(l.attention.output.LayerNorm),
                        _in_dtype(l.output.LayerNorm), model.config.num_attention_heads, False)
                  for l in base.encoder.layer]
        if fam == "bert":
            head = [(_lin(base.pooler.dense), torch.tanh), (_lin(model.classifier), identity)]
        else:
            act = torch.tanh if fam == "roberta" else model.classifier.activation
            head = [(_lin(model.classifier.dense), act), (_lin(model.classifier.out_proj), identity)]
        return Structure(layers, identity, head)
    if fam == "distilbert":
        layers = [Layer(_lin(l.attention.q_lin), _lin(l.attention.k_lin), _lin(l.attention.v_lin),
                        _lin(l.attention.out_lin), _lin(l.ffn.lin1), _lin(l.ffn.lin2), l.ffn.activation,
                        _in_dtype(l.sa_layer_norm), _in_dtype(l.output_layer_norm), model.config.n_heads, False)
                  for l in model.distilbert.transformer.layer]
        return Structure(layers, identity, [(_lin(model.pre_classifier), torch.relu), (_lin(model.classifier), identity)])
    if fam == "albert":
        config = model.config
        groups = model.albert.encoder.albert_layer_groups
        layers = []
        for depth in range(config.num_hidden_layers):  # the same modules at every depth
            (l,) = groups[depth * config.num_hidden_groups // config.num_hidden_layers].albert_layers
            layers.append(Layer(_lin(l.attention.query), _lin(l.attention.key), _lin(l.attention.value),
                                _lin(l.attention.dense), _lin(l.ffn), _lin(l.ffn_output), l.activation,
                                _in_dtype(l.attention.LayerNorm), _in_dtype(l.full_layer_layer_norm),
                                config.num_attention_heads, False))
        return Structure(layers, identity, [(_lin(model.albert.pooler), torch.tanh), (_lin(model.classifier), identity)])
    if fam == "hf-vit":
        layers = [Layer(_lin(l.attention.q_proj), _lin(l.attention.k_proj), _lin(l.attention.v_proj),
                        _lin(l.attention.o_proj), _lin(l.mlp.fc1), _lin(l.mlp.fc2), l.mlp.activation_fn,
                        _in_dtype(l.layernorm_before), _in_dtype(l.layernorm_after), model.config.num_attention_heads,
                        True)
                  for l in model.vit.layers]
        return Structure(layers, _in_dtype(model.vit.layernorm), [(_lin(model.classifier), identity)])
    if fam in ("timm-vit", "timm-eva"):  # layer scale: timm ViT's LayerScale modules, EVA's gamma parameters
        layers = []
        for b in model.blocks:
            d = b.attn.qkv.out_features // 3
            scales = (b.ls1, b.ls2) if hasattr(b, "ls1") else (b.gamma_1, b.gamma_2)
            layers.append(Layer(_lin(b.attn.qkv, slice(0, d)), _lin(b.attn.qkv, slice(d, 2 * d)),
                                _lin(b.attn.qkv, slice(2 * d, 3 * d)), _lin(b.attn.proj), _lin(b.mlp.fc1),
                                _lin(b.mlp.fc2), b.mlp.act, _in_dtype(b.norm1), _in_dtype(b.norm2), b.attn.num_heads,
                                True, *map(_scale, scales)))
        return Structure(layers, _in_dtype(model.norm), [(_lin(model.head), identity)])
    if fam == "mpnet":
        layers = [Layer(_lin(l.attention.attn.q), _lin(l.attention.attn.k), _lin(l.attention.attn.v),
                        _lin(l.attention.attn.o), _lin(l.intermediate.dense), _lin(l.output.dense),
                        l.intermediate.intermediate_act_fn, _in_dtype(l.attention.LayerNorm),
                        _in_dtype(l.output.LayerNorm), model.config.num_attention_heads, False, biased=True)
                  for l in model.mpnet.encoder.layer]
        return Structure(layers, identity, [(_lin(model.classifier.dense), torch.tanh),
                                            (_lin(model.classifier.out_proj), identity)])
    if fam == "xlm":  # each part of a layer in a list of its own
        t = model.transformer
        layers = [Layer(_lin(a.q_lin), _lin(a.k_lin), _lin(a.v_lin), _lin(a.out_lin), _lin(f.lin1), _lin(f.lin2), f.act,
                        _in_dtype(n1), _in_dtype(n2), t.n_heads, False)
                  for a, f, n1, n2 in zip(t.attentions, t.ffns, t.layer_norm1, t.layer_norm2)]
        return Structure(layers, identity, [(_lin(model.sequence_summary.summary), identity)])
    if fam == "hf-beit":
        layers = [Layer(_lin(l.attention.q_proj), _lin(l.attention.k_proj), _lin(l.attention.v_proj),
                        _lin(l.attention.o_proj), _lin(l.mlp.fc1), _lin(l.mlp.fc2), l.mlp.activation_fn,
                        _in_dtype(l.layernorm_before), _in_dtype(l.layernorm_after), model.config.num_attention_heads,
                        True, _scale(l.lambda_1), _scale(l.lambda_2), biased=l.relative_position_bias is not None)
                  for l in model.beit.layers]
        return Structure(layers, _in_dtype(model.beit.layernorm), [(_lin(model.classifier), identity)])
    raise AssertionError(fam)


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    n, d = t.shape
    return t.reshape(n, h, d // h).transpose(0, 1)


def _merge(t: torch.Tensor) -> torch.Tensor:
    h, n, d = t.shape
    return t.transpose(0, 1).reshape(n, h * d)


def layer_forward(layer: Layer, x: torch.Tensor, stock_attention: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """One layer on one sample (N, D), keeping every intermediate the rules need.

    The attention map is the stock model's own, once it is checked against softmax(Q K^T / sqrt(d)) (unless a
    position bias enters the scores): Hugging Face's eager attention takes its softmax in float32 whatever the
    model's dtype, and the rules would amplify that rounding (see DTYPE). A layer scale multiplies its branch."""
    f: dict[str, torch.Tensor] = {"x": x}
    f["h"] = layer.ln1(x) if layer.pre_ln else x                       # what Q, K, V read
    q, k, v = (_heads(F.linear(f["h"], *p), layer.heads) for p in (layer.q, layer.k, layer.v))
    f["q"], f["k"], f["v"] = q, k, v
    if not layer.biased:
        torch.testing.assert_close((q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1), stock_attention,
                                   rtol=1e-5, atol=1e-6, msg=f"{name}: re-computed attention != stock attention")
    f["A"] = stock_attention
    f["ctx"] = _merge(f["A"] @ v)
    f["attn_out"] = F.linear(f["ctx"], *layer.o) * (1 if layer.ls1 is None else layer.ls1)
    if layer.pre_ln:
        f["x1"] = x + f["attn_out"]
        f["h2"] = layer.ln2(f["x1"])
    else:
        f["x1"] = layer.ln1(x + f["attn_out"])
        f["h2"] = f["x1"]
    f["m"] = layer.act(F.linear(f["h2"], *layer.fc1))
    f["mlp_out"] = F.linear(f["m"], *layer.fc2) * (1 if layer.ls2 is None else layer.ls2)
    f["out"] = f["x1"] + f["mlp_out"] if layer.pre_ln else layer.ln2(f["x1"] + f["mlp_out"])
    return f


def layer_relevance(layer: Layer, f: dict[str, torch.Tensor], r_out: torch.Tensor, rules: RefRules = CVPR2021):
    """(relevance of the layer input, relevance of the attention map (H, N, N), bookkeeping sums)."""
    # out = [LN2](x1 + mlp_out): LN identity, residual rule
    r_x1_skip, r_mlp = rules.add(f["x1"], f["mlp_out"], r_out)
    r_m = rules.linear(f["m"], layer.fc2[0], r_mlp)                     # activation: identity
    r_x1 = r_x1_skip + rules.linear(f["h2"], layer.fc1[0], r_m)        # fan-out of x1 (LN2 identity)
    # x1 = [LN1](x + attn_out); a layer scale passes relevance unchanged
    r_x_skip, r_attn = rules.add(f["x"], f["attn_out"], r_x1)
    r_ctx = _heads(rules.linear(f["ctx"], layer.o[0], r_attn), layer.heads)
    r_a, r_v = rel_matmul(f["A"], f["v"], r_ctx)                       # context = A V
    r_q, r_kt = rel_matmul(f["q"], f["k"].transpose(-1, -2), r_a)      # softmax identity, scale irrelevant
    r_h = sum(rules.linear(f["h"], p[0], _merge(r)) for p, r in
              ((layer.q, r_q), (layer.k, r_kt.transpose(-1, -2)), (layer.v, r_v)))
    sums = {"out": r_out.sum(), "x1": r_x1.sum(), "ctx": r_ctx.sum(), "A+V": r_a.sum() + r_v.sum(),
            "in": (r_x_skip + r_h).sum()}
    return r_x_skip + r_h, r_a, sums


@dataclass
class LRPResult:
    target: int
    attention: list[torch.Tensor]       # R_A per layer (H, N, N)
    first: torch.Tensor                 # relevance of the first layer's input (N, D)
    per_layer_sums: list[dict]
    pixels: torch.Tensor | None = None  # (H, W) for images
    patch_sum: float | None = None      # relevance that reached the patch-embedding output


_LRP_CACHE: dict = {}


def reference_lrp(case, i: int, target: int | None, rules: RefRules = CVPR2021) -> LRPResult:
    key = (case.name, id(case), i, target, rules)
    if key in _LRP_CACHE:
        return _LRP_CACHE[key]
    p: RefPass = case.run(i)
    s = structure(case)
    t = p.target(target)
    hidden = [h.to(DTYPE) for h in p.hidden]
    saved = []
    with torch.no_grad():
        for index, layer in enumerate(s.layers):  # the re-computation must reproduce the stock model
            f = layer_forward(layer, hidden[index], p.attentions[index].to(DTYPE), f"{case.name} layer {index}")
            torch.testing.assert_close(f["out"], hidden[index + 1], rtol=1e-5, atol=1e-5,
                                       msg=f"{case.name} layer {index}: re-computed output != stock hidden state")
            saved.append(f)
        head_inputs, x = [], s.final_norm(hidden[-1])[0]
        for lin, act in s.head:
            head_inputs.append(x)
            x = act(F.linear(x, *lin))
        torch.testing.assert_close(x, p.logits.detach().to(DTYPE), rtol=1e-5, atol=1e-5,
                                   msg=f"{case.name}: re-computed head != stock logits")

    relevance = torch.zeros_like(x)
    relevance[t] = 1.0
    for (lin, _), x_in in reversed(list(zip(s.head, head_inputs))):
        relevance = rules.linear(x_in, lin[0], relevance)
    r = torch.zeros_like(hidden[-1])
    r[case.readout] = relevance                                     # the read-out row; final norm: identity
    attention, sums = [None] * len(s.layers), [None] * len(s.layers)
    for index in reversed(range(len(s.layers))):
        r, attention[index], sums[index] = layer_relevance(s.layers[index], saved[index], r, rules)
    result = LRPResult(t, attention, r, sums)
    if case.modality == "image":
        result.pixels, result.patch_sum = _pixel_relevance(case, p, hidden[0], r, rules)
    _LRP_CACHE[key] = result
    return result


def embedding(case) -> tuple[nn.Conv2d, torch.Tensor, torch.Tensor]:
    """(patch convolution, prefix tokens (P, D), position term added to every token (N or 1, D))."""
    model, fam = case.reference, case.family
    if fam in EMBEDDINGS:
        return EMBEDDINGS[fam](model)
    if fam in ("hf-vit", "hf-beit"):
        emb = model.base_model.embeddings
        position = emb.position_embeddings if emb.position_embeddings is not None else torch.zeros(1, 1)
        return emb.patch_embeddings.projection, emb.cls_token[0], position[0]
    if fam in ("timm-vit", "timm-eva"):  # position embeddings that include the class token's (no_embed_class=False)
        return model.patch_embed.proj, model.cls_token[0], model.pos_embed[0]
    raise AssertionError(fam)


def _pixel_relevance(case, p: RefPass, first_input: torch.Tensor, r_first: torch.Tensor, rules: RefRules):
    conv, prefix, position = embedding(case)
    weight = conv.weight.detach().to(DTYPE)
    pixels = p.pixels.to(DTYPE)
    patches = F.conv2d(pixels[None], weight, conv.bias.detach().to(DTYPE), stride=conv.stride)[0]  # (D, gh, gw)
    d, gh, gw = patches.shape
    tokens = torch.cat([prefix.detach().to(DTYPE), patches.reshape(d, -1).T])
    position = position.detach().to(DTYPE).expand_as(tokens)
    torch.testing.assert_close(tokens + position, first_input, rtol=1e-5, atol=1e-5,
                               msg=f"{case.name}: re-computed embeddings != stock first hidden state")
    r_tokens, _ = rules.add(tokens, position, r_first)
    r_patches = r_tokens[prefix.shape[0]:].T.reshape(d, gh, gw)   # the prefix rows are dropped
    r_pixels = rel_patch_conv_zb(pixels, weight, conv.stride, r_patches)
    return r_pixels.sum(dim=0), float(r_patches.sum())


def ref_partial_lrp(case, i: int, target, rules: RefRules = CVPR2021) -> torch.Tensor:
    """Voita et al. as in CVPR 2021: the last attention map's LRP relevance, heads' positive parts averaged, in the
    read-out row."""
    return reference_lrp(case, i, target, rules).attention[-1].clamp(min=0).mean(dim=0)[case.readout]


def ref_transformer_attribution(case, i: int, target, start: int) -> torch.Tensor:
    """CVPR 2021: R = I; R <- R + mean_h (grad A * R_A)+ R for layers start..L-1; the read-out row of the full
    product."""
    ref = reference_lrp(case, i, target)
    grads = case.run(i).attention_grads(target)
    n = grads[0].shape[-1]
    relevance = torch.eye(n, dtype=DTYPE)
    for grad, r_a in list(zip(grads, ref.attention))[start:]:
        relevance = relevance + (grad.to(DTYPE) * r_a).clamp(min=0).mean(dim=0) @ relevance
    return relevance[case.readout]




# --- causal language models: one step at a time ---------------------------------------------------------------
def lm_step_pass(model: nn.Module, ids: list[int], keep_sink: bool = False) -> RefPass:
    """Step "predict the token after ``ids``" on the eager stock model, alone: the prefix only (no replication, no
    padding), read at its last position; ``logits`` are the log-probabilities there, so that the attention gradients
    are those of log p(target). Attention Grad-CAM averages over every position but the first (the attention sink)
    unless ``keep_sink``."""
    out = model(torch.tensor([ids]), output_attentions=True)
    n = len(ids)
    readout = torch.zeros(n, dtype=torch.float64)
    readout[-1] = 1.0
    content = torch.ones(n, dtype=torch.bool)
    content[0] = keep_sink
    return RefPass(logits=out.logits[0, -1].double().log_softmax(-1), graph_attentions=list(out.attentions),
                   hidden=[], content=content, readout=readout)


# --- AttnLRP and CP-LRP, explicit rules (Achtibat et al. ICML 2024; Ali et al. ICML 2022) ------------------------------
# Relevance is propagated as explicit relevance tensors (not gradients), one sample, from R = the target's logit at the
# target, on the same re-computed layers as reference_lrp, in DTYPE:
# - linear z = x W^T + b: epsilon rule (epsilon -> 0), R_in = x * ((R / z) W): the bias keeps its share;
# - residual z = a + b: R_a = a R / z, R_b = b R / z;
# - LayerNorm y = (x - mean) / std * w + b, std constant: a linear map M, R_in = x * M^T (R / y);
# - activations (and the head's tanh / ReLU): R_in = R_out;  layer scale: R passes;
# - A V (per head): AttnLRP R_A = 1/2 A * ((R_C / C) V^T), R_V = 1/2 V * (A^T (R_C / C)); CP-LRP: R_A = 0, R_V doubled;
# - softmax s = softmax(x): R_x = x * (R_s - s * sum_j R_s,j)  (the paper's Proposition for softmax);
# - Q K^T * scale: R_q, R_k = 1/2 each of the z-rule over the products;
# - images: the position-embedding residual, then the epsilon rule on the patch convolution (summed over channels).
def eps_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relevance: torch.Tensor):
    z = F.linear(x, weight, bias)
    return x * (safe_divide(relevance, z) @ weight)


def eps_add(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor):
    s = safe_divide(relevance, a + b)
    return a * s, b * s


def eps_layer_norm(norm: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.Identity):
        return relevance
    std = (x.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    s = safe_divide(relevance, norm(x)) * (norm.weight if norm.weight is not None else 1) / std
    return x * (s - s.mean(dim=-1, keepdim=True))


def softmax_rule(scores: torch.Tensor, probs: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    return scores * (relevance - probs * relevance.sum(dim=-1, keepdim=True))


def attention_rules(f: dict, r_ctx: torch.Tensor, value_share: float):
    """(R_q, R_k, R_v) from the relevance of the per-head context (H, N, d); the attention weights get the rest of the
    A V z-rule (AttnLRP: value_share 1/2; CP-LRP: 1, the weights constant)."""
    q, k, v, a = f["q"], f["k"], f["v"], f["A"]
    s = safe_divide(r_ctx, a @ v)
    r_a, r_v = (1 - value_share) * a * (s @ v.transpose(-1, -2)), value_share * v * (a.transpose(-1, -2) @ s)
    scale = q.shape[-1] ** -0.5
    scores = q @ k.transpose(-1, -2) * scale
    s = safe_divide(softmax_rule(scores, a, r_a), scores) * scale
    return 0.5 * q * (s @ k), 0.5 * k * (s.transpose(-1, -2) @ q), r_v


def _norm_of(norm) -> nn.Module:
    return norm if isinstance(norm, nn.Module) else nn.Identity()


def attnlrp_layer(layer: Layer, f: dict, r_out: torch.Tensor, value_share: float) -> torch.Tensor:
    ln1, ln2 = _norm_of(layer.ln1), _norm_of(layer.ln2)
    if layer.pre_ln:
        r_x1, r_mlp = eps_add(f["x1"], f["mlp_out"], r_out)
    else:
        r_x1, r_mlp = eps_add(f["x1"], f["mlp_out"], eps_layer_norm(ln2, f["x1"] + f["mlp_out"], r_out))
    r_m = eps_linear(f["m"], *layer.fc2, r_mlp)                       # layer scale passes
    r_h2 = eps_linear(f["h2"], *layer.fc1, r_m)                       # activation: identity
    r_x1 = r_x1 + (eps_layer_norm(ln2, f["x1"], r_h2) if layer.pre_ln else r_h2)
    if layer.pre_ln:
        r_x, r_attn = eps_add(f["x"], f["attn_out"], r_x1)
    else:
        r_x, r_attn = eps_add(f["x"], f["attn_out"], eps_layer_norm(ln1, f["x"] + f["attn_out"], r_x1))
    r_ctx = _heads(eps_linear(f["ctx"], *layer.o, r_attn), layer.heads)
    r_q, r_k, r_v = attention_rules(f, r_ctx, value_share)
    r_h = sum(eps_linear(f["h"], *p, _merge(r)) for p, r in ((layer.q, r_q), (layer.k, r_k), (layer.v, r_v)))
    return r_x + (eps_layer_norm(ln1, f["x"], r_h) if layer.pre_ln else r_h)


@dataclass
class InputRelevance:
    target: int
    logit: float
    tokens: torch.Tensor                # (N,) at the first layer's input, summed over features
    pixels: torch.Tensor | None = None  # (H, W) for images


def reference_attnlrp(case, i: int, target: int | None, value_share: float = 0.5) -> InputRelevance:
    """AttnLRP (value_share 1/2) or CP-LRP (value_share 1) for sample ``i`` of a token-read-out case."""
    p: RefPass = case.run(i)
    s = structure(case)
    t = p.target(target)
    hidden = [h.to(DTYPE) for h in p.hidden]
    with torch.no_grad():
        saved = [layer_forward(layer, hidden[index], p.attentions[index].to(DTYPE), f"{case.name} layer {index}")
                 for index, layer in enumerate(s.layers)]
        final = _norm_of(s.final_norm)
        x = final(hidden[-1])[case.readout]
        head_inputs = []
        for lin, act in s.head:
            head_inputs.append(x)
            x = act(F.linear(x, *lin))
        torch.testing.assert_close(x, p.logits.detach().to(DTYPE), rtol=1e-5, atol=1e-5)
        relevance = torch.zeros_like(x)
        relevance[t] = x[t]
        for (lin, _), x_in in reversed(list(zip(s.head, head_inputs))):
            relevance = eps_linear(x_in, *lin, relevance)               # the head's activations: identity
        r = torch.zeros_like(hidden[-1])
        r[case.readout] = relevance
        r = eps_layer_norm(final, hidden[-1], r)
        for index in reversed(range(len(s.layers))):
            r = attnlrp_layer(s.layers[index], saved[index], r, value_share)
        result = InputRelevance(t, float(x[t]), r.sum(dim=-1))
        if case.modality == "image":
            conv, prefix, position = embedding(case)
            result.pixels = rules_at_pixels(p.pixels, conv, prefix, position, r)
    return result


def rules_at_pixels(pixels: torch.Tensor, conv: nn.Conv2d, prefix: torch.Tensor, position: torch.Tensor,
                    r_first: torch.Tensor, pre_norm: nn.Module | None = None) -> torch.Tensor:
    """(H, W): the rules' relevance at the pixels (3, H, W) from ``r_first`` (N, D), that of the first layer's input
    [prefix tokens (P, D); patches] + position (N or 1, D): back through a LayerNorm before the first layer
    (``pre_norm``, CLIP's), the position-embedding residual, and the epsilon rule on the patch convolution (its
    output with its bias), summed over the colour channels."""
    weight = conv.weight.detach().to(DTYPE)
    bias = None if conv.bias is None else conv.bias.detach().to(DTYPE)
    pixels = pixels.to(DTYPE)[None]
    patches = F.conv2d(pixels, weight, bias, stride=conv.stride)[0]
    d, gh, gw = patches.shape
    tokens = torch.cat([prefix.detach().to(DTYPE).reshape(-1, d), patches.reshape(d, -1).T])
    position = position.detach().to(DTYPE).expand_as(tokens)
    if pre_norm is not None:
        r_first = eps_layer_norm(pre_norm, tokens + position, r_first)
    r_tokens, _ = eps_add(tokens, position, r_first)
    r_patches = r_tokens[tokens.shape[0] - gh * gw:].T.reshape(1, d, gh, gw)
    conv_back = torch.nn.grad.conv2d_input(pixels.shape, weight, safe_divide(r_patches, patches[None]),
                                           stride=conv.stride)
    return (pixels * conv_back)[0].sum(dim=0)


def assert_pairs_match_rules_reference(explainer, image, texts: list[str], method: str, reference: Callable) -> None:
    """Each (image, text) pair's explanation by ``method`` (attnlrp or cp_lrp) against ``reference(text)`` -> (pixel
    relevance, token relevance) of that pair alone, with relevance in both towers; every hook released after."""
    from conftest import hook_counts

    before = hook_counts(explainer.model)
    explanations = explainer.explain(image=image, text=texts, method=method)
    assert hook_counts(explainer.model) == before
    for exp, text in zip(explanations, texts):
        heatmap, text_rel = reference(text)
        assert_scores(exp.heatmap, heatmap, f"{method} {text!r} pixels", rtol=1e-5, atol_rel=1e-5)
        assert_scores(exp.scores, text_rel, f"{method} {text!r} tokens", rtol=1e-5, atol_rel=1e-5)
        assert float(np.abs(exp.heatmap).max()) > 0 and float(np.abs(exp.scores).max()) > 0


# --- the path methods (gradient x input, integrated gradients) by hand, from a stream's first layer --------------------
def from_first_layer(block: nn.Module, run: Callable[[int], torch.Tensor]
                     ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(f, x): ``x`` (N, D) the input of ``block`` (a stream's first layer) when ``run(1)`` runs the model on one
    sample, and f(points (K, N, D)) -> (K,) the objective ``run(K)`` gives for the sample repeated K times with those
    points in place of that input (each point on its own row of the batch)."""
    seen = []
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            run(1)
    finally:
        handle.remove()

    def f(points: torch.Tensor) -> torch.Tensor:
        handle = block.register_forward_pre_hook(lambda module, args: (points.to(args[0].dtype), *args[1:]))
        try:
            return run(points.shape[0])
        finally:
            handle.remove()

    return f, seen[0][0]


def gradient_x_input_by_hand(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x * df/dx summed over features (N,)."""
    point = x[None].clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(point).sum(), point)
    return (x * grad[0]).sum(-1)


def path_integral(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x0: torch.Tensor, points: int = 400,
                  chunk: int = 100) -> torch.Tensor:
    """Integrated gradients by hand: (x - x0) . the mean gradient of f at the midpoints of ``points`` equal steps of
    the straight path from x0 to x, summed over features (N,)."""
    alphas = (torch.arange(points, dtype=x.dtype) + 0.5) / points
    total = torch.zeros_like(x)
    for part in alphas.split(chunk):
        line = (x0 + part[:, None, None] * (x - x0)).requires_grad_()
        total += torch.autograd.grad(f(line).sum(), line)[0].sum(0)
    return ((x - x0) * total / points).sum(-1)


def by_path_methods(explainer, **inputs) -> list[tuple]:
    """(integrated gradients with 64 steps in one batch, gradient x input) of every item the inputs give."""
    return list(zip(explainer.explain(**inputs, method="integrated_gradients", steps=64, internal_batch_size=64),
                    explainer.explain(**inputs, method="gradient_x_input")))


def assert_path_methods_by_hand(ig_scores, gxi_scores, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                x0: torch.Tensor, what: str, kept: slice = slice(None)) -> None:
    """Integrated gradients from ``x0`` against a 400-point path integral of ``f``, and gradient x input against
    autograd, on the tokens ``kept`` of the first layer's input ``x`` (the scores are per kept token)."""
    for actual, expected, name in ((ig_scores, path_integral(f, x, x0)[kept], "integrated_gradients"),
                                   (gxi_scores, gradient_x_input_by_hand(f, x)[kept], "gradient_x_input")):
        torch.testing.assert_close(torch.from_numpy(np.asarray(actual, dtype=np.float64)), expected, rtol=1e-3,
                                   atol=1e-3 * float(expected.abs().max()), msg=lambda m: f"{what} {name}: {m}")


def completeness_gap(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x0: torch.Tensor, total: float,
                     steps: int) -> tuple[float, float, float]:
    """(sum of the relevance - (f(x) - f(x0)), captum's convergence delta on f with the same steps, f(x) - f(x0))."""
    from captum.attr import IntegratedGradients

    with torch.no_grad():
        change = float(f(x[None]) - f(x0[None]))
    _, delta = IntegratedGradients(f).attribute(x[None], baselines=x0[None], n_steps=steps,
                                                return_convergence_delta=True)
    return total - change, float(delta), change


# --- the LRP rules' per-pixel maps of image-text models -------------------------------------------------------------
def rules_at_pixels_by_autograd(adapter, method: str, conv: nn.Conv2d, pixels: torch.Tensor,
                                objective: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """What a rule method's per-pixel map must be, by plain autograd under the rules (``method``: attnlrp or cp_lrp,
    applied as the engine applies them, to the adapter's declared stacks and cross-attention projections):
    (pixels x the gradient of ``objective(pixels)`` (B,) at the pixels, summed over the colour channels (B, H, W);
    the patch convolution's output less its bias x the gradient there, summed over channels (B, gh, gw)), the second
    being the first's per-patch sums by the conv's epsilon rule with its bias zeroed."""
    from toolkit.core.lrp_rules import ATTNLRP, CP_LRP

    rules = {"attnlrp": ATTNLRP, "cp_lrp": CP_LRP}[method]
    x = pixels.detach().clone().requires_grad_()
    outputs = []
    handle = conv.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        with rules.applied(adapter.model, *adapter.streams().values(), *adapter.cross_stacks().values()):
            value = objective(x)
    finally:
        handle.remove()
    grad_pixels, grad_patches = torch.autograd.grad(value.sum(), [x, outputs[0]])
    bias = 0.0 if conv.bias is None else conv.bias.detach()[:, None, None]
    return (x * grad_pixels).sum(1).detach(), ((outputs[0] - bias) * grad_patches).sum(1).detach()


def patch_sums(heatmap: np.ndarray, stride: tuple[int, int]) -> torch.Tensor:
    """A per-pixel map (H, W) summed over each patch (``stride`` pixels on a side)."""
    area = stride[0] * stride[1]
    return F.avg_pool2d(torch.as_tensor(np.asarray(heatmap, np.float64))[None], tuple(stride))[0] * area
