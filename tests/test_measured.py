"""Timed choices kept on disk (runtime/measured.py): a later process reads back what an earlier
one timed on the same GPU, tags keep GPUs apart, concurrent writers merge, and a damaged file
only means timing again."""
from __future__ import annotations

import json
import os

import pytest

from tracegrad.runtime import measured


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measured, "device_tag", lambda i: f"gpu{i}")
    measured.forget()
    yield tmp_path
    measured.forget()


def test_a_later_process_recalls_what_was_timed_on_the_same_gpu(cache):
    key = ((1024, 768), (768, 2304), (1536, 2), (4608, 2), "bfloat16")
    assert measured.recall("matmul", key, 0) is None
    measured.remember("matmul", key, 0, "cublas")
    measured.forget()                                    # as a new process: read from disk
    assert measured.recall("matmul", key, 0) == "cublas"
    assert measured.recall("matmul", key, 1) is None     # another GPU times for itself
    assert measured.recall("attention", key, 0) is None


def test_writers_merge_and_a_damaged_file_means_timing_again(cache):
    measured.remember("matmul", "a", 0, "template")
    with open(os.path.join(cache, "measured.json")) as f:
        other = json.load(f)
    other["gpu0"]["matmul 'b'"] = "cublas"                 # another process wrote meanwhile
    with open(os.path.join(cache, "measured.json"), "w") as f:
        json.dump(other, f)
    measured.remember("matmul", "c", 0, "cublas")
    measured.forget()
    assert [measured.recall("matmul", k, 0) for k in "abc"] == ["template", "cublas", "cublas"]
    with open(os.path.join(cache, "measured.json"), "w") as f:
        f.write("{not json")
    measured.forget()
    assert measured.recall("matmul", "a", 0) is None
    measured.remember("matmul", "a", 0, "cublas")          # and the file is whole again
    measured.forget()
    assert measured.recall("matmul", "a", 0) == "cublas"
