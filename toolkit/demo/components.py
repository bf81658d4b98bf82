"""Gradio components of the demo. Gradio writes a typing stub (components.pyi) next to any module that defines a
component, the first time it is imported: it is ignored by git."""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image


class ImageInput(gr.Image):
    """An image upload that refuses, with a readable message, files that are not images and images larger than
    ``max_pixels`` (checked from the header, before anything is decoded). Passes the file path on."""

    is_template = True  # rendered by Gradio's own Image component
    max_pixels = 100_000_000  # set per instance; Gradio reads the props it sends the page from Image's signature

    def preprocess(self, payload: Any) -> str | None:
        name = repr(getattr(payload, "orig_name", None) or "The file")
        try:
            path = super().preprocess(payload)
            if path is None:
                return None
            with Image.open(path) as image:
                width, height = image.size
        except Exception as error:  # PIL reports unreadable files with several exception types
            raise gr.Error(f"{name} is not a readable image ({type(error).__name__}). Upload a PNG, JPEG, WebP or "
                           "BMP picture.", print_exception=False) from None
        if width * height > self.max_pixels:
            raise gr.Error(f"{name} is {width}×{height} = {width * height / 1e6:.0f} megapixels; this demo takes up "
                           f"to {self.max_pixels / 1e6:.0f} megapixels. Resize it first.", print_exception=False)
        return path
