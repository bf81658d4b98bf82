"""Ground-truth metrics and perturbation tests against hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from toolkit.errors import InputError
from toolkit.evaluation import (
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


def quadrant_mask(size=8):
    """The top-left quarter of a size x size image."""
    mask = np.zeros((size, size), dtype=bool)
    mask[: size // 2, : size // 2] = True
    return mask


# --- relevance mass accuracy ----------------------------------------------------------------------

def test_mass_inside_the_mask_scores_one():
    relevance = np.zeros((8, 8))
    relevance[1:3, 1:4] = [[0.5, 2.0, 1.0], [3.0, 0.1, 0.2]]
    assert relevance_mass_accuracy(relevance, quadrant_mask()) == 1.0


def test_mass_partial_share_and_negative_relevance_ignored():
    relevance = np.zeros((8, 8))
    relevance[0, 0] = 3.0  # inside
    relevance[7, 7] = 1.0  # outside
    relevance[6, 0] = -5.0  # negative: counts nowhere (CLEVR-XAI uses positive relevance only)
    assert relevance_mass_accuracy(relevance, quadrant_mask()) == pytest.approx(0.75)


def test_mass_of_patch_grid_upsampled_nearest_and_bilinear():
    grid = np.array([[1.0, 0.0], [0.0, 0.0]])
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    # Nearest: the patch's relevance covers exactly its 2x2 pixels, all inside.
    assert relevance_mass_accuracy(grid, mask, upsample="nearest") == 1.0
    # Bilinear (half-pixel centres): along each axis the weights of the first patch are
    # 1, 0.75, 0.25, 0, so the mass inside is (1 + 0.75)^2 of a total (1 + 0.75 + 0.25)^2.
    assert relevance_mass_accuracy(grid, mask, upsample="bilinear") == pytest.approx(1.75**2 / 2.0**2)


def test_mass_of_uniform_map_is_the_mask_share_and_accepts_tensors():
    mask = quadrant_mask()
    assert relevance_mass_accuracy(torch.ones(2, 2), torch.from_numpy(mask)) == pytest.approx(0.25)


def test_map_without_positive_relevance_gives_nan():
    negative = -np.ones((4, 4))
    mask = quadrant_mask(4)
    assert math.isnan(relevance_mass_accuracy(negative, mask))
    assert math.isnan(relevance_rank_accuracy(negative, mask))
    assert math.isnan(pointing_game(np.zeros((4, 4)), mask))


@pytest.mark.parametrize("relevance, mask", [
    (np.ones((4, 4)), np.zeros((4, 4), dtype=bool)),  # empty ground truth
    (np.ones((8, 8)), quadrant_mask(4)),  # relevance larger than the mask
    (np.ones((2, 2, 3)), quadrant_mask(4)),  # not a 2-D map
    (np.full((4, 4), np.nan), quadrant_mask(4)),
])
def test_bad_ground_truth_inputs_are_refused(relevance, mask):
    with pytest.raises(InputError):
        relevance_mass_accuracy(relevance, mask)


# --- relevance rank accuracy ----------------------------------------------------------------------

def test_rank_accuracy_counts_the_top_k_inside():
    mask = np.zeros((3, 3), dtype=bool)
    mask[0, :] = True  # K = 3
    relevance = np.array([[9.0, 1.0, 8.0], [7.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    # The top 3 are 9 (in), 8 (in) and 7 (out): 2 of 3.
    assert relevance_rank_accuracy(relevance, mask) == pytest.approx(2 / 3)
    assert relevance_rank_accuracy(relevance, mask, k=2) == 1.0
    assert relevance_rank_accuracy(relevance, mask, k=4) == pytest.approx(3 / 4)  # and 1 (in)
    with pytest.raises(InputError):
        relevance_rank_accuracy(relevance, mask, k=10)


def test_rank_accuracy_breaks_ties_in_expectation():
    mask = np.zeros((2, 2), dtype=bool)
    mask[0, 0] = True  # K = 1
    # Two pixels tie for first, one inside: the top-1 is inside half of the time.
    assert relevance_rank_accuracy(np.array([[1.0, 1.0], [0.0, 0.0]]), mask) == pytest.approx(0.5)
    # A uniform 2x2 grid on an 8x8 image: every pixel ties, so chance level, the mask's share.
    assert relevance_rank_accuracy(np.ones((2, 2)), quadrant_mask()) == pytest.approx(0.25)


# --- pointing game --------------------------------------------------------------------------------

def test_pointing_game_hit_and_miss():
    mask = quadrant_mask()
    hit = np.zeros((8, 8))
    hit[2, 3], hit[6, 6] = 5.0, 4.0
    miss = hit.copy()
    miss[6, 6] = 6.0
    assert pointing_game(hit, mask) == 1.0
    assert pointing_game(miss, mask) == 0.0


def test_pointing_game_tolerance_is_euclidean_distance_in_pixels():
    mask = quadrant_mask()  # rows and columns 0..3
    relevance = np.zeros((8, 8))
    relevance[5, 5] = 1.0  # nearest mask pixel (3, 3): distance sqrt(8) = 2.83
    assert pointing_game(relevance, mask, tolerance=2) == 0.0
    assert pointing_game(relevance, mask, tolerance=2.9) == 1.0


def test_pointing_game_with_a_tied_maximum_is_the_hit_share():
    # The two top patches tie: of their 32 pixels, the 16 of the top-left one lie in the mask.
    assert pointing_game(np.array([[1.0, 1.0], [0.0, 0.0]]), quadrant_mask()) == pytest.approx(0.5)


# --- tokens ---------------------------------------------------------------------------------------

def test_token_metrics():
    scores = [0.1, 2.0, -1.0, 1.0, 0.9]
    mask = [False, True, False, False, True]
    assert token_relevance_mass_accuracy(scores, mask) == pytest.approx(2.9 / 4.0)
    assert token_relevance_rank_accuracy(scores, mask) == pytest.approx(1 / 2)  # top 2: tokens 1 (in), 3 (out)
    assert token_relevance_rank_accuracy(scores, mask, k=3) == pytest.approx(2 / 3)
    assert token_pointing_game(scores, mask) == 1.0
    assert token_pointing_game(torch.tensor([3.0, 0, 0, 0, 1]), torch.tensor(mask)) == 0.0
    with pytest.raises(InputError):
        token_relevance_mass_accuracy(scores, mask[:3])


# --- perturbation tests ---------------------------------------------------------------------------

GRID = np.arange(1.0, 17.0).reshape(4, 4)  # relevance of 16 patches: 1..16


def remaining_relevance(batch):
    """A model whose score is exactly the relevance still visible: the faithful case, known analytically.

    Inputs are an 8x8 image of ones split into 2x2 patches; removed patches become 0. The score is
    the sum of the per-pixel relevance (patch relevance / 4) over the surviving pixels.
    """
    weights = torch.from_numpy(np.kron(GRID, np.ones((2, 2))) / 4)
    return (batch[:, 0] * weights).sum(dim=(1, 2))


def expected_curve(order):
    """Remaining relevance after removing round(f * 16) patches, most (positive) or least relevant first."""
    ranked = np.sort(GRID.ravel())[::-1] if order == "positive" else np.sort(GRID.ravel())
    counts = sorted({math.floor(f * 16 + 0.5) for f in np.arange(10) / 10})
    return np.array(counts) / 16, np.array([GRID.sum() - ranked[:c].sum() for c in counts])


@pytest.mark.parametrize("order", ["positive", "negative"])
def test_perturbation_curve_matches_the_analytic_answer(order):
    image = torch.ones(1, 8, 8, dtype=torch.float64)
    curve = perturbation_curve(remaining_relevance, image, GRID, order=order)
    fractions, scores = expected_curve(order)
    np.testing.assert_allclose(curve.fractions, fractions)
    np.testing.assert_allclose(curve.scores, scores)
    assert curve.auc == pytest.approx(np.sum(np.diff(fractions) * (scores[1:] + scores[:-1]) / 2))


def test_faithful_map_ranks_morf_below_lerf_and_a_constant_map_ties():
    image = torch.ones(1, 8, 8, dtype=torch.float64)
    morf = perturbation_auc(remaining_relevance, image, GRID, order="positive")
    lerf = perturbation_auc(remaining_relevance, image, GRID, order="negative")
    assert morf < lerf
    constant = np.ones((4, 4))
    assert perturbation_auc(remaining_relevance, image, constant, order="positive") == \
        perturbation_auc(remaining_relevance, image, constant, order="negative")


def test_all_steps_go_through_predict_in_one_batch():
    calls = []

    def predict(batch):
        calls.append(tuple(batch.shape))
        return batch.mean(dim=(1, 2, 3))

    image = torch.rand(3, 16, 16)
    perturbation_curve(predict, image, np.random.default_rng(0).random((4, 4)))
    assert calls == [(10, 3, 16, 16)]
    calls.clear()
    perturbation_curve(predict, image, np.random.default_rng(0).random((4, 4)), batch_size=4)
    assert calls == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]


def test_steps_that_round_alike_are_evaluated_once_and_integrated_over_actual_fractions():
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return np.ones(len(batch))

    curve = perturbation_curve(predict, np.zeros(7, dtype=np.int64), np.arange(7.0), baseline=0)
    # round(f * 7) for f = 0, 0.1, ..., 0.9: 0 1 1 2 3 4 4 5 6 6 -> 7 distinct counts.
    np.testing.assert_allclose(curve.fractions, np.arange(7) / 7)
    assert calls == [7]
    assert curve.auc == pytest.approx(6 / 7)  # a constant score of 1 over [0, 6/7]


def test_image_baselines():
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    seen = []

    def predict(batch):
        seen.append(batch.clone())
        return torch.zeros(len(batch))

    relevance = np.array([[4.0, 1.0], [2.0, 3.0]])
    perturbation_curve(predict, image, relevance, steps=(0.0, 0.25), baseline="mean")
    removed_one = seen[-1][1]
    assert torch.equal(removed_one[:, :2, :2], image.mean(dim=(1, 2), keepdim=True).expand(2, 2, 2))
    assert torch.equal(removed_one[:, 2:], image[:, 2:]) and torch.equal(removed_one[:, :, 2:], image[:, :, 2:])
    assert torch.equal(seen[-1][0], image)  # step 0 is the unperturbed input
    perturbation_curve(predict, image, relevance, steps=(0.5,), baseline=-1.0)
    assert (seen[-1][0][:, :2, :2] == -1).all() and (seen[-1][0][:, 2:, 2:] == -1).all()


def test_token_removal_by_mask_id_respects_protected_positions_and_keeps_numpy():
    ids = np.array([101, 7, 8, 9, 102])
    relevance = np.array([5.0, 3.0, 1.0, 2.0, 5.0])  # [CLS] and [SEP] look most relevant
    seen = []

    def predict(batch):
        assert isinstance(batch, np.ndarray)
        seen.append(batch.copy())
        return np.zeros(len(batch))

    curve = perturbation_curve(predict, ids, relevance, steps=(0.0, 1 / 3, 2 / 3), baseline=103, protected=[1, 0, 0, 0, 1])
    np.testing.assert_array_equal(seen[0], [[101, 7, 8, 9, 102], [101, 103, 8, 9, 102], [101, 103, 8, 103, 102]])
    np.testing.assert_allclose(curve.fractions, [0, 1 / 3, 2 / 3])


def test_token_dropping_shortens_sequences_one_call_per_step():
    embeddings = torch.randn(6, 4)
    lengths = []

    def predict(batch):
        lengths.append(batch.shape[1])
        return torch.tensor([float(batch.shape[1])])

    curve = perturbation_curve(predict, embeddings, torch.arange(6.0), order="negative", steps=(0, 0.5), baseline="drop")
    assert lengths == [6, 3]
    np.testing.assert_allclose(curve.scores, [6, 3])


@pytest.mark.parametrize("kwargs", [
    dict(order="sideways"),
    dict(steps=(0.5, 0.1)),
    dict(steps=(0.0, 1.5)),
    dict(baseline="drop"),  # images cannot drop pixels
    dict(baseline="median"),
    dict(batch_size=0),
    dict(relevance=np.ones((3, 3))),  # 8x8 does not split into 3x3 patches
])
def test_bad_perturbation_arguments_are_refused(kwargs):
    arguments = dict(predict=lambda b: b.sum(dim=(1, 2, 3)), inputs=torch.ones(1, 8, 8), relevance=np.ones((4, 4)))
    arguments.update(kwargs)
    with pytest.raises(InputError):
        perturbation_curve(**arguments)


def test_predict_must_return_one_score_per_input():
    with pytest.raises(InputError):
        perturbation_curve(lambda b: torch.zeros(3), torch.ones(1, 8, 8), np.ones((4, 4)))


# --- confidence intervals -------------------------------------------------------------------------

@pytest.mark.parametrize("df, expected", [(1, 12.706204736), (4, 2.776445105), (10, 2.228138852), (30, 2.042272456)])
def test_t_quantile_matches_tables(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, rel=1e-8)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3.5, 7, 50, 1000):
        for p in (0.5, 0.6, 0.9, 0.995, 0.9999):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-10)


def test_mean_confidence_interval():
    mean, half_width = mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    # t(0.975, 3) * s / sqrt(n) with s = sqrt(5/3)
    assert half_width == pytest.approx(3.182446305 * math.sqrt(5 / 3) / 2)
    assert mean_confidence_interval([1.0, 2.0, 3.0, 4.0], confidence=0.99)[1] > half_width
    assert math.isnan(mean_confidence_interval([0.5])[1])
    with pytest.raises(InputError):
        mean_confidence_interval([])
    with pytest.raises(InputError):
        mean_confidence_interval([0.5, float("nan")])


# --- with generated scenes ------------------------------------------------------------------------

def test_metrics_on_a_scene_question_mask():
    from toolkit.scenes import generate_scene

    scene = generate_scene(3, size=112)
    question = next(q for q in scene.questions if q.kind == "size")
    # A patch-grid map that is the share of each 16x16 patch covered by the object: an ideal ViT map.
    coverage = question.mask.reshape(7, 16, 7, 16).mean(axis=(1, 3))
    assert pointing_game(coverage, question.mask) > 0.9  # the best-covered patch may have a few pixels outside
    share = question.mask.mean()
    assert relevance_mass_accuracy(coverage, question.mask) > 3 * share
    assert relevance_rank_accuracy(coverage, question.mask) > 3 * share
    assert relevance_mass_accuracy(coverage, question.mask, upsample="bilinear") > 3 * share
