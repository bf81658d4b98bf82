"""Decoder-only language models (GPT-2 and the Llama layout with Llama, Qwen2 and Mistral model types) explained
through the Explainer: next token, teacher-forced and generated continuations, every step checked against the
per-step references of tests/references.py on the stock model's own attention maps and autograd."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

from references import REFERENCES, assert_scores, lm_step_pass
from toolkit import Explainer
from toolkit.errors import InputError, UnsupportedModelError
from toolkit.views import head_view, model_view

WORDS = "<bos> <eos> <unk> the a cat dog sat on mat ran to park and big small red".split()
PROMPTS = ["the cat sat on", "a dog ran", "the big red dog ran to the"]
METHODS = list(REFERENCES)


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that adds no special tokens (as GPT-2's)."""
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def _llama_kwargs() -> dict:
    return dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                intermediate_size=48, vocab_size=len(WORDS), max_position_embeddings=32, initializer_range=0.2,
                bos_token_id=0, eos_token_id=1)


MAKERS = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(WORDS), n_positions=32,
                                               initializer_range=0.2, bos_token_id=0, eos_token_id=1)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**_llama_kwargs())),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**_llama_kwargs())),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**_llama_kwargs())),
}


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MAKERS[name]().eval()


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    return reference


def check_steps(explanation, reference, prompt_ids: list[int], method: str, keep_sink: bool = False) -> None:
    """Every step's relevance (over the prompt and the earlier continuation) equals its reference, computed on the
    prefix alone."""
    sequence = prompt_ids + [step.token_id for step in explanation.steps]
    for t, step in enumerate(explanation.steps):
        prefix = sequence[:len(prompt_ids) + t]
        p = lm_step_pass(reference, prefix, keep_sink)
        expected = REFERENCES[method](p, step.token_id, 0)
        assert_scores(step.text_scores, expected, f"{method}, step {t} ({step.token!r})")
        assert step.log_prob == pytest.approx(float(p.logits[step.token_id].detach()), abs=1e-4)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("method", METHODS)
def test_continuation_steps_equal_per_step_references(name, method, tokenizer):
    model = make(name)
    explainer, reference = Explainer(model, tokenizer), eager_copy(model)
    continuations = ["the mat", "to the park and", "park"]
    explanations = explainer.explain(PROMPTS, method=method, continuation=continuations)
    assert [e.caption for e in explanations] == continuations
    for prompt, explanation in zip(PROMPTS, explanations):
        prompt_ids = tokenizer(prompt)["input_ids"]
        assert len(explanation.steps) == len(tokenizer(continuation := explanation.caption)["input_ids"]) > 0, continuation
        check_steps(explanation, reference, prompt_ids, method)
        means = np.mean([step.text_scores[:len(prompt_ids)] for step in explanation.steps], axis=0)
        np.testing.assert_allclose(explanation.scores, means, rtol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("method", METHODS)
def test_next_token_predicted_and_given(name, method, tokenizer):
    model = make(name)
    explainer, reference = Explainer(model, tokenizer), eager_copy(model)
    predicted = explainer.explain(PROMPTS, method=method)
    given = explainer.explain(PROMPTS, method=method, target=["mat", 7, "park"])
    for prompt, explanation, target in zip(PROMPTS, given, [WORDS.index("mat"), 7, WORDS.index("park")]):
        assert explanation.target == target and len(explanation.steps) == 1
    for prompt, explanation in zip(PROMPTS, predicted):
        ids = tokenizer(prompt)["input_ids"]
        p = lm_step_pass(reference, ids)
        assert explanation.target == int(p.logits.argmax())
        assert_scores(explanation.scores, REFERENCES[method](p, None, 0), method)
    for prompt, explanation in zip(PROMPTS, given):
        check_steps(explanation, reference, tokenizer(prompt)["input_ids"], method)


@pytest.mark.parametrize("method", ["generic", "attention_gradcam"])
def test_generated_continuation_is_greedy_and_explained(method, tokenizer):
    model = make("llama")
    explainer, reference = Explainer(model, tokenizer), eager_copy(model)
    explanation = explainer.explain(PROMPTS[0], method=method, max_new_tokens=4)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False, pad_token_id=1)[0, len(ids):]
    greedy = greedy.tolist()
    expected = greedy[:greedy.index(1)] if 1 in greedy[1:] else greedy
    assert [step.token_id for step in explanation.steps] == expected
    check_steps(explanation, reference, ids, method)
    assert explanation.probability == pytest.approx(np.exp(sum(s.log_prob for s in explanation.steps)), rel=1e-5)


def test_batched_equals_per_sample_in_one_forward_and_one_backward(tokenizer, monkeypatch):
    model = make("qwen2")
    explainer = Explainer(model, tokenizer)
    forwards = []
    handle = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    backwards = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or grad(*a, **k))
    together = explainer.explain(PROMPTS, method="generic", continuation="the park")
    handle.remove()
    assert (len(forwards), len(backwards)) == (1, 1)
    for prompt, batched in zip(PROMPTS, together):
        alone = explainer.explain(prompt, method="generic", continuation="the park")
        for a, b in zip(alone.steps, batched.steps):
            np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-5, atol=1e-6)
    chunked = explainer.explain(PROMPTS, method="generic", continuation="the park", batch_size=2)
    for a, b in zip(chunked, together):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "mistral"])
