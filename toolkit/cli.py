"""Command line: ``python -m toolkit explain ...`` — a thin layer over :class:`toolkit.Explainer`."""
from __future__ import annotations

import argparse
import html
import sys
import warnings
from pathlib import Path

import numpy as np

from . import Explainer, ToolkitError, list_methods, loading, render, supported_families, zoo
from .errors import ConfigError, ToolkitWarning
from .paths import output_folder
from .multimodal import MultimodalAdapter
from .multimodal.clip import pair_grid
from .multimodal.vilt import pair_up


OFFLINE_MODEL = "minilm-zero-shot"
# The keyword each image-text task takes with --image (captioners generate a caption when none is given).
IMAGE_TEXT_INPUTS = {"image-text similarity": "text", "visual question answering": "question",
                     "image captioning": "caption"}


def _parse_labels(spec: str | None) -> dict[str, str] | None:
    """'positive=I loved it;negative=I hated it' or 'positive,negative' (the name serves as description), checked
    by :func:`toolkit.zero_shot.checked_labels`."""
    if spec is None:
        return None
    from .zero_shot import checked_labels

    separator = ";" if ";" in spec or "=" in spec else ","
    pairs = [part.strip().partition("=")[::2] for part in spec.split(separator) if part.strip()]
    return checked_labels(pairs, f"--labels {spec!r}" if not pairs else "--labels", "=",
                          "'positive=I loved it;negative=I hated it' or 'positive,negative'")


def _load(args) -> Explainer:
    if args.family and (args.model == OFFLINE_MODEL or args.model in zoo.MODULES):
        raise ToolkitError(f"--family declares the layout of a model the toolkit does not know; --model {args.model} "
                           "is built in and already declared.")
    if args.model == OFFLINE_MODEL:
        from .zero_shot import ZeroShotTextClassifier, bundled_minilm_path

        model, tokenizer = ZeroShotTextClassifier.from_pretrained(bundled_minilm_path(), _parse_labels(args.labels))
        return Explainer(model, tokenizer, name=OFFLINE_MODEL)
    if args.labels:
        raise ToolkitError("--labels only applies to the built-in zero-shot model; a classifier has its own labels.")
    if args.model in zoo.MODULES:
        if args.random_weights or args.source != "auto":
            raise ToolkitError(f"--model {args.model} is a built-in model with its own weights: "
                               "--source and --random-weights do not apply.")
        return Explainer(*zoo.load(args.model), name=args.model)
    source = loading.guess_source(args.model) if args.source == "auto" else args.source
    kwargs = {}
    if args.random_weights:
        if source not in ("timm", "open_clip"):
            raise ToolkitError("--random-weights applies to timm and open_clip models (random weights, no "
                               f"download); {args.model!r} is loaded from {source!r} with its own weights.")
        kwargs["pretrained"] = None if source == "open_clip" else False
    return Explainer.from_pretrained(args.model, source=source, family=args.family, **kwargs)


def _positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _bars(scores, width: int = 24) -> tuple[list[str], str]:
    """Text bars from zero, like the HTML view: length |score| / max |score| ('+' positive, '-' negative),
    and a legend line giving the scale."""
    scores = np.asarray(scores, dtype=np.float64)
    scale = render.colour_scale(scores)
    lengths = np.abs(scale.strengths(scores))
    bars = [("+" if s >= 0 else "-") * int(round(width * n)) for s, n in zip(scores, lengths)]
    legend = f"bars from zero: {width} marks = {scale.peak:.4g} (the largest |score|)"
    return bars, legend + ("; flat: the scores hardly differ" if scale.flat else "")


