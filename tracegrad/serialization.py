"""`tg.save` / `tg.load`: PyTorch's `torch.save(obj, f)` and `torch.load(f)` in a safe format.

    tg.save({"model": model.state_dict(), "optim": opt.state_dict(), "iter": 100}, "ckpt.pt")
    ckpt = tg.load("ckpt.pt", map_location="cpu")

`obj` is any nesting of dicts (any JSON-able keys: str, int, float, bool, None), lists, tuples,
tensors, numpy arrays, numbers, strings, dtypes and None. The file is a plain safetensors file:
every tensor is one entry, the nesting is JSON in the header's `__metadata__` (the same layout as
`tracegrad.utils.checkpoint`). `load` never unpickles: a PyTorch pickle (the zip archive
`torch.save` writes, or a bare pickle stream) is refused with a message saying how to convert it,
which is PyTorch's `weights_only=True` promise kept by construction.
"""
from __future__ import annotations

import json
import os
import pickle

import safetensors.numpy as stnp

from .creation import tensor
from .tensor import Tensor
from .utils.checkpoint import (CheckpointError, _flatten, _unflatten, parse_safetensors, read_checkpoint,
                               save_safetensors, sniff_format)

FORMAT = "tracegrad-save"


class UnpicklingError(CheckpointError, pickle.UnpicklingError):
    """`tg.load` was given a pickle; tracegrad reads only safetensors (PyTorch's weights_only=True)."""


def save(obj, f, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False) -> None:
    """Write `obj` (nested containers of tensors, numbers and strings) to a path or a binary file.

    A path is written atomically (a temporary file, then one rename). PyTorch's pickle arguments
    are accepted and ignored: nothing is pickled.
    """
    tensors: dict = {}
    tree = _flatten(obj, "obj", tensors)
    meta = {"format": FORMAT, "tree": json.dumps(tree)}
    if isinstance(f, (str, os.PathLike)):
        save_safetensors(os.fspath(f), tensors, meta)
        return
    f.write(stnp.save(tensors, metadata=meta))


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **pickle_load_args):
    """Read what `save` wrote (from a path or a binary file); tensors land on `map_location`
    (a device name, `tg.device`, or a dict/callable as in PyTorch: only the target device is used).

    `weights_only=False` cannot be honoured: loading never runs pickled code."""
    if isinstance(f, (str, os.PathLike)):
        name = os.fspath(f)
        try:
            with open(name, "rb") as fh:
                blob = fh.read()
        except OSError as e:
            raise CheckpointError(f"{name}: cannot be read ({e.strerror or e})") from None
    else:
        name, blob = getattr(f, "name", "<file>"), f.read()
    if (sniff_format(blob) or "").startswith("looks like a PyTorch pickle"):
        raise UnpicklingError(
            f"tg.load({name!r}): this is a PyTorch pickle (what torch.save writes); tracegrad never unpickles "
            "files (PyTorch's weights_only=True, and stricter). Convert it in PyTorch: "
            "`safetensors.torch.save_file(torch.load(path), 'model.safetensors')` for a state dict, then "
            "tg.utils.checkpoint.read_safetensors or model.load_state_dict.")
    tensors, meta = parse_safetensors(blob, name)
    if meta.get("format") == FORMAT:
        obj = _unflatten(json.loads(meta["tree"]), tensors)
    elif meta.get("format") == "tracegrad-checkpoint":
        obj = read_checkpoint(name)
    else:                         # a bare safetensors file: its tensors by name, as a state dict
        obj = {k: tensor(v) for k, v in tensors.items()}
    device = _target_device(map_location)
    return obj if device is None else _move(obj, device)


def _target_device(map_location):
    if map_location is None or callable(map_location) and not isinstance(map_location, str):
        return None
    if isinstance(map_location, dict):
        return next(iter(map_location.values()), None)
    return str(map_location)


def _move(obj, device):
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_move(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_move(v, device) for v in obj)
    return obj


__all__ = ["save", "load", "UnpicklingError"]
