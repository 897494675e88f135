"""Checkpoints in the safetensors format: model, optimizer state, step, RNG state, data position.

    save_checkpoint("ckpt.safetensors", model=model, optimizer=opt, step=step, data_state=ds.state_dict())
    info = load_checkpoint("ckpt.safetensors", model=model, optimizer=opt)   # restores RNG too
    step, data_state = info["step"], info["data_state"]

The file is plain safetensors (readable by any safetensors reader): every tensor of the model's and
the optimizer's state dicts is one entry (`model.h.0.attn.c_attn.weight`, `optim.state.3.exp_avg`);
everything else (step, hyperparameters, the nesting of the state dicts, RNG states, the data
position) is JSON in the header's `__metadata__`, with a SHA-256 of the tensor bytes. Writes go to
a temporary file that replaces the target in one `os.replace`, so a crash never leaves half a
checkpoint. Reading validates the header, the sizes and the checksum, and raises `CheckpointError`
naming the file and the problem. Nothing is ever unpickled.

Under data parallelism (a process group of several ranks) rank 0 writes and the others wait at a
barrier; a `DistributedDataParallel` model is saved and loaded as the module it wraps, and a
`ZeroRedundancyOptimizer`'s state is gathered whole first, so a checkpoint resumes on any number
of ranks.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import struct

import numpy as np
import safetensors.numpy as stnp

from ..creation import tensor
from ..errors import TracegradError
from ..generator import get_rng_state, set_rng_state as set_tg
from ..ir.types import dtype as to_dtype
from ..tensor import Tensor
from ..ir.types import DType
from ..nn.parallel import DistributedDataParallel
from ..runtime.shards import Sharded
from .. import distributed

FORMAT = "tracegrad-checkpoint"
VERSION = 2     # 2: the checksum covers the metadata too
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
              "U8": np.uint8, "BOOL": np.bool_}


class CheckpointError(TracegradError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt, or not a checkpoint."""


# -- nested state <-> (JSON tree, flat tensors) ---------------------------------------------------
def _flatten(obj, prefix: str, tensors: dict):
    if isinstance(obj, (Tensor, np.ndarray)) and prefix in tensors:
        raise ValueError(f"two entries of the state map to the tensor name {prefix!r}")
    if isinstance(obj, Tensor):
        arr = _contiguous(obj.numpy())
        tensors[prefix] = arr.view(np.uint16) if obj.dtype.name == "bfloat16" else arr
        return {"__tensor__": prefix, "dtype": obj.dtype.name}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = _contiguous(obj.view(np.uint16) if obj.dtype.name == "bfloat16" else obj)
        return {"__array__": prefix, "dtype": obj.dtype.name}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, DType):
        return {"__dtype__": obj.name}
    if isinstance(obj, dict):   # keys may be ints (optimizer state), so a list of pairs
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix!r}); "
                    "use tensors, arrays, numbers, strings, lists, tuples and dicts")


def _contiguous(a: np.ndarray) -> np.ndarray:
    # NOTE: not np.ascontiguousarray, which turns a 0-d array into shape [1]
    return np.require(a, requirements="C")