def explain_command(args) -> int:
    inputs = args.text or args.image
    for keyword in ("question", "caption"):
        if getattr(args, keyword) and not args.image:
            raise ToolkitError(f"--{keyword} goes with --image PATH: the image the {keyword} is about.")
    if not inputs:
        raise ToolkitError("Give something to explain: --text 'some text' (repeatable) or --image PATH (repeatable); "
                           "image-text models take --image with --text (CLIP), --question (VQA) or --caption.")
    out = output_folder(args.out, "--out")
    explainer = _load(args)
    if isinstance(explainer.adapter, MultimodalAdapter):
        return explain_image_text(explainer, args, out)
    _check_classifier_inputs(explainer, args)
    method = explainer.default_method if args.method == "auto" else args.method
    target = args.target  # a label (or answer) name, or digits: the library tells them apart
    explanations = explainer.explain(list(inputs), method=method, target=target, start_layer=args.start_layer,
                                     batch_size=args.batch_size)
    sections = []
    for index, exp in enumerate(explanations):
        print(f"\n[{index}] {explainer.name} | {method} | predicted/target: {exp.label} (p={exp.probability:.3f})")
        stem = out / f"explanation_{index:03d}"
        exp.save(stem.with_suffix(".npz"))
        if exp.heatmap is not None:
            exp.overlay(colour_bar=True, on=_overlay_on(args)).save(stem.with_suffix(".png"))
            print(f"    heatmap {exp.heatmap.shape} -> {stem.with_suffix('.png')}")
            sections.append(render.heading_html({"Image": str(inputs[index]), **exp.heading()})
                            + f'<img src="{stem.with_suffix(".png").name}" width="336">')
        else:
            pieces, scores = (exp.words, exp.word_scores) if exp.words is not None else (exp.tokens, exp.scores)
            bars, legend = _bars(scores)
            rows = sorted(zip(pieces, scores, bars), key=lambda row: -float(row[1]))
            for piece, score, bar in rows[: args.top]:
                print(f"    {piece:>20s} {float(score):+.4f} {bar}")
            print(f"    ({legend})")
            sections.append(exp.to_html())
    _save_page(out, sections, len(explanations))
    return 0


def _overlay_on(args) -> str:
    """Where overlays are drawn: on the image as given (--on-original) or on the model's view of it."""
    return "original" if args.on_original else "view"


def _save_page(out: Path, sections: list[str], count: int) -> None:
    page = out / "index.html"
    page.write_text('<!doctype html><meta charset="utf-8"><title>Explanations</title>'
                    '<body style="font-family:sans-serif;max-width:900px;margin:auto">'
                    + "".join(f"<section>{s}</section><hr>" for s in sections) + "</body>")
    print(f"\nSaved {count} explanation(s) (.npz) and a page to open in a browser: {page}")


def _check_classifier_inputs(explainer: Explainer, args) -> None:
    """A classifier reads texts or images, not questions or captions, and not both kinds at once."""
    for keyword, models in (("question", "visual question answering models such as --model vilt"),
                            ("caption", "captioning models such as --model captioner")):
        if getattr(args, keyword):
            raise ToolkitError(f"--{keyword} is for {models}; {explainer.name} is {explainer.adapter.kind}.")
    if args.start_layer_text is not None:
        raise ToolkitError("--start-layer-text is the text tower's start layer of an image-text model such as "
                           f"--model clip; {explainer.name} has one stack: use --start-layer.")
    if args.text and args.image:
        raise ToolkitError(f"{explainer.name} is {explainer.adapter.kind}: give --text or --image, not both "
                           "(--text with --image is for image-text models such as --model clip).")
    given = "text" if args.text else "image"
    if given != explainer.adapter.modality:
        raise ToolkitError(f"{explainer.name} explains {explainer.adapter.modality}s, not {given}s: give "
                           f"--{explainer.adapter.modality} instead, or a model for {given}s "
                           f"({'--model vit' if given == 'image' else f'--model {OFFLINE_MODEL}'}).")


