"""LRP as a modified backward pass of a stock model: AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise
Relevance Propagation for Transformers", ICML 2024) and CP-LRP (Ali et al., "XAI for Transformers: Better
Explanations through Conservative Propagation", ICML 2022).

In the gradient x input convention the relevance of a tensor z is z * df/dz, so an LRP rule for an operation is a
replacement of its gradient such that relevance in = input * (replaced gradient). The rules, from the papers:

- linear maps (Linear, Conv1D, convolutions, residual additions, mean pooling, rotary embeddings, layer scale): the
  epsilon rule with epsilon -> 0, which is their plain gradient. A bias keeps its share (bias * gradient), so the
  input relevance sums to the target's logit only up to the bias terms;
- LayerNorm and RMSNorm with the standard deviation (root mean square) held constant: then they are linear maps;
- element-wise activations (GELU, SiLU, tanh...): the identity rule R_in = R_out, i.e. the gradient times out / in.
  Activation modules are found by their type anywhere in the model; an activation called as a function between
  two linear layers of an MLP or of the classification head (XLM's ReLU, RoBERTa's tanh) gets the same rule over
  the span between the two layers' output and input, when no module rule ran there and the shapes match;
- the product of a gated MLP (GLU, SwiGLU): the uniform rule, half the relevance to each factor (gradient x 1/2);
- softmax: AttnLRP's rule R_in_i = x_i (R_i - s_i sum_j R_j), with R_j = s_j g_j, equals x_i sum_j g_j ds_j/dx_i:
  the plain softmax gradient, which is kept. (Like a bias, the shift invariance of softmax absorbs relevance: the
  rule does not conserve exactly, as the paper says.);
- the products Q K^T and A V: the uniform rule, half to each operand. Relevance into V gets 1/2, into the attention
  weights 1/2 and from there into Q and into K 1/4 each: every step between the projections and the products is
  linear (scaling, rotary embeddings, head split, the grouped-query repeat) or keeps its gradient (softmax), so the
  halvings are applied as gradient scalings at the outputs of the query, key and value projections. A projection
  whose output fuses several roles (timm's and GPT-2's [q | k | v], GPT-2's cross-attention [k | v], declared as
  the same module for key and value) gets each part's factor. torch's MultiheadAttention (open_clip) projects
  inside one call, with no module at the projections' outputs: there the value factor is applied to the gradient
  of its inputs, and query_key / value to the gradient the softmax passes back from the attention weights that
  multiplied V (returned with ``need_weights=True, average_attn_weights=False`` as a view of them), which reaches
  only Q and K: the same gradient everywhere outside the call, and the same at the attention weights. An
  attention-pooling head (SigLIP's: a learned probe as the only query) is declared as a stack's ``pool`` and passed as
  a layer; the probe's share of Q K^T stays with it, as a bias's does. A MultiheadAttention that nothing declares is
  refused (:func:`undeclared_attention`).

CP-LRP holds the attention weights constant: no relevance through Q and K (factor 0), and A V is linear in V
(factor 1); the other rules are the same.

Everything is applied through forward hooks on the stock modules, removed on leaving :meth:`RuleSet.applied`, also
when the forward or backward pass raised. Forward values are unchanged (bit for bit); only gradients differ.
"""
from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from ..errors import FamilyError
from .capture import first_tensor, with_first_input
from .spec import LayerSpec, ModelSpec

_ACTIVATION_MODULES = ("torch.nn.modules.activation", "transformers.activations", "timm.layers.activations",
                       "timm.layers.activations_me")
_NOT_ELEMENTWISE = (nn.Softmax, nn.Softmax2d, nn.LogSoftmax, nn.Softmin, nn.MultiheadAttention, nn.GLU)
_SCALE_NORM = re.compile(r"(RMSNorm|RmsNorm|L2Norm)$")  # output = input * a per-row factor (and a weight)


def is_activation(module: nn.Module) -> bool:
    """An element-wise activation module of PyTorch, transformers or timm."""
    return type(module).__module__ in _ACTIVATION_MODULES and not isinstance(module, _NOT_ELEMENTWISE)


