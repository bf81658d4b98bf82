"""Self-contained HTML: the view's JavaScript, CSS and data inlined in one document (no CDN, no require.js)."""
from __future__ import annotations

import json
from functools import lru_cache
from html import escape
from importlib import resources


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def document(title: str, payload: dict) -> str:
    """A standalone HTML page that draws ``payload`` (``payload["view"]`` names the view)."""
    # JSON inside <script> must not contain "</script>" or "<!--": escape every "<".
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).replace("<", "\\u003c")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_asset('views.css')}</style></head>"
        '<body><div id="toolkit-view" class="toolkit-view"></div>'
        f'<script type="application/json" id="toolkit-view-data">{data}</script>'
        f"<script>{_asset('views.js')}</script>"
        '<script>ToolkitViews.render(document.getElementById("toolkit-view"), '
        'JSON.parse(document.getElementById("toolkit-view-data").textContent));</script>'
        "</body></html>"
    )


def iframe(page: str, height: int) -> str:
    """``page`` in an iframe's srcdoc: scripts run even where the host drops <script> tags (Gradio's gr.HTML)."""
    return (
        f'<iframe srcdoc="{escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width:100%;height:{height}px;border:0" title="attention view"></iframe>'
    )
