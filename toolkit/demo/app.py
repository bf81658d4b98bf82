"""The Gradio app: one tab per kind of model plus the attention views, wired to :class:`Handlers`."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..devices import default_device, describe
from ..errors import ToolkitError
from ..methods import list_methods
from .config import TAB_TITLES, DemoConfig
from .handlers import NO_COMPARISON, PREDICTED, VIEW_KINDS, Handlers
from .components import ImageInput
from .scenes import EXAMPLE_SEEDS
from .serving import user_facing

log = logging.getLogger("toolkit.demo")

INTRO = (
    "See what a transformer's decision rests on: which words, and which parts of an image. Pick a tab, click an "
    "example or **New scene**, and press **Explain**. The built-in models run offline: a pretrained MiniLM "
    "sentence encoder for text, and small models trained on synthetic 64×64 scenes of shapes. For those scenes the "
    "truth is known, so the demo outlines the objects a decision depends on and tells you whether the explanation "
    "points at them. Red is relevance for the decision, blue against it."
)
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto;}
#tk-header h1 {margin-bottom: 0.1em;}
#tk-header p {color: var(--body-text-color-subdued); max-width: 62em;}
.tk-pixelated img {image-rendering: pixelated;}
.tk-input-image img {object-fit: contain !important; width: 100% !important; height: 100% !important;}
.tk-text {font-size: 15px; margin-bottom: 6px;}
.tk-caption {font-weight: 600; margin: 8px 0 2px;}
.tk-text table.heading th, .tk-text table.heading td {border: none !important; background: none !important;}
.tk-note {color: var(--body-text-color-subdued); font-size: 13px;}
"""
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif"]
TEXT_EXAMPLES = [
    ["a gripping, beautifully shot film that I will not forget", "positive: This is great, I loved it.\n"
                                                                 "negative: This is terrible, I hated it."],
    ["The striker scored twice before half-time and the crowd went wild.",
     "sport: a text about sport\npolitics: a text about politics\nscience: a text about science"],
    ["Parliament passed the budget after a long night of debate.",
     "sport: a text about sport\npolitics: a text about politics\nscience: a text about science"],
    ["The telescope captured light from a galaxy billions of years old.",
     "sport: a text about sport\npolitics: a text about politics\nscience: a text about science"],
]
TEXT_EXAMPLE_NAMES = ["Film review: sentiment", "Sport news: topic", "Politics news: topic", "Science news: topic"]
VIEW_EXAMPLES = [["The cat sat on the mat because it was tired.", ""],
                 ["The house is wonderful.", "I would like to live there."]]
VIEW_EXAMPLE_NAMES = ["One sentence", "A sentence pair"]
TEXT_HEIGHT = 420  # px; longer texts scroll
METHOD_INFO = "Only the methods that apply to the chosen model are listed."


def theme() -> gr.themes.Base:
    """A calm theme on system fonts: nothing is fetched from font servers, so the page loads offline."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="rose", neutral_hue="slate", font=SYSTEM_FONTS,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])


def _example_scenes(handlers: Handlers) -> list[str]:
    """PNG files of the example scenes (remembered by the scene book, so their ground truth is known)."""
    folder = Path(tempfile.mkdtemp(prefix="toolkit-demo-examples-"))
    paths = []
    for seed in EXAMPLE_SEEDS:
        scene = handlers.book.draw(seed)
        path = folder / f"scene-{seed}.png"
        scene.image.save(path)
        paths.append(str(path))
    return paths


def _settings(handlers: Handlers, tab: str) -> dict[str, Any]:
    """The first model's settings; if it cannot load now, every method (the request will say what is wrong)."""
    first = handlers.config.models(tab)[0].display
    try:
        return handlers.model_settings(tab, first)
    except (ToolkitError, OSError) as error:  # a hub model offline: the app starts, and a request says why
        log.warning("could not load %s for the %s tab yet: %s", first, tab, error)
        return {"methods": list_methods(), "method": "generic", "builtin": False, "zero_shot": False, "layers": 1,
                "labels": [], "label_spec": ""}


