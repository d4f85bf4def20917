"""Shared helpers: Ganeti's reference files are read in place, never copied into the repo."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared import SHARED

GANETI = SHARED / "ganeti"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


@pytest.fixture(scope="session")
def reference_score():
    """Ganeti's score as re-implemented (and checked against hinfo) in htools_score.py."""
    spec = importlib.util.spec_from_file_location("htools_score",
                                                  _need(GANETI / "htools_score.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_file() -> Path:
    return _need(GANETI / "tiny.txt")


@pytest.fixture(scope="session")
def generate(tmp_path_factory):
    """Write a cluster with Ganeti's generator into a temporary directory."""
    generator = GANETI / "gen_cluster.py"
    directory = tmp_path_factory.mktemp("clusters")

    def run(*args: str) -> Path:
        _need(generator)
        out = directory / ("c_" + "_".join(a.strip("-") for a in args) + ".txt")
        if not out.exists():
            subprocess.run([sys.executable, str(generator), *args, "-o", str(out)], check=True,
                           capture_output=True)
        return out
    return run
