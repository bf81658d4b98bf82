"""The alpha1-beta0 linear rule of the LRP pass, before and after its three-product form, side by side.

    python benchmarks/lrp_linear_rule.py time --model vit-b16-hf --batch 8 --methods lrp,transformer_attribution
    python benchmarks/lrp_linear_rule.py deviation --model vit-b16-hf --batch 2

``time``: in one process, the floor (:func:`toolkit.bench.measure.floor_pass`) and each method with the linear
rule as it was (the sign-split sums, four products: ``lrp._alpha1_beta0_split``) and as it is (three products from
the recorded output), interleaved round by round as the bench times methods (``interleaved``: the floor first in
each round, the others' order turning; the results in ``benchmarks/results`` were taken with the floor timed first
and last in each round). Prints, per method, the median over rounds of its time over the same round's floor and
of the new over the previous time, in wall-clock and in process CPU time (one thread: what other work on a shared
machine moves least). ``deviation``: the methods' scores in float32 and float64 under both rules against the float64
scores of the previous rule (max |difference| over max |score|, per sample). Prints figures only.
"""
from __future__ import annotations

import argparse
import functools
import json
import warnings

import numpy as np
import torch

from toolkit.bench.instances import build
from toolkit.bench.measure import floor_pass, interleaved, median_ratio
from toolkit.core import lrp, propagation
from toolkit.core.lrp import working

THREE_PRODUCTS = propagation._linear_relevance


def four_products(linear, call, relevance, rules=lrp.CVPR2021_RULES):
    """The CVPR 2021 rule as it was: x+ W+ and x- W- summed apart, x W^T not read from the recorded output (the
    methods timed here use that rule set)."""
    assert rules is lrp.CVPR2021_RULES, "the previous form is that of the CVPR 2021 rules only"
    return lrp._alpha1_beta0_split(working(call.input), working(linear.weight), relevance)


RULES = {"previous": four_products, "new": THREE_PRODUCTS}


def explain(instance, method: str, rule: str):
    propagation._linear_relevance = RULES[rule]
    try:
        return instance.explain(method)
    finally:
        propagation._linear_relevance = THREE_PRODUCTS


def compare_times(instance, methods: list[str], rounds: int) -> dict:
    runs = {"floor": lambda: floor_pass(instance)}
    runs.update({f"{m} {rule}": functools.partial(explain, instance, m, rule) for m in methods for rule in RULES})
    times = interleaved(runs, rounds, torch.device("cpu"))
    summary = {}
    for clock, table in (("wall", times.wall), ("cpu", times.cpu)):
        for m in methods:
            previous, new = table[f"{m} previous"], table[f"{m} new"]
            summary[f"{m} ({clock})"] = row = {
                "previous_x_floor": median_ratio(previous, table["floor"]),
                "new_x_floor": median_ratio(new, table["floor"]),
                "new_over_previous": median_ratio(new, previous),
                "seconds_floor": table["floor"], "seconds_previous": previous, "seconds_new": new}
            print(f"{m} ({clock} time): previous {row['previous_x_floor']:.2f}x the floor, new "
                  f"{row['new_x_floor']:.2f}x, new / previous {row['new_over_previous']:.2f} (medians of {rounds})")
    return summary


def deviations(name: str, batch: int, methods: list[str]) -> dict:
    instances = {dtype: build(name, batch, torch.device("cpu"), getattr(torch, dtype))
                 for dtype in ("float32", "float64")}
    summary = {}
    for method in methods:
        scores = {(dtype, rule): np.stack([np.asarray(e.scores, dtype=np.float64)
                                           for e in explain(instances[dtype], method, rule)])
                  for dtype in instances for rule in RULES}
        truth = scores[("float64", "previous")]
        scale = np.abs(truth).max(axis=1, keepdims=True)
        summary[method] = {f"{dtype} {rule}": float((np.abs(value - truth) / scale).max())
                           for (dtype, rule), value in scores.items() if (dtype, rule) != ("float64", "previous")}
        summary[method]["float32 new vs float32 previous"] = float(
            (np.abs(scores[("float32", "new")] - scores[("float32", "previous")]) / scale).max())
        print(f"{method}: " + ", ".join(f"{k} {v:.1e}" for k, v in summary[method].items()), flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("time", "deviation"))
    parser.add_argument("--model", default="vit-b16-hf")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", default="lrp,transformer_attribution")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="JSON file for the figures")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    methods = args.methods.split(",")
    if args.what == "time":
        summary = compare_times(build(args.model, args.batch, torch.device("cpu"), torch.float32), methods, args.rounds)
    else:
        summary = deviations(args.model, args.batch, methods)
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"model": args.model, "batch": args.batch, "threads": 1, "torch": torch.__version__,
                       "what": args.what, "figures": summary}, out, indent=1)


if __name__ == "__main__":
    main()