class Controls:
    """The model selector and the method options a tab shares with the others."""

    def __init__(self, handlers: Handlers, tab: str, target_label: str | None, with_layers: bool = True):
        settings = _settings(handlers, tab)
        names = [entry.display for entry in handlers.config.models(tab)]
        self.tab, self.handlers = tab, handlers
        self.model = gr.Dropdown(names, value=names[0], label="Model", interactive=len(names) > 1)
        with gr.Row():
            self.method = gr.Dropdown(settings["methods"], value=settings["method"], label="Method",
                                      allow_custom_value=True, info=METHOD_INFO)
            self.compare = gr.Dropdown([NO_COMPARISON] + settings["methods"], value=NO_COMPARISON,
                                       label="Compare with", allow_custom_value=True,
                                       info="A second method, shown side by side.")
        self.start_layer = self.target = None
        if with_layers or target_label:
            with gr.Accordion("Options", open=False):
                if with_layers:
                    self.start_layer = gr.Slider(0, max(settings["layers"] - 1, 1), value=0, step=1,
                                                 label="start_layer", info="The layer the propagation starts from "
                                                 "(rollout, generic, transformer_attribution).")
                if target_label:
                    self.target = gr.Dropdown([PREDICTED] + settings["labels"], value=PREDICTED,
                                              allow_custom_value=True, label=target_label,
                                              info="Explain another class than the prediction.")
        self.settings = settings

    @property
    def options(self) -> list:
        return [c for c in (self.method, self.compare, self.start_layer, self.target) if c is not None]

    def on_model_change(self, extra: Callable[[dict], list] | None = None, extra_outputs: list | None = None) -> None:
        """Refill the method, layer and target choices for the selected model."""

        def refresh(model: str) -> list:
            settings = self.handlers.model_settings(self.tab, model)
            updates = [gr.update(choices=settings["methods"], value=settings["method"]),
                       gr.update(choices=[NO_COMPARISON] + settings["methods"], value=NO_COMPARISON)]
            if self.start_layer is not None:
                updates.append(gr.update(maximum=max(settings["layers"] - 1, 1), value=0))
            if self.target is not None:
                updates.append(gr.update(choices=[PREDICTED] + settings["labels"], value=PREDICTED))
            return updates + (extra(settings) if extra else [])

        self.model.change(user_facing(refresh), [self.model], self.options + (extra_outputs or []),
                          api_visibility="private")


def _compare_toggle(compare: gr.Dropdown, outputs: list) -> None:
    """Show method B's outputs only while a comparison is chosen."""
    compare.change(lambda value: [gr.update(visible=value != NO_COMPARISON)] * len(outputs), [compare], outputs,
                   api_visibility="private", queue=False)


def _image_input(config: DemoConfig, tab: str, visible: bool = True) -> ImageInput:
    image = ImageInput(label="Image", type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                       height=300, visible=visible, elem_id=f"tk-{tab}-input",
                       elem_classes=["tk-pixelated", "tk-input-image"])
    image.max_pixels = config.serving.max_image_pixels
    return image


def _overlay(label: str, elem_id: str, visible: bool = True) -> gr.Image:
    return gr.Image(label=label, format="png", height=300, interactive=False, visible=visible, elem_id=elem_id,
                    elem_classes=["tk-pixelated"], buttons=["download", "fullscreen"])


def _gallery(label: str, elem_id: str, columns: int, visible: bool = True) -> gr.Gallery:
    return gr.Gallery(label=label, columns=columns, height="auto", object_fit="contain", format="png",
                      visible=visible, elem_id=elem_id, elem_classes=["tk-pixelated"])


def _downloads() -> gr.File:
    return gr.File(label="Download: overlay PNG, explanation (.npz, Explanation.load) and JSON", file_count="multiple",
                   interactive=False)


def _scene_button(controls: Controls) -> gr.Button:
    return gr.Button("New scene", size="sm", visible=controls.settings["builtin"])


