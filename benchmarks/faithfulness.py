"""Faithfulness of every registered method on the toolkit's models, with each method's cost relative to generic.

Runs :func:`toolkit.evaluation.suite.run_suite`: the pretrained MiniLM (zero-shot topics on short texts, sentence
similarity on both sides of sentence pairs), every built-in scene model (vit, clip, vilt, captioner) and the scene
language model (lm), ``--count`` decisions each; prints one table (mean ± 95% CI per metric, cost) and saves
faithfulness.json and faithfulness.txt in ``--out``. Methods come from the registry, so new ones are measured too.

    python benchmarks/faithfulness.py [--count 40] [--models vit,lm] [--methods generic,rollout] [--out faithfulness]
"""
from __future__ import annotations

import argparse

import torch

from toolkit.evaluation.suite import SCENE_MODELS, run_suite

MODELS = ("minilm-zero-shot", "minilm-similarity", *SCENE_MODELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="decisions per model (similarity: count / 2 pairs)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--methods", help="comma-separated (default: every registered method)")
    parser.add_argument("--batch-size", type=int, default=64, help="perturbed inputs per forward")
    parser.add_argument("--out", default="faithfulness")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the costs are ratios; one thread keeps them steady on a shared machine
    methods = args.methods.split(",") if args.methods else None
    run_suite(args.count, methods, args.out, models=tuple(args.models.split(",")), batch_size=args.batch_size)


if __name__ == "__main__":
    main()