def test_hooks_released_and_attention_restored_also_on_error(name, tokenizer):
    model = make(name)
    assert model.config._attn_implementation == "sdpa"
    explainer = Explainer(model, tokenizer)
    explainer.explain(PROMPTS[0], method="generic", continuation="the mat")
    with pytest.raises(InputError):
        explainer.explain(PROMPTS[0], method="rollout", target="the mat")  # two tokens: not a target
    assert model.config._attn_implementation == "sdpa"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_lrp_refused_with_the_declared_reason(tokenizer):
    explainer = Explainer(make("llama"), tokenizer)
    assert explainer.applicable_methods() == sorted(METHODS + ["attnlrp", "attnlrp_routed", "cp_lrp", "generic_attnlrp",
                                                               "gradient_x_input", "integrated_gradients"])
    for method in ("lrp", "partial_lrp", "transformer_attribution"):
        with pytest.raises(UnsupportedModelError, match="RMSNorm.*gated MLP.*rotary"):
            explainer.explain(PROMPTS[0], method=method)
    with pytest.raises(UnsupportedModelError, match="use attnlrp, cp_lrp"):
        Explainer(make("gpt2"), tokenizer).explain(PROMPTS[0], method="lrp")


def test_input_errors(tokenizer):
    explainer = Explainer(make("gpt2"), tokenizer)
    with pytest.raises(InputError, match="one of target, continuation and max_new_tokens"):
        explainer.explain(PROMPTS[0], target="mat", continuation="the mat")
    with pytest.raises(InputError, match="model reads 32 positions"):
        explainer.explain(PROMPTS[0], continuation=" ".join(["the"] * 40))
    with pytest.raises(InputError, match="Unexpected keywords"):
        explainer.explain(PROMPTS[0], caption="the mat")
    with pytest.raises(InputError, match="outside the vocabulary"):
        explainer.explain([3, 5, 999])
    assert [token for token, _ in explainer.predict(PROMPTS[0], top_k=2)][0] == explainer.explain(PROMPTS[0]).label


def test_attention_sink_is_left_out_of_the_display_unless_kept(tokenizer):
    """The first position is marked special: word scores and the colour scale cover the other tokens; its raw
    relevance stays in ``scores``. keep_sink=True counts it as content (Grad-CAM then averages over it too)."""
    model = make("llama")
    explainer, reference = Explainer(model, tokenizer), eager_copy(model)
    default = explainer.explain(PROMPTS[2], method="rollout")
    kept = explainer.explain(PROMPTS[2], method="rollout", keep_sink=True)
    np.testing.assert_array_equal(default.scores, kept.scores)
    assert default.special_tokens[0] and not kept.special_tokens[1:].any() and not kept.special_tokens[0]
    np.testing.assert_allclose(default.word_scores, default.scores[1:])
    np.testing.assert_allclose(kept.word_scores, kept.scores)
    explanation = explainer.explain(PROMPTS[2], method="attention_gradcam", continuation="park", keep_sink=True)
    check_steps(explanation, reference, tokenizer(PROMPTS[2])["input_ids"], "attention_gradcam", keep_sink=True)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_head_and_model_views(name, tokenizer):
    """The views read the stock model's attentions (GQA heads repeated to every query head), causal: no weight
    above the diagonal; eager attention switched for the call and restored."""
    model = make(name)
    ids = tokenizer(PROMPTS[2])["input_ids"]
    with torch.no_grad():
        stock = eager_copy(model)(torch.tensor([ids]), output_attentions=True).attentions
    for view in (head_view(model, tokenizer, PROMPTS[2]), model_view(model, tokenizer, PROMPTS[2])):
        stack = view._payload["stacks"][0]
        assert stack["queryTokens"] == PROMPTS[2].split()
        assert (stack["layers"], stack["heads"]) == (len(stock), stock[0].shape[1])
        assert "<svg" in view.svg and len(view.html) > 1000
    assert model.config._attn_implementation == "sdpa"


def test_saved_and_loaded_with_its_steps(tokenizer, tmp_path):
    from toolkit.explanation import Explanation

    explanation = Explainer(make("gpt2"), tokenizer).explain(PROMPTS[2], method="rollout", continuation="park and")
    loaded = Explanation.load(explanation.save(tmp_path / "lm.npz"))
    assert [s.token for s in loaded.steps] == ["park", "and"] and loaded.caption == "park and"
    np.testing.assert_array_equal(loaded.steps[1].text_scores, explanation.steps[1].text_scores)
    np.testing.assert_array_equal(loaded.special_tokens, explanation.special_tokens)
    assert "dog" in explanation.to_html()