# --- tabs ----------------------------------------------------------------------------------------------
def _text_tab(handlers: Handlers) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            controls = Controls(handlers, "text", "Target class")
            text = gr.Textbox(label="Text", lines=4, value=TEXT_EXAMPLES[0][0], max_length=
                              handlers.config.serving.max_text_chars)
            labels = gr.Textbox(label="Labels (zero-shot): one per line, name: description", lines=3,
                                value=controls.settings.get("label_spec", ""), visible=controls.settings["zero_shot"])
            button = gr.Button("Explain", variant="primary")
            gr.Examples(TEXT_EXAMPLES, [text, labels], label="Examples (click, then Explain)",
                        example_labels=TEXT_EXAMPLE_NAMES)
        with gr.Column(scale=7):
            prediction = gr.Label(label="Prediction", num_top_classes=5)
            with gr.Row():
                page_a = gr.HTML(label="Relevance", elem_id="tk-text-a", max_height=TEXT_HEIGHT)
                page_b = gr.HTML(label="Relevance (comparison)", visible=False, elem_id="tk-text-b",
                                 max_height=TEXT_HEIGHT)
            table = gr.Dataframe(label="Most relevant words (signed scores)", interactive=False, max_height=320)
            files = _downloads()
    controls.on_model_change(lambda s: [gr.update(visible=s["zero_shot"], value=s.get("label_spec", ""))], [labels])
    labels.change(lambda spec: gr.update(choices=[PREDICTED] + [line.partition(":")[0].strip() for line in
                                                                  (spec or "").splitlines() if line.strip()]),
                  [labels], [controls.target], api_visibility="private", queue=False)
    _compare_toggle(controls.compare, [page_b])
    button.click(user_facing(handlers.explain_text), [controls.model, text, labels, *controls.options],
                 [prediction, page_a, page_b, table, files], api_name="explain_text")


def _image_tab(handlers: Handlers, examples: list[str]) -> None:
    config = handlers.config
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            controls = Controls(handlers, "image", "Target class")
            image = _image_input(config, "image")
            scene = _scene_button(controls)
            button = gr.Button("Explain", variant="primary")
            gr.Examples([[p] for p in examples], [image], label="Example scenes (click, then Explain)")
        with gr.Column(scale=7):
            prediction = gr.Label(label="Prediction", num_top_classes=5)
            with gr.Row():
                overlay_a = _overlay("Relevance", "tk-image-a")
                overlay_b = _overlay("Relevance (comparison)", "tk-image-b", visible=False)
            report = gr.Markdown(label="Ground truth", elem_id="tk-image-report", elem_classes=["tk-note"])
            with gr.Accordion("Raw map", open=False):
                raw = gr.Image(label="The map alone, one block per patch", format="png", height=260,
                               interactive=False, elem_classes=["tk-pixelated"])
            files = _downloads()
    controls.on_model_change(lambda s: [gr.update(visible=s["builtin"])], [scene])
    _compare_toggle(controls.compare, [overlay_b])
    scene.click(user_facing(lambda: handlers.new_scene("image")[0]), [], [image], api_name="new_scene_image")
    button.click(user_facing(handlers.explain_image), [controls.model, image, *controls.options],
                 [prediction, overlay_a, overlay_b, raw, report, files], api_name="explain_image")


def _image_text_tab(handlers: Handlers, examples: list[str]) -> None:
    config = handlers.config
    scenes = [handlers.book.draw(seed) for seed in EXAMPLE_SEEDS]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            controls = Controls(handlers, "image_text", None)
            image = _image_input(config, "image_text")
            captions = gr.Textbox(label="Captions, one per line", lines=3)
            scene = _scene_button(controls)
            button = gr.Button("Explain", variant="primary")
            gr.Examples([[p, "\n".join(s.captions[:3])] for p, s in zip(examples, scenes)], [image, captions],
                        label="Example scenes (click, then Explain)")
        with gr.Column(scale=7):
            prediction = gr.Label(label="Which caption fits (softmax over the captions)", num_top_classes=8)
            table = gr.Markdown(label="Captions")
            with gr.Row():
                gallery_a = _gallery("Relevance per caption", "tk-image_text-gallery-a", 3)
                gallery_b = _gallery("Relevance per caption (comparison)", "tk-image_text-gallery-b", 3, False)
            with gr.Row():
                page_a = gr.HTML(label="Caption relevance", elem_id="tk-image_text-a")
                page_b = gr.HTML(label="Caption relevance (comparison)", visible=False, elem_id="tk-image_text-b")
            files = _downloads()
    controls.on_model_change(lambda s: [gr.update(visible=s["builtin"])], [scene])
    _compare_toggle(controls.compare, [gallery_b, page_b])
    scene.click(user_facing(lambda: handlers.new_scene("image_text")), [], [image, captions],
                api_name="new_scene_image_text")
    button.click(user_facing(handlers.explain_image_text), [controls.model, image, captions, *controls.options],
                 [prediction, table, gallery_a, gallery_b, page_a, page_b, files], api_name="explain_image_text")


