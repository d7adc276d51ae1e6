"""Checkpoints (last.pt): written as plain dicts of tensors and Python values, read with weights_only=True.

torch.load(weights_only=True) rebuilds only tensors, containers and plain values: a crafted .pt whose
pickle would import something and call it (a `__reduce__` running a shell command) is refused before
any of it runs. Every checkpoint the package reads or writes goes through this module
(tests/test_adversarial_model.py checks that no other torch.load exists in training/).
"""
import os
import pickle
import re
import zipfile

import torch

from refimpl import ModelFileError
from refimpl.errors import require_file

WHAT = "a last.pt of python -m training train"


def _reason(exc):
    """The informative line of torch's (multi-line) refusal."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it would call {found.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()[:160]
    return (lines[0] if lines else type(exc).__name__)[:160]


def load(path):
    """The checkpoint's dict. ModelFileError (one line) for a missing file, a folder, a file that is not a
    checkpoint, or one holding anything but tensors and plain values: its code never runs."""
    path = require_file(path, f"a checkpoint file ({WHAT})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise ModelFileError(f"{path}: refused, it holds objects other than tensors and plain values "
                                 f"({_reason(exc)}); checkpoints are read without running any code") from None
        raise ModelFileError(f"{path}: not a checkpoint ({_reason(exc)}; expected {WHAT})") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            MemoryError, zipfile.BadZipFile, UnicodeDecodeError) as exc:   # torch's errors for cut or garbage files
        raise ModelFileError(f"{path}: not a checkpoint ({type(exc).__name__}: {_reason(exc)}; "
                             f"expected {WHAT})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ModelFileError(f"{path}: not a checkpoint of this kit (expected a dict with the weights under "
                             f"'model', {WHAT})")
    return state


def load_weights(module, state_dict, path):
    """module.load_state_dict, with a mismatch as one ModelFileError line naming the checkpoint."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{os.fspath(path)}: weights do not fit this architecture ({_reason(exc)})") from None
    return module


def save(state, path):
    """Write `state` atomically (a temporary name, then a rename), checked to load back with weights_only=True
    so that no checkpoint the kit writes needs anything else to read."""
    path = os.fspath(path)
    torch.save(state, path + ".tmp")
    load(path + ".tmp")
    os.replace(path + ".tmp", path)