def _unflatten(tree, tensors: dict):
    if isinstance(tree, list):
        return [_unflatten(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree or "__array__" in tree:
        arr = tensors[tree.get("__tensor__") or tree["__array__"]]
        if tree["dtype"] == "bfloat16":
            import ml_dtypes
            arr = arr.view(ml_dtypes.bfloat16)
        return tensor(arr, dtype=to_dtype(tree["dtype"])) if "__tensor__" in tree else arr
    if "__dtype__" in tree:
        return to_dtype(tree["__dtype__"])
    if "__tuple__" in tree:
        return tuple(_unflatten(v, tensors) for v in tree["__tuple__"])
    return {k: _unflatten(v, tensors) for k, v in tree["__dict__"]}


def _digest(tensors: dict, meta: dict | None = None) -> str:
    """SHA-256 of the tensors and (from version 2 on) of every metadata entry but the digest itself."""
    h = hashlib.sha256()
    if meta is not None:
        h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for k in sorted(tensors):
        a = tensors[k]
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# -- RNG ------------------------------------------------------------------------------------------
def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"tracegrad": get_rng_state(), "python": random.getstate(),
            "numpy": {"keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}


def set_rng_state(state: dict) -> None:
    set_tg(state["tracegrad"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))


# -- files ----------------------------------------------------------------------------------------
def save_safetensors(path: str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically: a temporary file in the same folder, then os.replace."""
    blob = stnp.save(tensors, metadata=metadata)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder, os.path.basename(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Delete what killed writers of `name` left behind (temporary files of processes now gone)."""
    prefix = f".{name}.tmp."
    for entry in os.listdir(folder):
        pid = entry[len(prefix):]
        if not (entry.startswith(prefix) and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue            # its writer is still running
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.remove(os.path.join(folder, entry))
        except OSError:
            pass


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of any safetensors file, checking the header and sizes first."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse_safetensors(blob, path)


def sniff_format(blob: bytes) -> str | None:
    """What a file that is not safetensors looks like, from its first bytes (None: no guess)."""
    if len(blob) >= 9 and blob[8:9] == b"{" and 8 + struct.unpack("<Q", blob[:8])[0] <= len(blob):
        return None       # a plausible safetensors header: its length's low byte may be anything
    if blob[:4] == b"PK\x03\x04":
        return "looks like a PyTorch pickle: a zip archive, as torch.save writes"
    if blob[:1] == b"\x80" and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "looks like a PyTorch pickle: a Python pickle stream"
    if blob[:4] == b"\x93NUM":
        return "looks like a numpy .npy file"
    return None


def parse_safetensors(blob: bytes, path: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of the bytes of a safetensors file, checking the header and sizes first."""
    def bad(why: str):
        return CheckpointError(f"{path}: {why}")

    guess = sniff_format(blob)
    if guess is not None:
        raise bad(f"not a safetensors file ({guess}); tracegrad never unpickles files. Convert it where it "
                  "was made, e.g. safetensors.torch.save_file(state_dict, 'model.safetensors')")
    if len(blob) < 8:
        raise bad(f"truncated: {len(blob)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob) and (n > 1 << 32 or blob[8:9] != b"{"):
        raise bad(f"not a safetensors file (its first 8 bytes {blob[:8]!r} are not a header length and no "
                  "JSON header follows them)")
    if 8 + n > len(blob):
        raise bad(f"truncated: the header says it is {n} bytes long, but the file has only {len(blob)} bytes")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"corrupt header (not valid JSON: {e}); this is not a safetensors file or it was damaged") from None
    meta = header.pop("__metadata__", None) or {}
    end = 0
    for name, info in header.items():
        try:
            lo, hi = info["data_offsets"]
            dt, shape = info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError):
            raise bad(f"corrupt header: the entry {name[:80]!r} is not a tensor description "
                      f"({str(info)[:80]}...)") from None
        if dt not in _ST_DTYPES and dt != "BF16":
            raise bad(f"tensor {name!r} has dtype {dt}, which tracegrad cannot read")
        item = 2 if dt == "BF16" else np.dtype(_ST_DTYPES[dt]).itemsize
        if hi - lo != item * int(np.prod(shape, dtype=np.int64)):
            raise bad(f"corrupt header: tensor {name!r} of shape {shape} ({dt}) spans {hi - lo} bytes")
        end = max(end, hi)
    have = len(blob) - 8 - n
    if have < end:
        raise bad(f"truncated: the tensors need {end} bytes of data, but only {have} are there "
                  f"(the file is {len(blob)} bytes; was the write interrupted?)")
    if have > end:
        raise bad(f"corrupt: {have - end} unexpected bytes after the tensor data")
    data = memoryview(blob)[8 + n:]
    if any(info["dtype"] == "BF16" for info in header.values()):
        import ml_dtypes
        tensors = {}
        for name, info in header.items():
            lo, hi = info["data_offsets"]
            dt = ml_dtypes.bfloat16 if info["dtype"] == "BF16" else _ST_DTYPES[info["dtype"]]
            tensors[name] = np.frombuffer(data[lo:hi], dtype=dt).reshape(info["shape"]).copy()
        return tensors, meta
    try:
        return stnp.load(blob), meta
    except Exception as e:   # safetensors' own error (SafetensorError) for anything we did not catch
        raise bad(f"corrupt ({e})") from None


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _whole(tree):
    """`tree` with every tensor held in blocks (`Sharded`) replaced by the whole, gathered."""
    if isinstance(tree, dict):
        return type(tree)((k, _whole(v)) for k, v in tree.items())
    if type(tree) in (list, tuple):
        return type(tree)(_whole(v) for v in tree)
    if isinstance(tree, Tensor) and type(tree._data) is Sharded:
        return Tensor._from_array(tree._data.full(), tree._type)
    return tree


def save_checkpoint(path: str, model=None, optimizer=None, step: int = 0, data_state=None, scheduler=None,
                    extra: dict | None = None, rng: bool = True) -> None:
    """Write model/optimizer/scheduler state, the step, the RNG states and `data_state` to `path`
    (under data parallelism: rank 0 writes, every rank returns once it is written)."""
    if optimizer is not None and hasattr(optimizer, "consolidate_state_dict"):
        optimizer.consolidate_state_dict(to=0)      # every rank takes part; rank 0 gets the whole state
    # NOTE: every rank takes part here too: state a tp/pp plan holds in blocks is gathered whole
    model_state = _whole(_unwrap(model).state_dict()) if model is not None else None
    optim_state = _whole(optimizer.state_dict()) if optimizer is not None else None
    if distributed.get_rank() != 0:
        distributed.barrier()
        return
    state = {"step": int(step), "data_state": data_state, "extra": extra}
    if model is not None:
        state["model"] = model_state
    if optimizer is not None:
        state["optim"] = optim_state
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if rng:
        state["rng"] = rng_state()
    tensors: dict[str, np.ndarray] = {}
    tree = {k: _flatten(v, k, tensors) for k, v in state.items()}
    meta = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(tree)}
    meta["sha256"] = _digest(tensors, meta)
    save_safetensors(path, tensors, meta)
    if distributed.get_world_size() > 1:
        distributed.barrier()


def read_checkpoint(path: str) -> dict:
    """The saved state as nested dicts of tracegrad tensors and Python values (no side effects)."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a tracegrad checkpoint (no "
                              f"'format: {FORMAT}' in its metadata); for bare weights use read_safetensors")
    version = meta.get("version")
    if version not in ("1", "2"):
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not one this tracegrad reads "
                              f"(1 to {VERSION}); a newer tracegrad wrote it, or the file is damaged")
    if meta.get("sha256") != _digest(tensors, meta if version != "1" else None):
        raise CheckpointError(f"{path}: corrupt: the contents do not match their SHA-256 checksum "
                              "(the file was damaged after it was written)")
    try:
        tree = json.loads(meta["state"])
        return {k: _unflatten(v, tensors) for k, v in tree.items()}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt metadata ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str, model=None, optimizer=None, scheduler=None, strict: bool = True,
                    restore_rng: bool = True) -> dict:
    """Restore what `save_checkpoint` wrote into the given objects; returns the whole state
    (`state["step"]`, `state["data_state"]`, `state["extra"]`, ...)."""
    state = read_checkpoint(path)
    if model is not None:
        if "model" not in state:
            raise CheckpointError(f"{path}: holds no model state")
        _unwrap(model).load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        if "optim" not in state:
            raise CheckpointError(f"{path}: holds no optimizer state")
        optimizer.load_state_dict(state["optim"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state
