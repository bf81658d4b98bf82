"""The toolkit's Gradio demo, the same app as ``python -m toolkit demo`` with the same options:

    python demos/app.py [--config demo.yaml] [--server-name 0.0.0.0] [--server-port 7860] [--share] [--preload]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from toolkit.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
