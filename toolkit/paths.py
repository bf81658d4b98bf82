"""Where results are written: folders checked (and created) before any work is done, so that a run does not fail
at its very end, after computing everything, on a folder it cannot write."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder that ``what`` (e.g. "--out") can be written into: created when missing; an
    InputError naming it when it is a file, cannot be created or cannot be written into."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what}: {folder} is a file, not a folder. Name a folder (new or existing) to write into.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{what}: cannot create the folder {folder} ({error.strerror or error}). Name a folder "
                         "you can write to.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what}: cannot write into {folder} (permission denied). Name a folder you can write to.")
    return folder