def _vqa_tab(handlers: Handlers, examples: list[str]) -> None:
    config = handlers.config
    scenes = [handlers.book.draw(seed) for seed in EXAMPLE_SEEDS]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            controls = Controls(handlers, "vqa", "Answer to explain")
            image = _image_input(config, "vqa")
            question = gr.Textbox(label="Question", placeholder="what colour is the circle?")
            scene = _scene_button(controls)
            asked = gr.Dropdown([], label="Questions about this scene", visible=False)
            button = gr.Button("Explain", variant="primary")
            gr.Examples([[p, s.questions[0].text] for p, s in zip(examples, scenes)], [image, question],
                        label="Example scenes (click, then Explain)")
        with gr.Column(scale=7):
            prediction = gr.Label(label="Answers (top 5, each scored on its own: ViLT's head is multi-label)",
                                  num_top_classes=5)
            with gr.Row():
                overlay_a = _overlay("Relevance", "tk-vqa-image-a")
                overlay_b = _overlay("Relevance (comparison)", "tk-vqa-image-b", visible=False)
            with gr.Row():
                page_a = gr.HTML(label="Question relevance", elem_id="tk-vqa-a")
                page_b = gr.HTML(label="Question relevance (comparison)", visible=False, elem_id="tk-vqa-b")
            report = gr.Markdown(label="Ground truth", elem_id="tk-vqa-report", elem_classes=["tk-note"])
            files = _downloads()
    controls.on_model_change(lambda s: [gr.update(visible=s["builtin"])], [scene])
    _compare_toggle(controls.compare, [overlay_b, page_b])

    def new_scene():
        picture, first, questions = handlers.new_scene("vqa")
        return picture, first, gr.update(choices=questions, value=first, visible=True)

    scene.click(user_facing(new_scene), [], [image, question, asked], api_name="new_scene_vqa")
    asked.input(lambda q: q, [asked], [question], api_visibility="private", queue=False)
    image.upload(lambda: gr.update(visible=False), [], [asked], api_visibility="private", queue=False)
    button.click(user_facing(handlers.explain_vqa), [controls.model, image, question, *controls.options],
                 [prediction, overlay_a, overlay_b, page_a, page_b, report, files], api_name="explain_vqa")


def _captioning_tab(handlers: Handlers, examples: list[str]) -> None:
    config = handlers.config
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=340):
            controls = Controls(handlers, "captioning", None, with_layers=False)
            image = _image_input(config, "captioning")
            mode = gr.Radio(["Generate a caption", "Explain my caption"], value="Generate a caption", label="Caption")
            caption = gr.Textbox(label="Your caption", placeholder="a red circle left of a blue square")
            scene = _scene_button(controls)
            button = gr.Button("Explain", variant="primary")
            gr.Examples([[p] for p in examples], [image], label="Example scenes (click, then Explain)")
        with gr.Column(scale=7):
            header = gr.Markdown(label="Caption", elem_id="tk-captioning-header")
            with gr.Row():
                gallery_a = _gallery("A map for every token", "tk-captioning-gallery-a", 4)
                gallery_b = _gallery("A map for every token (comparison)", "tk-captioning-gallery-b", 4, False)
            step = gr.Slider(0, 11, value=0, step=1, label="Token to inspect")
            with gr.Row():
                step_a = _overlay("This token's map", "tk-captioning-step-image-a")
                step_b = _overlay("This token's map (comparison)", "tk-captioning-step-image-b", visible=False)
            with gr.Row():
                step_page_a = gr.HTML(label="Earlier tokens' relevance", elem_id="tk-captioning-step-a")
                step_page_b = gr.HTML(label="Earlier tokens' relevance (comparison)", visible=False,
                                      elem_id="tk-captioning-step-b")
            report = gr.Markdown(label="Ground truth", elem_id="tk-captioning-report", elem_classes=["tk-note"])
            files = _downloads()
            state = gr.State()
    controls.on_model_change(lambda s: [gr.update(visible=s["builtin"])], [scene])
    _compare_toggle(controls.compare, [gallery_b, step_b, step_page_b])
    scene.click(user_facing(lambda: handlers.new_scene("captioning")), [], [image, caption],
                api_name="new_scene_captioning")

    def explain_caption(model, path, chosen_mode, text, method, compare):
        result = handlers.explain_caption(model, path, chosen_mode == "Explain my caption", text, method, compare)
        header_md, gallery_first, gallery_second, last, *rest = result
        return (header_md, gallery_first, gallery_second, gr.update(maximum=max(last, 1), value=0), *rest)

    button.click(user_facing(explain_caption), [controls.model, image, mode, caption, *controls.options],
                 [header, gallery_a, gallery_b, step, step_a, step_b, step_page_a, step_page_b, report, files, state],
                 api_name="explain_caption")
    step.release(user_facing(handlers.caption_step_view), [state, step],
                 [step_a, step_b, step_page_a, step_page_b, report], api_name="caption_step")