def is_scale_norm(module: nn.Module) -> bool:
    """RMSNorm-like: each row multiplied by a factor (1 / its root mean square) and an element-wise weight."""
    return isinstance(module, getattr(nn, "RMSNorm", ())) or bool(_SCALE_NORM.search(type(module).__name__))


def unknown_norm(module: nn.Module) -> bool:
    """A normalisation layer (by its class name) that neither the LayerNorm nor the RMSNorm rule covers."""
    name = type(module).__name__
    return ("norm" in name.lower() and not isinstance(module, (nn.LayerNorm, nn.Identity)) and not is_scale_norm(module)
            and next(module.children(), None) is None)


# --- gradient replacements (forward values unchanged) ----------------------------------------------------------------
class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
        ctx.factor = factor
        return x.clone()  # a copy: the model may modify it in place (XLM)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    """``output``'s value; its gradient reaches ``input`` as gradient * output / input (R_in = R_out element-wise),
    and nothing reaches ``output``'s own graph."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        ratio = output / inputs
        ctx.save_for_backward(torch.where(inputs == 0, torch.zeros_like(ratio), ratio))
        return output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _LayerNormConstantStd(torch.autograd.Function):
    """LayerNorm's output; its gradient is that of (x - mean(x)) / std * weight with std held constant."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, output: torch.Tensor, weight: torch.Tensor | None, dims: tuple[int, ...],
                eps: float) -> torch.Tensor:
        std = (inputs.float().var(dim=dims, unbiased=False, keepdim=True) + eps).sqrt()
        ctx.save_for_backward(std, weight)
        ctx.dims = dims
        return output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        std, weight = ctx.saved_tensors
        scaled = (grad if weight is None else grad * weight).float() / std
        return (scaled - scaled.mean(dim=ctx.dims, keepdim=True)).to(grad.dtype), None, None, None, None


def scale_gradient(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    return _ScaleGradient.apply(x, factor)


def _replace_output(output, replace):
    """The module's output with its main tensor (the first of a tuple) replaced."""
    if isinstance(output, tuple):
        return (replace(output[0]), *output[1:])
    return replace(output)


def _main(output):
    return output[0] if isinstance(output, tuple) else output


