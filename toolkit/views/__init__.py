"""Attention views of stock transformers: head, model and neuron views for text, heatmaps for Vision Transformers.

Each function runs the model once and returns a :class:`View`: a self-contained HTML page
(``.html``, ``.save("x.html")``, Jupyter display, ``.iframe_html()`` for Gradio) and a static
figure (``.save("x.svg")`` or ``.save("x.png")``).
"""
from .api import SENTENCE_FILTERS, View, head_view, image_attention_view, model_view, neuron_view
from .static import ExportError

__all__ = ["SENTENCE_FILTERS", "ExportError", "View", "head_view", "image_attention_view", "model_view", "neuron_view"]