def _attention_tab(handlers: Handlers) -> None:
    models = handlers.attention_models()
    names = list(models)
    first_kind = models[names[0]][0]
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            model = gr.Dropdown(names, value=names[0], label="Model")
            view = gr.Dropdown(list(VIEW_KINDS[first_kind]), value=VIEW_KINDS[first_kind][0], label="View",
                               allow_custom_value=True, info="head: lines per head; model: every layer and head; "
                               "neuron: queries and keys; image: attention from a patch or [CLS]")
            text_a = gr.Textbox(label="Text", value=VIEW_EXAMPLES[0][0], visible=first_kind == "text")
            text_b = gr.Textbox(label="Second sentence (optional)", visible=first_kind == "text")
            image = _image_input(handlers.config, "attention", visible=first_kind == "image")
            scene = gr.Button("New scene", size="sm", visible=first_kind == "image")
            button = gr.Button("Show attention", variant="primary")
            gr.Examples(VIEW_EXAMPLES, [text_a, text_b], label="Examples", example_labels=VIEW_EXAMPLE_NAMES)
        with gr.Column(scale=8):
            page = gr.HTML(label="Attention view", elem_id="tk-attention-view")

    def switch(choice: str):
        kind = models[choice][0]
        builtin = handlers.config.entry(*models[choice]).is_builtin
        return (gr.update(choices=list(VIEW_KINDS[kind]), value=VIEW_KINDS[kind][0]),
                gr.update(visible=kind == "text"), gr.update(visible=kind == "text"),
                gr.update(visible=kind == "image"), gr.update(visible=kind == "image" and builtin))

    model.change(switch, [model], [view, text_a, text_b, image, scene], api_visibility="private", queue=False)
    scene.click(user_facing(lambda: handlers.new_scene("image")[0]), [], [image], api_visibility="private")
    button.click(user_facing(handlers.attention_view), [model, view, text_a, text_b, image], [page],
                 api_name="attention_view")


def _methods_table() -> str:
    rows = "\n".join(f"| `{name}` | {summary} |" for name, summary in list_methods(details=True).items())
    return ("| method | what it computes |\n| --- | --- |\n" + rows + "\n\nChefer, Gur & Wolf: *Transformer "
            "Interpretability Beyond Attention Visualization* (CVPR 2021) and *Generic Attention-model "
            "Explainability* (ICCV 2021); rollout: Abnar & Zuidema (2020).")


def build_app(config: DemoConfig | None = None, *, preload: bool = False,
              handlers: Handlers | None = None) -> gr.Blocks:
    """The demo for ``config`` (the built-in models by default), queued under its serving limits. Launch it with
    :func:`toolkit.demo.serve`, or ``app.launch(**launch_options(config))``."""
    config = config or DemoConfig()
    handlers = handlers or Handlers(config)
    if preload:
        handlers.cache.preload()
    builders = {"text": _text_tab, "image": _image_tab, "image_text": _image_text_tab, "vqa": _vqa_tab,
                "captioning": _captioning_tab}
    with gr.Blocks(title=config.title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {config.title}\n{INTRO}\n\nExplanations run on the {describe(default_device())}.",
                    elem_id="tk-header")
        examples = _example_scenes(handlers)
        with gr.Tabs():
            for tab, build in builders.items():
                if config.models(tab):
                    with gr.Tab(TAB_TITLES[tab], id=tab):
                        build(handlers) if tab == "text" else build(handlers, examples)
            if config.attention_views and handlers.attention_models():
                with gr.Tab("Attention views", id="attention"):
                    _attention_tab(handlers)
        with gr.Accordion("About the methods", open=False):
            gr.Markdown(_methods_table())
    app.queue(default_concurrency_limit=config.serving.concurrency_limit, max_size=config.serving.queue_size)
    return app
