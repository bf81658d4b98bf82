"""The result of explaining one input: relevance scores, what they refer to, and how to show them."""
from __future__ import annotations

import json
import platform
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import render
from .errors import InputError
from .paths import output_folder

_ARRAY_FIELDS = ("scores", "word_scores", "heatmap", "image", "special_tokens", "original_image", "crop_box")
# What a task adds to the common fields, kept in ``Explanation.outputs`` and read as attributes (``exp.answer``):
TASK_OUTPUTS = {
    "similarity": "image-text (CLIP, SigLIP) or sentence-sentence cosine similarity",
    "compared_with": "the other sentence (sentence similarity)",
    "answer": "the explained answer (visual question answering)",
    "caption": "the explained caption or continuation (captioning, language models); see steps",
    "steps": "one CaptionStep per explained token of a caption or continuation",
    "boxes": "(R, 4) x1, y1, x2, y2 of image regions; heatmap is then (R,) (LXMERT)",
}


def library_versions() -> dict[str, str]:
    import torch

    from . import __version__

    versions = {"toolkit": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for name in ("transformers", "timm", "open_clip"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


@dataclass
class CaptionStep:
    """One generated (or given) caption token and what it rests on."""

    token: str
    token_id: int
    log_prob: float
    heatmap: np.ndarray  # image relevance on the patch grid (per pixel under the LRP rules' methods)
    text_scores: np.ndarray  # relevance of the tokens before this one (the prompt/BOS included)
    text_tokens: list[str]

    def to_json(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CaptionStep":
        return cls(**{**data, "heatmap": np.asarray(data["heatmap"], dtype=np.float32),
                      "text_scores": np.asarray(data["text_scores"], dtype=np.float32)})


@dataclass
class Explanation:
    """Relevance for one input and one target.

    ``scores`` holds one raw (not normalised) value per token (for images, per token of the
    sequence: prefix tokens, then patches in row-major order). ``heatmap`` is the image relevance
    on the patch grid (or per pixel for ``lrp`` and the LRP rules' methods such as ``attnlrp``) over ``image``,
    the model's view (resized and cropped).
    ``original_image`` is the image as given, and ``crop_box`` (x0, y0, x1, y1, in its pixels) where the
    model's view lies in it (reaching outside where the processor pads); both are None when the input was
    preprocessed pixels or the processor's geometry is unknown. ``words`` and ``word_scores`` sum sub-word pieces;
    ``unknown_words`` marks the words the tokenizer read as its unknown token (their scores are that token's).
    What a task adds beyond these (``similarity``, ``answer``, ``caption``, ``steps``, ``boxes``...: TASK_OUTPUTS)
    lives in ``outputs`` and reads as attributes, so a new task adds no field.
    """

    method: str
    model: str
    target: int
    label: str
    probability: float
    scores: np.ndarray
    tokens: list[str] = field(default_factory=list)
    words: list[str] | None = None
    word_scores: np.ndarray | None = None
    word_segments: list[int] | None = None
    unknown_words: list[bool] | None = None  # per word: read as the tokenizer's unknown token
    special_tokens: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    image: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    text: str | None = None  # the input text (text classifiers; a pair as "a | b"; the explained sentence of a
    # sentence similarity), the text paired with the image (CLIP), or the question (VQA)
    original_image: np.ndarray | None = None  # (H, W, 3) uint8, the image as given
    crop_box: np.ndarray | None = None  # (4,) float32: x0, y0, x1, y1 of the model's view in original_image
    outputs: dict[str, Any] = field(default_factory=dict)  # what the task adds (TASK_OUTPUTS), read as attributes
    versions: dict[str, str] = field(default_factory=library_versions)

    def __getattr__(self, name: str) -> Any:
        """A task's output (``exp.answer``, ``exp.steps``...) as an attribute: None where the task gives none."""
        if name in TASK_OUTPUTS:
            return self.__dict__.get("outputs", {}).get(name)
        raise AttributeError(f"'Explanation' has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in TASK_OUTPUTS:
            self.outputs[name] = value
        else:
            super().__setattr__(name, value)

    def __repr__(self) -> str:
        what = f"heatmap={self.heatmap.shape}" if self.heatmap is not None else f"tokens={len(self.tokens)}"
        extra = "".join(f", {name}={value!r}" for name, value in (("text", self.text), ("answer", self.answer),
                                                                   ("caption", self.caption)) if value is not None)
        return (f"Explanation(method={self.method!r}, target={self.target} ({self.label!r}), "
                f"probability={self.probability:.3f}, {what}{extra})")

    # --- display ------------------------------------------------------------------------------
    def colour_scale(self) -> render.ColourScale:
        """How the displays colour this explanation (zero-based; ``.flat`` when the values hardly differ,
        ``.caption`` says it in words): of the heatmap for images, else of the word (or token) scores."""
        if self.heatmap is not None:
            return render.colour_scale(self.heatmap)
        return render.colour_scale(self.word_scores if self.word_scores is not None else self.scores)

    def caption_scale(self) -> render.ColourScale:
        """One colour scale for the image maps of every caption step: drawn with it (``overlay(scale=...)`` of
        each ``caption_step(i)``), a token that hardly rests on the image looks nearly empty next to one that
        does, instead of each map being stretched to its own peak."""
        if not self.steps:
            raise InputError("caption_scale() needs a captioning explanation with at least one step.")
        return render.shared_colour_scale(step.heatmap for step in self.steps)

    def overlay(self, alpha: float = render.DEFAULT_ALPHA, colormap: str | None = None, on: str = "view",
                colour_bar: bool = False, scale: render.ColourScale | None = None) -> Image.Image:
        """The heatmap painted over the image from zero (RGB PIL image; see :func:`render.heatmap_overlay`).

        ``on="view"``: over the model's view (the image resized and cropped by the processor).
        ``on="original"``: over the image as given, at its own resolution: the heatmap is mapped back through
        the resize and crop into ``crop_box``, and what the model did not see is darkened.
        ``colour_bar=True`` attaches the scale with its end values below. ``scale`` (default: the map's own)
        draws several maps on one scale, such as :meth:`caption_scale`. Region relevance (``boxes``) is
        painted over each region's box.
        """
        if self.heatmap is None or self.image is None:
            raise InputError("overlay() needs an image explanation; use to_html() for text.")
        if on not in ("view", "original"):
            raise InputError(f"on must be 'view' (the model's view) or 'original' (the image as given); got {on!r}.")
        options = dict(alpha=alpha, colormap=colormap, colour_bar=colour_bar)
        if self.boxes is not None:
            return render.region_overlay(self.image, self.boxes, self.heatmap, **options)
        options["scale"] = scale
        if on == "view":
            return render.heatmap_overlay(self.image, self.heatmap, **options)
        if self.original_image is None or self.crop_box is None:
            raise InputError("This explanation has no original image to draw on: it was made from preprocessed "
                             "pixel_values, by a processor whose resize and crop are unknown, or saved by an older "
                             "version. Pass the image itself (a path, PIL image or array), or use on='view'.")
        return render.heatmap_overlay(self.original_image, self.heatmap, crop_box=self.crop_box, **options)

    def heading(self) -> dict[str, str]:
        """What was explained, for a page's heading: the input, model, method, target and probability. A sentence
        similarity shows both sentences and the cosine (its one-logit probability and target mean nothing); a
        whole caption shows the caption and its probability (its target is the image's index)."""
        if self.compared_with is not None:
            return {"Sentence": self.text or "", "Compared with": self.compared_with, "Model": self.model,
                    "Method": self.method, "Similarity (cosine)": f"{self.similarity:.4f}"}
        rows = {}
        if self.text is not None:
            role = "Paired text" if self.similarity is not None else "Question" if self.answer is not None else "Input"
            rows[role] = self.text
        for name, value in (("Answer", self.answer), ("Caption", self.caption)):
            if value is not None:
                rows[name] = value
        rows.update({"Model": self.model, "Method": self.method})
        if self.steps is None:
            rows["Target"] = f"{self.label} (class {self.target})"
        rows["Probability"] = f"{self.probability:.3f}"
        if self.similarity is not None:
            rows["Similarity"] = f"{self.similarity:.4f}"
        return rows

    def to_html(self, level: str = "words") -> str:
        """Plain HTML of the text: red for positive relevance, blue for negative, opacity |score| / max |score|,
        under a heading (:meth:`heading`) and above a legend with the scale. Words read as the unknown token
        (``unknown_words``) have a dashed outline.

        ``level="words"`` shows whole words (special tokens left out), ``"tokens"`` every token. For image-text
        models it shows the text side (the paired text, the question). A caption shows its tokens, each coloured
        by its total image relevance (the sum of its step's map): how much that token rests on the image, on one
        scale for the whole caption; each token's map is ``caption_step(i).overlay()`` and its relevance over the
        earlier tokens ``caption_step(i).to_html()``.
        """
        if level not in ("words", "tokens"):
            raise InputError("level must be 'words' or 'tokens'.")
        if self.steps is not None:
            details = {**self.heading(), "Colours": "each token's total image relevance (the sum of its map); "
                                                    "per-token maps and earlier-token relevance: caption_step(i)"}
            return render.scores_html([step.token for step in self.steps],
                                      np.array([step.heatmap.sum() for step in self.steps]), details=details)
        if level == "words" and self.words is not None:
            return render.scores_html(self.words, self.word_scores, details=self.heading(), unknown=self.unknown_words)
        if not self.tokens or (self.heatmap is not None and self.text is None):  # an image classifier's patches
            raise InputError("to_html() needs a text explanation, an image-text one or a caption; use overlay() "
                             "for images.")
        pieces, scores = self.tokens, np.asarray(self.scores)
        if level == "words" and self.special_tokens is not None:  # no words: the tokens, special ones left out
            shown = ~np.asarray(self.special_tokens, dtype=bool)
            pieces, scores = [piece for piece, keep in zip(pieces, shown) if keep], scores[shown]
        return render.scores_html(pieces, scores, details=self.heading())

    def caption_step(self, index: int) -> "Explanation":
        """Caption token ``index`` explained on its own: its image map (``heatmap``, for overlay()) and its
        relevance over the tokens before it (``tokens``, ``scores``, for to_html()); ``label`` is the token and
        ``probability`` its probability given the image and the earlier tokens."""
        if not self.steps:
            raise InputError("caption_step() needs a captioning explanation with at least one step.")
        count = len(self.steps)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -count <= index < count:
            raise InputError(f"Unknown caption step {index!r}: the caption has {count} tokens (0 to {count - 1}).")
        step = self.steps[index]
        return Explanation(method=self.method, model=self.model, target=step.token_id, label=step.token,
                           probability=float(np.exp(step.log_prob)), scores=step.text_scores,
                           tokens=list(step.text_tokens), heatmap=step.heatmap, image=self.image,
                           options=self.options, text=" ".join(step.text_tokens), outputs={"caption": self.caption},
                           original_image=self.original_image, crop_box=self.crop_box, versions=self.versions)

    def _repr_html_(self) -> str:
        if self.heatmap is not None:
            import base64
            import io

            buffer = io.BytesIO()
            self.overlay(colour_bar=True).save(buffer, format="PNG")
            return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>'
        return self.to_html()

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` file: the arrays, plus a JSON ``meta`` entry (model, method, options, versions).

        ``.npz`` is added to a name without it; missing folders on the way are created. ``path`` names the file:
        an existing folder is refused (give the file's name inside it)."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise InputError(f"{path} is a folder; save() writes one file: give its name, e.g. "
                             f"{path / 'explanation.npz'}.")
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        output_folder(path.parent, "Explanation.save")
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAY_FIELDS if getattr(self, name) is not None}
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAY_FIELDS}
        meta["outputs"] = _outputs_json(self.outputs)
        try:
            np.savez_compressed(path, meta=np.array(json.dumps(meta, default=_jsonable)), **arrays)
        except OSError as error:
            raise InputError(f"Cannot write {path}: {error.strerror or error}.") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Explanation":
        """An Explanation written by :meth:`save`; any other file is an InputError that says what it is."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"No explanation file at {path}" + (" (a folder)." if path.is_dir() else "."))
        foreign = f"{path} is not an explanation file (a .npz written by Explanation.save)"
        if not zipfile.is_zipfile(path):
            raise InputError(f"{foreign}: it is not a .npz archive at all.")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "meta" not in data.files:
                    raise InputError(f"{foreign}: it is a .npz archive without the 'meta' entry save() writes "
                                     f"(it holds {', '.join(data.files[:8]) or 'nothing'}).")
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in _ARRAY_FIELDS if name in data.files}
                # files written before outputs existed keep the task's parts as fields of their own
                outputs = {**{name: meta.pop(name) for name in TASK_OUTPUTS if name in meta},
                           **({"boxes": data["boxes"]} if "boxes" in data.files else {}), **meta.pop("outputs", {})}
            return cls(**meta, **arrays, outputs=_outputs_read(outputs))
        except InputError:
            raise
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as error:
            detail = str(error).splitlines()[0][:200] if str(error) else ""
            raise InputError(f"{foreign}, or it is damaged or from an incompatible version "
                             f"({type(error).__name__}: {detail}).") from None

    def to_dict(self) -> dict[str, Any]:
        plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        return {**plain, "outputs": _outputs_json(self.outputs)}


def _outputs_json(outputs: dict[str, Any]) -> dict[str, Any]:
    """A task's outputs as JSON values: caption steps as dicts, arrays as lists."""
    return {name: [step.to_json() for step in value] if name == "steps" and value is not None
            else value.tolist() if isinstance(value, np.ndarray) else value for name, value in outputs.items()}


def _outputs_read(outputs: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_outputs_json` for the outputs it knows."""
    read = dict(outputs)
    if read.get("steps") is not None:
        read["steps"] = [step if isinstance(step, CaptionStep) else CaptionStep.from_json(step) for step in read["steps"]]
    if read.get("boxes") is not None:
        read["boxes"] = np.asarray(read["boxes"], dtype=np.float32)
    return read


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