# --- image-text models: CLIP (--text), VQA (--question), captioning (--caption, or none to generate) ------
def explain_image_text(explainer: Explainer, args, out: Path) -> int:
    """Explain each (image, text / question / caption) pair; print what the model said about it, and save
    each explanation (.npz), its overlays (.png) and a page in ``out``."""
    task = explainer.adapter.task
    keyword = IMAGE_TEXT_INPUTS[task]
    given = {name: getattr(args, name) for name in ("text", "question", "caption") if getattr(args, name)}
    wrong = sorted(set(given) - {keyword})
    if wrong:
        raise ToolkitError(f"--{wrong[0]} does not apply to {explainer.name} ({task}): it takes --image with "
                           f"--{keyword}.")
    if not args.image:
        raise ToolkitError(f"{explainer.name} ({task}) explains images: give --image PATH (repeatable) with "
                           f"--{keyword} '...'.")
    if keyword != "caption" and keyword not in given:
        raise ToolkitError(f"{explainer.name} ({task}) needs --{keyword} '...' (repeatable) with --image: "
                           + ("the texts to compare each image with." if keyword == "text"
                              else "the question to answer about each image."))
    images, values = list(args.image), given.get(keyword)
    if keyword == "caption" and values is not None and len(values) == 1:
        values = values[0]  # one caption for every image
    results = explainer.explain(image=images, method=args.method, target=args.target,
                                start_layer=args.start_layer, **({keyword: values} if values is not None else {}),
                                **({} if args.start_layer_text is None else {"start_layer_text": args.start_layer_text}))
    if keyword == "text":
        owners = [i for i, _ in pair_grid(images, values)]
    elif keyword == "question":
        owners = [i for i, _ in pair_up(len(images), len(values))]
    else:
        owners = list(range(len(images)))
    sections = []
    for index, (exp, owner) in enumerate(zip(results, owners)):
        stem = out / f"explanation_{index:03d}"
        exp.save(stem.with_suffix(".npz"))
        heading = _image_text_heading(exp, images[owner])
        print(f"\n[{index}] {explainer.name} | {exp.method} | {heading}")
        figures = []
        if exp.heatmap is not None:
            exp.overlay(colour_bar=True, on=_overlay_on(args)).save(stem.with_suffix(".png"))
            figures.append(_figure(stem.with_suffix(".png").name, "relevance of the image" if exp.steps is None
                                   else "image relevance, mean over the caption's tokens"))
            print(f"    image relevance {exp.heatmap.shape} -> {stem.with_suffix('.png')}; "
                  f"peak at patch {_peak(exp.heatmap)}")
        if exp.steps is not None:
            scale = exp.caption_scale() if exp.steps else None  # one scale: a weak step looks weak
            for number, step in enumerate(exp.steps):
                path = out / f"{stem.name}_token{number:02d}.png"
                exp.caption_step(number).overlay(colour_bar=True, on=_overlay_on(args), scale=scale).save(path)
                figures.append(_figure(path.name, step.token))
                print(f"    {step.token:>14s} p={np.exp(step.log_prob):.3f}  image peak at patch "
                      f"{_peak(step.heatmap)}  {_strongest_context(step)}")
        else:
            content = [k for k in range(len(exp.tokens)) if not _is_special(exp, k, explainer)]
            strongest = sorted(content, key=lambda k: -float(exp.scores[k]))[: args.top]
            print("    text relevance: " + ", ".join(f"{exp.tokens[k]} {float(exp.scores[k]):+.4f}" for k in strongest))
        text_side = exp.to_html()
        sections.append(f"<h3>{html.escape(heading)}</h3>{text_side}"
                        f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(figures)}</div>')
    _save_page(out, sections, len(results))
    return 0


def _image_text_heading(exp, image: str) -> str:
    if exp.similarity is not None:
        return (f"{image} | text {exp.text!r}: similarity {exp.similarity:.3f} "
                f"(p={exp.probability:.3f} among the texts given for this image)")
    if exp.answer is not None:
        return f"{image} | question {exp.text!r} -> answer {exp.answer!r} (p={exp.probability:.3f})"
    return f"{image} | caption {exp.caption!r} (p={exp.probability:.3f}, {len(exp.steps or [])} tokens explained)"


def _is_special(exp, index: int, explainer: Explainer) -> bool:
    """Whether token ``index`` is a special token ([CLS], [SEP], ...), which the printed summary leaves out."""
    if exp.special_tokens is not None:
        return bool(exp.special_tokens[index])
    tokenizer = getattr(explainer.adapter.processor, "tokenizer", None)
    return exp.tokens[index] in set(getattr(tokenizer, "all_special_tokens", ()))


def _strongest_context(step) -> str:
    """The most relevant earlier caption token, leaving out the position the step is read at (its own row
    of the relevance map, which holds the identity's share)."""
    context = step.text_scores[:-1]
    if not context.size:
        return "no earlier token"
    if not np.any(context):
        return "strongest earlier token: none (all zero)"
    best = int(np.argmax(context))
    return f"strongest earlier token: {step.text_tokens[best]} ({float(context[best]):+.3f})"


