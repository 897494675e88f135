"""Debug output, documented in one table (also in the README):

| variable | effect |
| --- | --- |
| TRACEGRAD_DEBUG=1 | one line per compile: function, reason, ops, time |
| TRACEGRAD_DEBUG=2 | + the traced and optimized graphs |
| TRACEGRAD_DEBUG=3 | + the generated source |
| TRACEGRAD_DEBUG=4 | + per-pass timings |
| TRACEGRAD_LOGS=graph,passes,fusion,output_code,comm,recompiles | pick channels instead of a level |
| TRACEGRAD_DUMP=dir | write every stage, the generated source and a DOT graph under dir |
| TRACEGRAD_CHECK=1 | verify the IR after every pass |
| TRACEGRAD_CHECK_NANS=1 | the first NaN raises, naming its node and line (runtime/nan_flags.py) |
| TRACEGRAD_INDEX_CHECK_EVERY=n | CUDA steps read their index flags every n calls (runtime/index_flags.py) |

Channels are `logging` loggers named `tracegrad.<channel>`.
"""
from __future__ import annotations

import logging
import os
import sys

CHANNELS = ("compile", "graph", "passes", "fusion", "output_code", "comm", "recompiles")
_LEVEL_CHANNELS = {1: ("compile", "recompiles"), 2: ("graph",), 3: ("output_code", "fusion"), 4: ("passes", "comm")}


def level() -> int:
    try:
        return int(os.environ.get("TRACEGRAD_DEBUG", "0") or 0)
    except ValueError:
        return 0


def enabled(channel: str) -> bool:
    chosen = {c.strip() for c in os.environ.get("TRACEGRAD_LOGS", "").split(",") if c.strip()}
    if channel in chosen:
        return True
    return any(channel in chans for lv, chans in _LEVEL_CHANNELS.items() if lv <= level())


def logger(channel: str) -> logging.Logger:
    log = logging.getLogger(f"tracegrad.{channel}")
    if enabled(channel) and not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"[tracegrad:{channel}] %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def log(channel: str, msg: str, *args) -> None:
    lg = logger(channel)
    if enabled(channel) or lg.isEnabledFor(logging.INFO):
        lg.info(msg, *args)


def dump_dir() -> str | None:
    return os.environ.get("TRACEGRAD_DUMP") or None
