"""The `tracegrad` command lists its subcommands, and each answers --help without loading its engine."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command,expect", [("launch", "-n"), ("serve", "checkpoint")])
def test_subcommands_answer_help(command, expect):
    out = subprocess.run([sys.executable, "-m", "tracegrad", command, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert expect in out.stdout and f"tracegrad {command}" in out.stdout


def test_no_subcommand_prints_the_list_and_fails():
    out = subprocess.run([sys.executable, "-m", "tracegrad"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "launch" in out.stdout and "serve" in out.stdout
