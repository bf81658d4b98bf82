"""Command line: ``python -m toolkit explain ...`` — a thin layer over :class:`toolkit.Explainer`."""
from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import numpy as np

from . import Explainer, ToolkitError, list_methods, supported_families
from .render import colour_scale

OFFLINE_MODEL = "minilm-zero-shot"


def _parse_labels(spec: str | None) -> dict[str, str] | None:
    """'positive=I loved it;negative=I hated it' or 'positive,negative' (the name serves as description)."""
    if not spec:
        return None
    separator = ";" if ";" in spec or "=" in spec else ","
    labels = {}
    for item in filter(None, (part.strip() for part in spec.split(separator))):
        name, _, description = item.partition("=")
        labels[name.strip()] = description.strip() or name.strip()
    return labels


def _load(args) -> Explainer:
    if args.model == OFFLINE_MODEL:
        from .zero_shot import ZeroShotTextClassifier, bundled_minilm_path

        model, tokenizer = ZeroShotTextClassifier.from_pretrained(bundled_minilm_path(), _parse_labels(args.labels))
        return Explainer(model, tokenizer, name=OFFLINE_MODEL)
    if args.labels:
        raise ToolkitError("--labels only applies to the built-in zero-shot model; a classifier has its own labels.")
    kwargs = {"pretrained": False} if args.random_weights else {}
    return Explainer.from_pretrained(args.model, source=args.source, **kwargs)


def _bars(scores, width: int = 24) -> tuple[list[str], str]:
    """Text bars from zero, like the HTML view: length |score| / max |score| ('+' positive, '-' negative),
    and a legend line giving the scale."""
    scores = np.asarray(scores, dtype=np.float64)
    scale = colour_scale(scores)
    lengths = np.abs(scale.strengths(scores))
    bars = [("+" if s >= 0 else "-") * int(round(width * n)) for s, n in zip(scores, lengths)]
    legend = f"bars from zero: {width} marks = {scale.peak:.4g} (the largest |score|)"
    return bars, legend + ("; flat: the scores hardly differ" if scale.flat else "")


def explain_command(args) -> int:
    inputs = args.text or args.image
    if not inputs:
        raise ToolkitError("Give something to explain: --text 'some text' (repeatable) or --image PATH (repeatable).")
    if args.text and args.image:
        raise ToolkitError("Give either --text or --image, not both: one model explains one kind of input.")
    explainer = _load(args)
    method = args.method or explainer.default_method
    target = None if args.target is None else (int(args.target) if args.target.isdigit() else args.target)
    explanations = explainer.explain(list(inputs), method=method, target=target, start_layer=args.start_layer,
                                     batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for index, exp in enumerate(explanations):
        print(f"\n[{index}] {explainer.name} | {method} | predicted/target: {exp.label} (p={exp.probability:.3f})")
        stem = out / f"explanation_{index:03d}"
        exp.save(stem.with_suffix(".npz"))
        if exp.heatmap is not None:
            exp.overlay().save(stem.with_suffix(".png"))
            print(f"    heatmap {exp.heatmap.shape} -> {stem.with_suffix('.png')}")
            sections.append(f'<h3>{html.escape(str(inputs[index]))}: {html.escape(exp.label)} '
                            f'(p={exp.probability:.3f})</h3><img src="{stem.with_suffix(".png").name}" width="336">')
        else:
            pieces, scores = (exp.words, exp.word_scores) if exp.words is not None else (exp.tokens, exp.scores)
            bars, legend = _bars(scores)
            rows = sorted(zip(pieces, scores, bars), key=lambda row: -float(row[1]))
            for piece, score, bar in rows[: args.top]:
                print(f"    {piece:>20s} {float(score):+.4f} {bar}")
            print(f"    ({legend})")
            sections.append(exp.to_html())
    page = out / "index.html"
    page.write_text('<!doctype html><meta charset="utf-8"><title>Explanations</title>'
                    '<body style="font-family:sans-serif;max-width:900px;margin:auto">'
                    + "".join(f"<section>{s}</section><hr>" for s in sections) + "</body>")
    print(f"\nSaved {len(explanations)} explanation(s) (.npz) and a page to open in a browser: {page}")
    return 0


def benchmark_command(args) -> int:
    """Every method on every built-in model over held-out scenes: ground-truth and perturbation metrics."""
    from .evaluation.benchmark import BenchmarkSettings, run_benchmark

    flags = {key: getattr(args, key) for key in ("scenes", "out", "models", "methods", "seed")
             if getattr(args, key) is not None}
    settings = BenchmarkSettings.from_yaml(args.config, **flags) if args.config else BenchmarkSettings(**flags)
    run_benchmark(settings)
    print(f"\nSaved benchmark.csv, benchmark.json, benchmark.txt and comparisons.csv in {settings.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolkit", description="Explain transformer predictions.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="explain texts or images with a model")
    explain.add_argument("--model", default=OFFLINE_MODEL,
                         help=f"hub name, local folder or timm name (default: {OFFLINE_MODEL}, a zero-shot "
                              "classifier over the MiniLM encoder shipped on PyPI; works offline)")
    explain.add_argument("--source", default="auto", choices=["auto", "hf", "timm"])
    explain.add_argument("--text", action="append", help="a text to explain (repeatable)")
    explain.add_argument("--image", action="append", help="an image file to explain (repeatable)")
    explain.add_argument("--method", choices=list_methods(),
                         help="default: the model's own (transformer_attribution where LRP applies, else generic)")
    explain.add_argument("--target", help="class index or label name (default: the predicted class)")
    explain.add_argument("--labels", help="zero-shot labels: 'positive=I loved it;negative=I hated it'")
    explain.add_argument("--start-layer", type=int, default=0)
    explain.add_argument("--batch-size", type=int, default=16)
    explain.add_argument("--top", type=int, default=8, help="how many words to print")
    explain.add_argument("--random-weights", action="store_true", help="timm: random weights (no download)")
    explain.add_argument("--out", default="explanations", help="folder for .npz, .png and index.html")
    benchmark = commands.add_parser("benchmark", help="score every method on the built-in models against "
                                                      "the scenes' ground truth")
    benchmark.add_argument("--config", help="YAML file whose keys are the options below (flags win)")
    benchmark.add_argument("--scenes", type=int, help="held-out scenes per model (default 100)")
    benchmark.add_argument("--out", help="folder for the csv, json and txt tables (default: benchmark)")
    benchmark.add_argument("--models", help="comma-separated, from vit,clip,vilt,captioner (default: all)")
    benchmark.add_argument("--methods", help="comma-separated (default: all; each model gets those it supports)")
    benchmark.add_argument("--seed", type=int, help="seed of the held-out scenes (default 3)")
    commands.add_parser("methods", help="list the explanation methods")
    commands.add_parser("models", help="list the supported model families")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "explain":
            return explain_command(args)
        if args.command == "benchmark":
            return benchmark_command(args)
        if args.command == "methods":
            for name, summary in list_methods(details=True).items():
                print(f"{name:24s} {summary}")
        else:
            print("\n".join(supported_families()))
        return 0
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
