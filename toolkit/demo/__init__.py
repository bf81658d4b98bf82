"""The toolkit's Gradio demo: every explainer for text, image, image-text, VQA and captioning models, and the
attention views, on the built-in offline models or on models a YAML config names.

``python -m toolkit demo [--config demo.yaml]`` launches it; ``python -m toolkit export-space DIR`` writes a
folder ready to push to a Hugging Face Space. From Python::

    from toolkit.demo import build_app, load_config, serve
    serve(load_config("demo.yaml"), server_port=7860)        # or: app = build_app(config); app.launch(...)
"""
from .app import build_app
from .config import DemoConfig, ModelEntry, load_config, parse_config
from .serving import launch_options, serve
from .space import export_space

__all__ = ["DemoConfig", "ModelEntry", "build_app", "export_space", "launch_options", "load_config", "parse_config",
           "serve"]
