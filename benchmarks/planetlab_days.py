"""PlanetLab days for the benchmarks that replay them through vpool's plans (drs_load.py,
dpm_load.py): the day folders, a random draw of traces as loads in cores, and the runs over
days and seeds in worker processes."""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "planetlab"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=2, help="random draws per day")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (the machine is shared)")


def days(parser: argparse.ArgumentParser, data: Path) -> list[str]:
    found = sorted(str(p) for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    if not found:
        parser.error(f"{data} holds no day folders of PlanetLab traces")
    return found


def draw(day: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n of the day's traces, drawn from its files in sorted order, as (n, 288) shares of a core."""
    files = sorted(p for p in Path(day).iterdir() if p.is_file())
    return np.array([np.loadtxt(files[i]) for i in rng.choice(len(files), n, replace=False)]) / 100.0


def run_all(run: Callable, jobs: list, workers: int) -> list:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, jobs))