# --- the rule set --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleSet:
    """Gradient factors at the query / key and value projections' outputs; the other rules are shared."""

    name: str
    query_key: float
    value: float

    def refusal(self, spec: ModelSpec, model: nn.Module) -> str | None:
        """Why these rules cannot pass some part of the model (checked before any work), or None."""
        if spec.attnlrp_blocker:
            return spec.attnlrp_blocker
        for name, layer in _ruled_layers(spec):
            if layer.qkv is None and None in (layer.query, layer.key, layer.value) and not _projects_inside(layer):
                return (f"{name}'s entry declares no qkv (or query, key and value) projection, at whose output "
                        "the attention rules are applied")
            if layer.fc1 is None or layer.fc2 is None:
                return f"{name}'s entry declares no fc1 and fc2, between which the MLP's activation lies"
            mlp = _common_parent(spec, model, layer.fc1, layer.fc2)
            if layer.gated_mlp and not any(is_activation(m) for m in mlp.modules()):
                return (f"{name}'s gated MLP ({type(mlp).__name__}) calls its activation as a function, not as "
                        "a module: hooks cannot give it the identity rule")
        for path, module in model.named_modules():
            if unknown_norm(module):
                return (f"{path} is a {type(module).__name__}, which neither the LayerNorm nor the RMSNorm rule "
                        "covers")
        return None

    @contextlib.contextmanager
    def applied(self, model: nn.Module, *specs: ModelSpec) -> Iterator[None]:
        """The rules, as forward hooks on ``model``'s modules, for the block; every hook removed on exit. ``specs``:
        the declared stacks (one for a classifier; an image-text model's towers each have one). On a normal exit, a
        declared projection that never ran (its rule never applied) raises a FamilyError."""
        handles, fired = [], Counter()
        layers = [layer for spec in specs for _, layer in _ruled_layers(spec)]
        heads = [spec.head for spec in specs]
        try:
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    handles.append(module.register_forward_hook(_counted(_layer_norm_rule, fired), with_kwargs=True))
                elif is_scale_norm(module) or is_activation(module):
                    handles.append(module.register_forward_hook(_counted(_identity_rule, fired), with_kwargs=True))
            # shared layers (ALBERT runs one layer's modules at every depth) are hooked once: the hooks act per call
            spans = {id(layer.fc2): (layer.fc1, layer.fc2) for layer in layers
                     if not layer.gated_mlp and layer.fc1 is not None}
            spans.update({id(second): (first, second) for head in heads for first, second in zip(head, head[1:])})
            for first, second in spans.values():
                handles += _identity_span(first, second, fired)
            projections = {id(module): (module, factor) for layer in layers for module, factor in self._projections(layer)}
            for module, factor in projections.values():
                handles.append(module.register_forward_hook(_scaling(factor, fired)))
            inside = {id(layer.attention): layer.attention for layer in layers if _projects_inside(layer)}
            for module in inside.values():
                handles += _multihead_rules(self, module, fired)
            gated = {id(layer.fc2): layer.fc2 for layer in layers if layer.gated_mlp}
            for module in gated.values():
                handles.append(module.register_forward_pre_hook(_halving_input(fired), with_kwargs=True))
            yield
        finally:
            for handle in handles:
                handle.remove()
        ruled = [*(m for m, _ in projections.values()), *gated.values(), *inside.values()]
        silent = [type(m).__name__ for m in ruled if not fired[id(m)]]
        if silent:
            raise FamilyError(f"The {self.name} rules are applied at the outputs of the declared projections, but "
                              f"{', '.join(sorted(set(silent)))} never ran in the forward pass (the model computes "
                              "them another way, or a MultiheadAttention returned no per-head weights): these rules "
                              "cannot explain it.")

    def _projections(self, layer: LayerSpec) -> list[tuple[nn.Module, torch.Tensor | float]]:
        if layer.qkv is not None:
            return [self._fused(layer.qkv, "qkv")]
        if _projects_inside(layer):
            return []
        if layer.key is layer.value:  # one module gives [key | value] (GPT-2's cross-attention c_attn)
            return [(layer.query, self.query_key), self._fused(layer.value, "kv")]
        return [(layer.query, self.query_key), (layer.key, self.query_key), (layer.value, self.value)]

    def _fused(self, module: nn.Module, roles: str) -> tuple[nn.Module, torch.Tensor]:
        """A projection whose output is the roles' equal parts in order ("qkv" or "kv"), each part with its factor."""
        width = _main_width(module) // len(roles)
        factors = [self.value if role == "v" else self.query_key for role in roles for _ in range(width)]
        return module, torch.tensor(factors)


def _ruled_layers(spec: ModelSpec) -> list[tuple[str, LayerSpec]]:
    """(name for messages, layer) of every part the rules pass as a layer: the declared layers and a pooling head."""
    named = [(f"layer {index}", layer) for index, layer in enumerate(spec.layers)]
    return named + ([("the pooling head", spec.pool)] if spec.pool is not None else [])


def undeclared_attention(model: nn.Module, *specs: ModelSpec) -> str | None:
    """Why the rules cannot pass a torch MultiheadAttention that no declared layer or pooling head names (they would
    leave its attention products with their plain gradients), or None."""
    declared = {id(layer.attention) for spec in specs for _, layer in _ruled_layers(spec)}
    path = next((path for path, module in model.named_modules()
                 if isinstance(module, nn.MultiheadAttention) and id(module) not in declared), None)
    return None if path is None else (f"{path} is a torch MultiheadAttention that no declared layer or pool names, so "
                                      "the attention rules would not reach it")


def _projects_inside(layer: LayerSpec) -> bool:
    """A torch MultiheadAttention with no declared projections: it projects query, key and value inside one call."""
    return layer.qkv is None and layer.query is None and isinstance(layer.attention, nn.MultiheadAttention)


def _main_width(module: nn.Module) -> int:
    """Output features of a Linear, or of transformers' Conv1D (GPT-2)."""
    return getattr(module, "out_features", None) or module.nf


def _common_parent(spec: ModelSpec, model: nn.Module, first: nn.Module, second: nn.Module) -> nn.Module:
    """The innermost module holding both declared parts (an MLP, or the layer)."""
    a, b = spec.paths.get(id(first), "").split("."), spec.paths.get(id(second), "").split(".")
    common = []
    for x, y in zip(a[:-1], b[:-1]):
        if x != y:
            break
        common.append(x)
    return model.get_submodule(".".join(common))


