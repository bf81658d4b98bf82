"""Serving like a service: every request ends in a result or a readable message, warnings reach the user who
caused them, requests queue under limits, and the app launches the same way from the CLI and from a Space."""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from typing import Any, Callable

from ..errors import ToolkitError

log = logging.getLogger("toolkit.demo")

_local = threading.local()


def install_warning_relay() -> None:
    """Route warnings raised while a request runs to that request (see :func:`collect_warnings`); others print as
    usual. ``warnings.catch_warnings`` cannot do this: it swaps process-wide state, which concurrent requests
    would restore in the wrong order. Repeated warnings are shown each time (another user, another request)."""
    if getattr(warnings.showwarning, "toolkit_relay", False):
        return
    original = warnings.showwarning

    def relay(message, category, filename, lineno, file=None, line=None):
        sink = getattr(_local, "sink", None)
        if sink is None:
            return original(message, category, filename, lineno, file, line)
        if str(message) not in sink:
            sink.append(str(message))

    relay.toolkit_relay = True
    warnings.showwarning = relay
    warnings.filterwarnings("always", category=UserWarning)


class collect_warnings:
    """``with collect_warnings() as messages:`` the warnings this thread raises inside the block."""

    def __enter__(self) -> list[str]:
        _local.sink = []
        return _local.sink

    def __exit__(self, *exc) -> None:
        _local.sink = None


def user_facing(fn: Callable) -> Callable:
    """Wrap an event handler: a ToolkitError becomes a gr.Error with its message; any other exception a gr.Error
    that names it, logged with its traceback for the operator; warnings become gr.Warning toasts. The app keeps
    serving either way."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        with collect_warnings() as messages:
            try:
                result = fn(*args, **kwargs)
            except gr.Error:
                raise
            except ToolkitError as error:
                raise gr.Error(str(error), print_exception=False) from None
            except Exception as error:
                log.exception("%s failed", fn.__name__)
                raise gr.Error(f"The explanation failed unexpectedly ({type(error).__name__}: {error}). "
                               "Try another input or method; the app keeps running.", print_exception=False) from None
            finally:
                for message in messages:
                    log.info("%s warned: %s", fn.__name__, message)
                    gr.Warning(message)
        log.info("%s answered in %.0f ms", fn.__name__, 1000 * (time.perf_counter() - start))
        return result

    return wrapper


def launch_options(config) -> dict[str, Any]:
    """Blocks.launch keywords every launch of a demo needs (Gradio 6 takes theme and css at launch)."""
    from .app import CSS, theme

    return {"max_file_size": config.serving.max_file_size, "theme": theme(), "css": CSS, "show_error": True,
            "footer_links": ["api"]}


def serve(config=None, *, server_name: str | None = None, server_port: int | None = None, share: bool = False,
          preload: bool = False, block: bool = True):
    """Build and launch the demo (``config``: a DemoConfig, a YAML path, or None for the built-in models).
    Without ``server_name`` / ``server_port`` Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as Spaces set."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .app import build_app
    from .config import DemoConfig, load_config

    config = config if isinstance(config, DemoConfig) else load_config(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    install_warning_relay()
    app = build_app(config, preload=preload)
    app.launch(server_name=server_name, server_port=server_port, share=share, prevent_thread_lock=not block,
               **launch_options(config))
    return app
