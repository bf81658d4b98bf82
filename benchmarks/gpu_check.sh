#!/usr/bin/env bash
# The GPU half of issue 14 in one call: the bench on CUDA in float32 (batch 1, 8, 32) and bfloat16 (batch 8, 32),
# then every method's CUDA explanations against the CPU's (tests/test_gpu.py: correlation >= 0.999 per map).
#
#   bash benchmarks/gpu_check.sh                      # JSON into $OUT (the device tool's folder) or benchmarks/results
#   DEVICE=cpu MODELS=tiny-vit bash benchmarks/gpu_check.sh   # the script itself without a GPU (about 15 minutes:
#                                                             # on the CPU each peak takes a fresh process)
#
# Integrated gradients needs captum; where it is not installed (the device image has torch, transformers, timm and
# OpenCV, not captum), the bench leaves that method out and says so.
set -euo pipefail
out="${OUT:-benchmarks/results}"
device="${DEVICE:-cuda}"
models="${MODELS:-vit-b16-timm,vit-b16-hf,bert-base-128,bert-base-512,clip-b32,vilt-vqa,blip-caption,llama-100m}"
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

methods=$("$python" - <<'EOF'
import importlib.util
from toolkit import list_methods
names = list_methods()
if importlib.util.find_spec("captum") is None:
    import sys
    print("captum is not installed: integrated_gradients is left out", file=sys.stderr)
    names = [name for name in names if name != "integrated_gradients"]
print(",".join(names))
EOF
)
"$python" -m toolkit bench --device "$device" --models "$models" --methods "$methods" --batch-sizes 1,8,32 \
    --repeats 3 --out "$out/$device-float32.json"
"$python" -m toolkit bench --device "$device" --models "$models" --methods "$methods" --batch-sizes 8,32 \
    --repeats 3 --dtype bfloat16 --no-evaluation --out "$out/$device-bfloat16.json"
"$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py