def _layer_norm_rule(module: nn.LayerNorm, args, kwargs, output):
    inputs = first_tensor(args, kwargs)
    if inputs is None or not torch.is_grad_enabled():
        return None
    dims = tuple(range(-len(module.normalized_shape), 0))
    weight = None if module.weight is None else module.weight.detach()
    return _LayerNormConstantStd.apply(inputs, output, weight, dims, module.eps)


def _identity_rule(module: nn.Module, args, kwargs, output):
    inputs = first_tensor(args, kwargs)
    if inputs is None or not torch.is_grad_enabled() or not torch.is_tensor(output) or output.shape != inputs.shape:
        return None
    return _IdentityRule.apply(inputs, output)


RULES_RUN = "module rules"  # key of ``fired`` counting the norm and activation rules applied


def _counted(rule, fired: Counter):
    def hook(module, args, kwargs, output):
        fired[RULES_RUN] += 1
        return rule(module, args, kwargs, output)

    return hook


def _identity_span(first: nn.Module, second: nn.Module, fired: Counter) -> list:
    """The identity rule from ``first``'s output to ``second``'s input, for an element-wise function called between
    them that no module rule saw (none ran in between, and the shapes match)."""
    pending = []

    def after_first(module, args, output):
        pending[:] = [(_main(output), fired[RULES_RUN])]

    def before_second(module, args, kwargs):
        if not pending:
            return None
        (produced, count), = pending
        pending.clear()
        if count != fired[RULES_RUN] or not torch.is_grad_enabled():
            return None
        return with_first_input(args, kwargs, lambda value: _IdentityRule.apply(produced, value)
                                if value.shape == produced.shape and value is not produced else None)

    return [first.register_forward_hook(after_first), second.register_forward_pre_hook(before_second, with_kwargs=True)]


def _scaling(factor: torch.Tensor | float, fired: Counter):
    def hook(module, args, output):
        fired[id(module)] += 1
        if not torch.is_grad_enabled():
            return None
        scale = factor.to(_main(output).device, _main(output).dtype) if torch.is_tensor(factor) else factor
        return _replace_output(output, lambda t: scale_gradient(t, scale))

    return hook


def _multihead_rules(rules: RuleSet, module: nn.MultiheadAttention, fired: Counter) -> list:
    """torch's MultiheadAttention: the value factor on the gradient of its query, key and value inputs (each tensor
    once, so that a self-attention's three stay one: the same fused projection runs), and query_key / value on what
    the softmax passes back from the weights that multiplied V (the base of the per-head weights it returns)."""
    def scale_inputs(module, args, kwargs):
        if not torch.is_grad_enabled():
            return None
        scaled = {}

        def scale(value):
            if not (torch.is_tensor(value) and value.is_floating_point()):
                return value
            if id(value) not in scaled:
                scaled[id(value)] = scale_gradient(value, rules.value)
            return scaled[id(value)]

        return ((*map(scale, args[:3]), *args[3:]),
                {key: scale(value) if key in ("query", "key", "value") else value for key, value in kwargs.items()})

    def scale_softmax(module, args, output):
        weights = output[1] if isinstance(output, tuple) else None
        probs = getattr(weights, "_base", None)
        if not torch.is_grad_enabled() or probs is None or probs.grad_fn is None:
            return
        fired[id(module)] += 1
        ratio = rules.query_key / rules.value
        probs.grad_fn.register_hook(lambda grads_in, _: tuple(None if g is None else g * ratio for g in grads_in))

    return [module.register_forward_pre_hook(scale_inputs, with_kwargs=True),
            module.register_forward_hook(scale_softmax)]


def _halving_input(fired: Counter):
    """The gated MLP's product (the input of its down projection): half the relevance to each factor."""
    def hook(module, args, kwargs):
        fired[id(module)] += 1
        if not torch.is_grad_enabled() or not args or not torch.is_tensor(args[0]):
            return None
        return (scale_gradient(args[0], 0.5), *args[1:]), kwargs

    return hook


ATTNLRP = RuleSet("attnlrp", query_key=0.25, value=0.5)
CP_LRP = RuleSet("cp_lrp", query_key=0.0, value=1.0)