def _figure(source: str, caption: str) -> str:
    return (f'<figure style="margin:0;text-align:center"><img src="{html.escape(source)}" width="256">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of the largest relevance on the patch grid."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(column)


def benchmark_command(args) -> int:
    """Every method on every built-in model over held-out scenes: ground-truth and perturbation metrics."""
    from .evaluation.benchmark import BenchmarkSettings, run_benchmark

    flags = {key: getattr(args, key) for key in ("scenes", "out", "models", "methods", "seed")
             if getattr(args, key) is not None}
    settings = BenchmarkSettings.from_yaml(args.config, **flags) if args.config else BenchmarkSettings(**flags)
    run_benchmark(settings)
    print(f"\nSaved benchmark.csv, benchmark.json, benchmark.txt and comparisons.csv in {settings.out}")
    return 0


def run_command(args) -> int:
    """A config-driven batch run (toolkit.runs): explain a dataset, resumable, sharded, local or on Ray."""
    from .runs.config import documentation
    from .runs.runner import run

    if args.keys:
        print(documentation())
        return 0
    if args.config is None:
        raise ToolkitError("run needs a config file: python -m toolkit run CONFIG.yaml (see configs/; --keys lists "
                           "its keys)")
    mode = "restart" if args.restart else "resume" if args.resume else "auto"
    run(args.config, args.set or [], args.shard, mode)
    return 0


def report_command(args) -> int:
    from .runs.report import write_report

    print(f"Wrote {write_report(args.folder)}")
    return 0


def evaluate_command(args) -> int:
    """Faithfulness of methods on a model and data (token / patch deletion, ERASER, ground truth), or --suite."""
    from .evaluation import faithfulness, suite

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else faithfulness.METRICS
    if args.suite:
        suite.run_suite(args.count or 40, methods, args.out, batch_size=args.batch_size)
        return 0
    if not args.data:
        raise ToolkitError("Give --data: a folder of images, a text file (one text per line), a CSV file with a "
                           f"'text' column, or 'scenes' with a built-in model ({', '.join(suite.SCENE_MODELS)}); "
                           "or --suite.")
    if args.data == "scenes":
        explainer, items = suite.scene_items(args.model, args.count or 40)
    else:
        explainer = _load(args)
        keywords = ({key: value for key in ("text", "question") if (value := getattr(args, key))}
                    if isinstance(explainer.adapter, MultimodalAdapter) else None)
        items = suite.read_data(args.data, keywords)[:args.count]
    folder = output_folder(args.out, "--out")
    evaluation = faithfulness.evaluate(explainer, items, methods, metrics, batch_size=args.batch_size,
                                       removal=args.removal)
    print(evaluation.table(reference=evaluation.methods[0] if evaluation.methods else None))
    (folder / "faithfulness.json").write_text(suite.json.dumps(suite.suite_json({explainer.name: evaluation}),
                                                              indent=1, default=suite._jsonable))
    print(f"\nSaved faithfulness.json in {folder}")
    return 0


def bench_command(args) -> int:
    """Speed and memory of every method against one forward and one backward of the same model."""
    from .bench import BenchSettings, format_table, run_bench

    def names(value):
        return tuple(part.strip() for part in value.split(",") if part.strip())

    options = dict(repeats=args.repeats, device=args.device, dtype=args.dtype, memory=not args.no_memory,
                   evaluation=not args.no_evaluation, threads=args.threads, out=args.out)
    if args.models:
        options["models"] = names(args.models)
    if args.methods:
        options["methods"] = names(args.methods)
    if args.batch_sizes:
        try:
            options["batch_sizes"] = tuple(int(size) for size in names(args.batch_sizes))
        except ValueError:
            raise ConfigError(f"--batch-sizes takes comma-separated integers; got {args.batch_sizes!r}.") from None
    settings = BenchSettings(**options)
    report = run_bench(settings, say=lambda line: print(line, file=sys.stderr))
    print(format_table(report))
    if settings.out:
        print(f"\nSaved {settings.out}")
    return 0


def demo_command(args) -> int:
    """The Gradio demo on the built-in models (or a config's), until interrupted."""
    from .demo import load_config, serve

    serve(load_config(args.config), server_name=args.server_name, server_port=args.server_port, share=args.share,
          preload=args.preload)
    return 0


def export_space_command(args) -> int:
    from .demo import export_space, load_config

    folder = export_space(args.folder, load_config(args.config), overwrite=args.force)
    print(f"Wrote a Hugging Face Space to {folder}: push it to a Space repository (sdk: gradio), or run it here "
          f"with `cd {folder} && python app.py`.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolkit", description="Explain transformer predictions.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain texts or images with a model")
    explain.add_argument("--model", default=OFFLINE_MODEL,
                         help=f"a built-in model ({', '.join(zoo.MODULES)}: scene models that work offline), a hub "
                              f"name, local folder, timm or open_clip name (default: {OFFLINE_MODEL}, a zero-shot "
                              "classifier over the MiniLM encoder shipped on PyPI; works offline)")
    explain.add_argument("--source", default="auto", choices=["auto", "hf", "timm", "open_clip"])
    explain.add_argument("--family", help="a YAML file declaring the layout of a model the toolkit does not know "
                                          "(see the README: 'A model the toolkit does not know')")
    explain.add_argument("--text", action="append", help="a text to explain (repeatable); with --image, the texts "
                                                          "CLIP compares each image with")
    explain.add_argument("--image", action="append", help="an image file to explain (repeatable)")
    explain.add_argument("--question", action="append", help="with --image: a question for a VQA model (repeatable)")
    explain.add_argument("--caption", action="append", help="with --image: the caption a captioner explains "
                                                             "(one for all images, or one per image; default: "
                                                             "the caption it generates)")
    explain.add_argument("--method", choices=["auto", *list_methods()], default="auto",
                         help="default: auto, the model's own (the measured best that applies to it)")
    explain.add_argument("--target", help="class index or label name, or a VQA answer (default: the predicted one)")
    explain.add_argument("--labels", help="zero-shot labels: 'positive=I loved it;negative=I hated it'")
    explain.add_argument("--start-layer", type=int, default=0, help="first layer of the propagation (CLIP: of the "
                                                                   "image tower; negative counts from the last)")
    explain.add_argument("--start-layer-text", type=int, help="CLIP: first layer of the text tower (default 0)")
    explain.add_argument("--batch-size", type=_positive, default=16)
    explain.add_argument("--top", type=_positive, default=8, help="how many words to print")
    explain.add_argument("--random-weights", action="store_true",
                         help="timm and open_clip: random weights (no download)")
    explain.add_argument("--on-original", action="store_true",
                         help="draw the overlays on the image as given, at its own size (default: on the model's "
                              "view of it, resized and cropped)")
    explain.add_argument("--out", default="explanations", help="folder for .npz, .png and index.html")
    benchmark = commands.add_parser("benchmark", help="score every method on the built-in models against "
                                                      "the scenes' ground truth")
    benchmark.add_argument("--config", help="YAML file whose keys are the options below (flags win)")
    benchmark.add_argument("--scenes", type=int, help="held-out scenes per model (default 100)")
    benchmark.add_argument("--out", help="folder for the csv, json and txt tables (default: benchmark)")
    benchmark.add_argument("--models", help="comma-separated, from vit,clip,vilt,captioner (default: all)")
    benchmark.add_argument("--methods", help="comma-separated (default: all; each model gets those it supports)")
    benchmark.add_argument("--seed", type=int, help="seed of the held-out scenes (default 3)")
    run = commands.add_parser("run", help="a batch run from a YAML config: explain and evaluate a dataset")
    run.add_argument("config", nargs="?", help="the run's YAML file (examples in configs/)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a value of the config, e.g. --set data.limit=500 --set methods=[generic,rollout]")
    run.add_argument("--shard", metavar="I/N", help="run the I-th of N shards (1-based) into the same folder")
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="insist on resuming a run started before")
    resume.add_argument("--restart", action="store_true", help="delete the folder's results (even of another "
                                                                "config) and start over")
    run.add_argument("--keys", action="store_true", help="list every key of a run config and exit")
    report = commands.add_parser("report", help="the HTML report of a run folder (every shard merged)")
    report.add_argument("folder", help="the run's output folder")
    evaluate = commands.add_parser("evaluate", help="how faithful each method is on a model and data: token and "
                                                    "patch deletion, ERASER, ground truth where the data has it")
    evaluate.add_argument("--model", default=OFFLINE_MODEL, help="as for explain (default: the zero-shot MiniLM)")
    evaluate.add_argument("--data", help="a folder of images, a text file (one text or prompt per line), a CSV file "
                                         "with a 'text' column (and 'target'), or 'scenes' (a built-in model's "
                                         "held-out decisions with their ground truth)")
    evaluate.add_argument("--methods", help="comma-separated (default: every method that applies; random adds the "
                          "random baseline)")
    evaluate.add_argument("--metrics", help="comma-separated, from morf_auc,lerf_auc,lerf_minus_morf,"
                                            "comprehensiveness,sufficiency,mass_accuracy,rank_accuracy,pointing_game")
    evaluate.add_argument("--count", type=_positive, help="how many items (default: all; scenes and --suite: 40)")
    evaluate.add_argument("--text", help="with a folder of images and CLIP: the text each image is compared with")
    evaluate.add_argument("--question", help="with a folder of images and a VQA model: the question asked of each")
    evaluate.add_argument("--labels", help="zero-shot labels: 'positive=I loved it;negative=I hated it'")
    evaluate.add_argument("--removal", choices=["drop", "mask"], default="drop",
                          help="tokens removed by deleting them (default) or replacing them with the mask token")
    evaluate.add_argument("--batch-size", type=_positive, default=64, help="perturbed inputs per forward")
    evaluate.add_argument("--suite", action="store_true", help="every method on MiniLM (zero-shot labels, sentence "
                                                               "similarity), the scene models and the scene LM")
    evaluate.add_argument("--out", default="faithfulness", help="folder for faithfulness.json (and the suite's table)")
    evaluate.set_defaults(source="auto", family=None, random_weights=False)
    bench = commands.add_parser("bench", help="speed and peak memory of every method against one forward and one "
                                              "backward of the same model (full-size random weights, offline)")
    bench.add_argument("--models", help="comma-separated (default: all): vit-b16-timm, vit-b16-hf, bert-base-128, "
                                        "bert-base-512, clip-b32, vilt-vqa, blip-caption, llama-100m; tiny-vit and "
                                        "tiny-lm check the bench itself in seconds")
    bench.add_argument("--methods", help="comma-separated (default: every registered method; each model gets those "
                                         "that apply, the others are listed with the reason)")
    bench.add_argument("--batch-sizes", help="comma-separated (default: 1,8,32; larger ones are left out after one "
                                             "runs out of memory)")
    bench.add_argument("--repeats", type=_positive, default=3, help="timed rounds after a warm-up (default 3)")
    bench.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    bench.add_argument("--dtype", default="float32", help="float32, bfloat16 (CPU, and GPUs that have it) or "
                                                          "float16 (CUDA)")
    bench.add_argument("--threads", type=_positive, help="CPU threads (default: torch's)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    bench.add_argument("--no-evaluation", action="store_true", help="skip the perturbation-curve cost")
    bench.add_argument("--out", default="bench.json", help="JSON file for the figures (default: bench.json)")
    demo = commands.add_parser("demo", help="launch the Gradio demo (offline on the built-in models)")
    demo.add_argument("--config", help="YAML file: the models of each tab (text, image, image_text, vqa, "
                                       "captioning) and serving limits")
    demo.add_argument("--server-name", help="address to listen on (Gradio's default: 127.0.0.1, or "
                                            "GRADIO_SERVER_NAME); 0.0.0.0 serves the network")
    demo.add_argument("--server-port", type=int, help="port (Gradio's default: 7860, or GRADIO_SERVER_PORT)")
    demo.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    demo.add_argument("--preload", action="store_true", help="load every model before serving (else on first use)")
    space = commands.add_parser("export-space", help="write a folder ready to push to a Hugging Face Space")
    space.add_argument("folder", help="new (or empty) folder for the Space")
    space.add_argument("--config", help="YAML file of the demo to export (default: the built-in models)")
    space.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    commands.add_parser("methods", help="list the explanation methods")
    commands.add_parser("models", help="list the supported model families")
    return parser


def _show_toolkit_warnings(show):
    """``warnings.showwarning`` that prints the toolkit's warnings as ``warning: ...`` lines (no source file and
    line: they are about the user's input, not the code), and others as ``show`` does."""
    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ToolkitWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show = warnings.showwarning
    warnings.showwarning = _show_toolkit_warnings(show)
    try:
        if args.command == "explain":
            return explain_command(args)
        if args.command == "benchmark":
            return benchmark_command(args)
        if args.command == "run":
            return run_command(args)
        if args.command == "report":
            return report_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "bench":
            return bench_command(args)
        if args.command == "demo":
            return demo_command(args)
        if args.command == "export-space":
            return export_space_command(args)
        if args.command == "methods":
            for name, summary in list_methods(details=True).items():
                print(f"{name:24s} {summary}")
        else:
            print("\n".join(supported_families()))
        return 0
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
