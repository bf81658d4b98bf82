"""Config-driven batch runs: ``python -m toolkit run CONFIG.yaml`` and ``python -m toolkit report RUN``.

:mod:`.config` (the YAML schema), :mod:`.sources` (items), :mod:`.models` (the Explainer), :mod:`.tasks` (what is
explained and evaluated), :mod:`.worker` (a model replica), :mod:`.executors` (local, Ray), :mod:`.store` (the run
folder and its manifest), :mod:`.report` (the HTML report), :mod:`.runner` (the command).
"""
from .config import RunConfig, load_config
from .runner import run

__all__ = ["RunConfig", "load_config", "run"]
