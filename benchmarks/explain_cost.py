"""Cost of each method relative to the floor of a gradient explanation (one forward + one backward).

Full-size ViT-Base (random weights, default ViTConfig) and BERT-base shapes; timings are taken in
one run and reported as ratios, since absolute seconds on shared machines are noisy.

    python benchmarks/explain_cost.py [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

from toolkit import Explainer, list_methods


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(model, inputs) -> tuple[float, float]:
    def forward():
        with torch.no_grad():
            model(**inputs)

    def forward_backward():
        model(**inputs).logits.max(-1).values.sum().backward()
        model.zero_grad(set_to_none=True)

    return forward, forward_backward


def report(title, explainer, model, inputs, raw, singles, repeats):
    model.set_attn_implementation("eager")
    forward, forward_backward = floor(model, inputs)
    t_fwd, t_fb = best_time(forward, repeats), best_time(forward_backward, repeats)
    print(f"\n{title}: forward {t_fwd:.3f}s, forward+backward {t_fb:.3f}s (the floor)")
    print(f"{'method':26s} {'seconds':>8s} {'x forward':>10s} {'x floor':>8s}")
    for method in list_methods():
        t = best_time(lambda: explainer.explain(raw, method=method, progress=False, batch_size=len(raw)), repeats)
        print(f"{method:26s} {t:8.3f} {t / t_fwd:10.2f} {t / t_fb:8.2f}")
    one = best_time(lambda: [explainer.explain(x, method="transformer_attribution") for x in singles], 1)
    batched = best_time(lambda: explainer.explain(raw, method="transformer_attribution", batch_size=len(raw)), 1)
    print(f"transformer_attribution one-by-one / batched: {one / batched:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    vit = ViTForImageClassification(ViTConfig(num_labels=1000)).eval()
    pixels = torch.randn(args.batch, 3, 224, 224)
    report(f"ViT-Base/16, batch {args.batch}", Explainer(vit), vit, {"pixel_values": pixels}, pixels, list(pixels), args.repeats)

    bert = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    ids = torch.randint(1000, 30000, (args.batch, 128))
    encoded = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    singles = [{k: v[i] for k, v in encoded.items()} for i in range(args.batch)]
    report(f"BERT-base, batch {args.batch} x 128 tokens", Explainer(bert), bert, encoded, encoded, singles,
           args.repeats)


if __name__ == "__main__":
    main()
