"""Faithfulness evaluation: curves from 0% removed, AUC and AOPC against hand computations on a toy model, an oracle
relevance beating its reverse, batching that changes nothing, models left as they were, paired comparisons."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TEXTS, make_bert, make_timm_vit
from toolkit import Explainer, zoo
from toolkit.errors import InputError
from toolkit.evaluation import metrics
from toolkit.evaluation.faithfulness import (Evaluation, Item, Probe, Row, Scorer, compare, drop_tokens, evaluate,
                                             faithfulness_of, family_of, fused_attention, patch_relevance,
                                             probe_results)

WEIGHTS = np.array([0.0, 5.0, 1.0, 3.0, 0.5, 4.0, 2.0, 0.25, 1.5, 0.0])  # token 0 and 9 stand for [CLS], [SEP]


class SumScorer(Scorer):
    """A toy model: the score of a row is the sum of the weights of the token ids it still holds (ids index WEIGHTS;
    padding, id -1, weighs nothing)."""

    def __init__(self):
        super().__init__(adapter=None)

    device = torch.device("cpu")
    pad_id = -1

    def scores(self, rows, targets):
        ids, mask = self.tokens(rows).values()
        return (torch.as_tensor(WEIGHTS)[ids.clamp(min=0)] * mask).sum(1)


def toy_probe(relevance: np.ndarray, protected: np.ndarray | None = None, mask_id: int | None = None) -> Probe:
    return Probe(0, None, np.asarray(relevance, np.float64), protected, Row({"input_ids": torch.arange(10)}, 0),
                 drop_tokens(mask_id))


def run_toy(probe: Probe, **options):
    scorer = SumScorer()
    scorer.adapter = type("Toy", (), {"model": torch.nn.Linear(1, 1)})()
    return probe_results([probe], scorer, **options)[0]


def test_auc_of_a_toy_model_equals_the_hand_computation():
    """Ten tokens, one removed per 10% step: MoRF removes the weights in decreasing order, LeRF in increasing order
    (ties in position order); the scores are the sums left, the AUC their trapezoid area over 0..0.9."""
    result = run_toy(toy_probe(WEIGHTS))
    total = WEIGHTS.sum()
    for order, ranked in (("positive", np.sort(WEIGHTS)[::-1]), ("negative", np.sort(WEIGHTS))):
        curve = result.curves[order]
        expected = total - np.concatenate([[0.0], np.cumsum(ranked)[:9]])
        np.testing.assert_allclose(curve.fractions, np.arange(10) / 10)
        np.testing.assert_allclose(curve.scores, expected)
        hand = sum(0.1 * (expected[i] + expected[i + 1]) / 2 for i in range(9))
        assert math.isclose(curve.auc, hand)
    assert result.curves["positive"].scores[0] == total  # the 0% point: the input as it is
    assert result.values["morf_auc"] < result.values["lerf_auc"]  # the oracle relevance
    assert math.isclose(result.values["lerf_minus_morf"], result.values["lerf_auc"] - result.values["morf_auc"])


def test_oracle_relevance_beats_its_reverse_and_random():
    oracle = run_toy(toy_probe(WEIGHTS)).values
    reverse = run_toy(toy_probe(-WEIGHTS)).values
    shuffled = run_toy(toy_probe(np.random.default_rng(0).permutation(WEIGHTS))).values
    assert oracle["morf_auc"] < shuffled["morf_auc"] < reverse["morf_auc"]
    assert oracle["comprehensiveness"] > reverse["comprehensiveness"]
    assert oracle["sufficiency"] < reverse["sufficiency"]


def test_eraser_aopc_equals_the_hand_computation_with_special_tokens_kept():
    """Protected tokens 0 and 9 are never removed; of the 8 others, bins 10%, 25%, 50% take 1, 2, 4 tokens (rounded
    half up); a 1% bin still takes one."""
    protected = np.zeros(10, dtype=bool)
    protected[[0, 9]] = True
    relevance = WEIGHTS.copy()
    relevance[0] = 100.0  # most relevant, but protected
    result = run_toy(toy_probe(relevance, protected), bins=(0.01, 0.1, 0.25, 0.5))
    order = [1, 5, 3, 6, 8, 2, 4, 7]  # the removable tokens by decreasing relevance
    total = WEIGHTS.sum()
    comprehensiveness = [WEIGHTS[order[:k]].sum() for k in (1, 1, 2, 4)]  # full - (full - removed)
    sufficiency = [WEIGHTS[order[k:]].sum() for k in (1, 1, 2, 4)]  # full - (the top k and the protected)
    assert math.isclose(result.values["comprehensiveness"], np.mean(comprehensiveness))
    assert math.isclose(result.values["sufficiency"], np.mean(sufficiency))
    assert total > 0


def test_tokens_replaced_by_a_mask_id_instead_of_deleted():
    result = run_toy(toy_probe(WEIGHTS, mask_id=9), metrics=("morf_auc",))  # id 9 weighs 0: same as deleting
    assert math.isclose(result.values["morf_auc"], run_toy(toy_probe(WEIGHTS)).values["morf_auc"])
    assert set(result.values) == {"morf_auc"}


def test_patch_relevance_sums_pixels_into_patches():
    pixels = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(patch_relevance(pixels, (2, 2)), [[10, 18], [42, 50]])
    np.testing.assert_allclose(patch_relevance(pixels, (4, 4)), pixels)
    with pytest.raises(InputError):
        patch_relevance(pixels, (3, 3))


# --- real models --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_explainer(wordpiece):
    return Explainer(make_bert(len(wordpiece)), wordpiece)


def test_batched_equals_per_item_and_the_one_example_curve(text_explainer):
    """Rows of several texts stacked (and padded) give what one text at a time gives, and what
    :func:`metrics.perturbation_curve` gives for each text with the same model."""
    together = evaluate(text_explainer, TEXTS, methods=["generic", "raw_attention"], batch_size=64)
    apart = evaluate(text_explainer, TEXTS, methods=["generic", "raw_attention"], batch_size=1)
    for method in ("generic", "raw_attention"):
        for metric in ("morf_auc", "lerf_auc", "comprehensiveness", "sufficiency"):
            a, b = together.values(method, metric), apart.values(method, metric)
            assert a.keys() == b.keys() and len(a) == len(TEXTS)
            np.testing.assert_allclose(list(a.values()), list(b.values()), atol=1e-5)
    model, tokenizer = text_explainer.model, text_explainer.adapter.tokenizer
    explanations = text_explainer.explain(TEXTS, method="generic")
    for index, (text, explanation) in enumerate(zip(TEXTS, explanations)):
        ids = torch.tensor(tokenizer(text)["input_ids"])

        def predict(batch, target=explanation.target):
            with torch.no_grad():
                return model(input_ids=batch).logits.softmax(-1)[:, target].numpy()

        for order, metric in (("positive", "morf_auc"), ("negative", "lerf_auc")):
            curve = metrics.perturbation_curve(predict, ids, explanation.scores, order, baseline="drop",
                                               protected=explanation.special_tokens)
            assert curve.fractions[0] == 0
            assert math.isclose(curve.auc, together.values("generic", metric)[(index, None)], abs_tol=1e-5)


def _state(model):
    configs = [getattr(m, "config", None) for m in model.modules()]
    return ([getattr(c, "_attn_implementation", None) for c in configs],
            [getattr(m, "fused_attn", None) for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
            [p.requires_grad for p in model.parameters()], model.training)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_evaluation_leaves_the_model_as_it_was(wordpiece, implementation):
    model = make_bert(len(wordpiece))
    model.config._attn_implementation = implementation
    model.train()
    before = _state(model)
    evaluate(Explainer(model, wordpiece), TEXTS[:2], methods=["generic"], metrics=("morf_auc",))
    assert _state(model) == before
    with pytest.raises(RuntimeError), fused_attention(model):
        assert model.config._attn_implementation == "sdpa"
        raise RuntimeError("inside")
    assert _state(model) == before


def test_fused_attention_scores_equal_the_eager_ones(wordpiece):
    model = make_bert(len(wordpiece))
    model.config._attn_implementation = "eager"
    ids = torch.tensor([wordpiece(TEXTS[2])["input_ids"]])
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        with fused_attention(model):
            fused = model(input_ids=ids).logits
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)

    vit = make_timm_vit()
    for module in vit.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    with fused_attention(vit):
        assert all(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))
    assert not any(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))


def test_image_classifier_removes_patches_and_scores_the_ground_truth():
    explainer = Explainer(make_timm_vit())
    pixels = torch.rand(2, 3, 32, 32)
    truth = np.zeros((32, 32), dtype=bool)
    truth[:8, :8] = True
    evaluation = evaluate(explainer, [{"inputs": pixels[0], "truth": truth}, {"inputs": pixels[1], "truth": truth}],
                          methods=["rollout"], metrics=("morf_auc", "mass_accuracy", "comprehensiveness"))
    row = evaluation.rows[0]
    assert set(row) >= {"morf_auc", "mass_accuracy"} and "comprehensiveness" not in row  # ERASER: tokens only
    explanation = explainer.explain(pixels[0], method="rollout")
    assert math.isclose(row["mass_accuracy"], metrics.relevance_mass_accuracy(explanation.heatmap, truth), abs_tol=1e-6)
    readout = faithfulness_of(explanation, explainer, pixels[0])[0]
    assert math.isclose(readout.values["morf_auc"], row["morf_auc"], abs_tol=1e-6)
    assert readout.curves["negative"].fractions[0] == 0


def test_per_pixel_maps_of_image_text_models_are_scored_on_the_patch_grid():
    """The rule methods' image-text heatmaps are per pixel: deletion scores them on the patch grid, as every other
    method, by their per-patch sums, removing whole patches."""
    explainer = Explainer(*zoo.load("clip"), name="clip")
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    item = Item(keywords={"image": image, "text": "a red circle"})
    family = family_of(explainer)
    per_pixel, per_patch = (family.explain([item], method, 1)[0] for method in ("attnlrp", "generic"))
    assert per_pixel.heatmap.shape == per_pixel.image.shape[:2] != per_patch.heatmap.shape
    probe = family.probes(0, item, per_pixel)[0]
    rows, cols = per_patch.heatmap.shape
    side = per_pixel.heatmap.shape[0] // rows
    sums = per_pixel.heatmap.astype(np.float64).reshape(rows, side, cols, side).sum(axis=(1, 3))
    np.testing.assert_allclose(probe.relevance, sums, rtol=1e-6, atol=1e-9)
    removed = np.zeros((rows, cols), dtype=bool)
    removed[0, 1] = True
    blanked = probe.perturb(probe.row, removed).tensors["pixel_values"]
    changed = (blanked != probe.row.tensors["pixel_values"]).any(0)
    assert changed.sum() == side * side and changed[:side, side:2 * side].all()


def test_compare_is_the_paired_mean_difference():
    rows = [{"item": i, "step": None, "method": m, "morf_auc": v}
            for i, (a, b) in enumerate([(0.1, 0.3), (0.2, 0.3), (0.4, 0.5)]) for m, v in (("a", a), ("b", b))]
    evaluation = Evaluation(rows, ["a", "b"], ["morf_auc"])
    comparison = compare(evaluation, "a", "b", "morf_auc")
    mean, half = metrics.mean_confidence_interval([-0.2, -0.1, -0.1])
    assert math.isclose(comparison.difference, mean) and math.isclose(comparison.ci95, half)
    assert comparison.count == 3
    assert comparison.better == ("a" if half < abs(mean) else None)
    assert evaluation.summary()["a"]["morf_auc"][2] == 3


def test_wrong_requests_are_input_errors(text_explainer):
    with pytest.raises(InputError, match="Unknown metrics"):
        evaluate(text_explainer, TEXTS, metrics=("accuracy",))
    with pytest.raises(InputError, match="removal"):
        evaluate(text_explainer, TEXTS, removal="blur")


def test_random_baseline_scores_seeded_random_relevance_on_the_same_decisions(text_explainer, wordpiece):
    """"random" is scored like a method: each decision's tokens ranked by seeded uniform noise (the same noise on
    every call), with the target the methods explain; its MoRF AUC equals the curve of that noise by hand."""
    first = evaluate(text_explainer, TEXTS, methods=["random", "generic"], metrics=("morf_auc",))
    again = evaluate(text_explainer, TEXTS, methods=["random"], metrics=("morf_auc",))
    assert first.methods == ["random", "generic"] and not first.refused
    assert first.values("random", "morf_auc") == again.values("random", "morf_auc")
    assert first.values("random", "morf_auc") != first.values("generic", "morf_auc")
    rng = np.random.default_rng(0)
    model, tokenizer = text_explainer.model, text_explainer.adapter.tokenizer
    for index, (text, explanation) in enumerate(zip(TEXTS, text_explainer.explain(TEXTS, method="generic"))):
        ids = torch.tensor(tokenizer(text)["input_ids"])
        noise = rng.random(ids.shape[0])

        def predict(batch, target=explanation.target):
            with torch.no_grad():
                return model(input_ids=batch).logits.softmax(-1)[:, target].numpy()

        curve = metrics.perturbation_curve(predict, ids, noise, "positive", baseline="drop",
                                           protected=explanation.special_tokens)
        assert math.isclose(curve.auc, first.values("random", "morf_auc")[(index, None)], abs_tol=1e-5)
