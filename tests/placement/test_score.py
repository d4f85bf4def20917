"""vpool's hbal score against the reference implementation, component by component."""

import numpy as np
import pytest

from vpool.placement.htools import read_htools
from vpool.placement.score import WEIGHTS, hbal_components, hbal_score

CLUSTERS = [
    ("-n", "10", "-i", "60", "--seed", "42"),
    ("-n", "100", "-i", "1000", "--seed", "7"),
    ("-n", "12", "-i", "40", "--template", "drbd", "--down-fraction", "0.2",
     "--anti-affinity-groups", "5", "--seed", "3"),
    ("-n", "12", "-i", "50", "--template", "plain", "--down-fraction", "0.2",
     "--anti-affinity-groups", "6", "--seed", "4"),
    ("-n", "10", "-i", "60", "--down-fraction", "0.3", "--anti-affinity-groups", "8",
     "--empty-nodes", "2", "--seed", "5"),
    ("-n", "9", "-i", "30", "--node-mix", "uniform", "--template", "diskless", "--seed", "6"),
]


def reference(module, path, dynamic_load=True, moves=None):
    nodes, insts, ctags, vcpu_ratio, spindle_ratio = module.parse(str(path))
    util = {} if dynamic_load else None
    return module.score(nodes, insts, ctags, vcpu_ratio, spindle_ratio, util, moves)


def assert_same(ours: dict, theirs: dict):
    for name, _ in WEIGHTS:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


def test_tiny_matches_hbal_and_the_reference(tiny_file, reference_score):
    state = read_htools(tiny_file.read_text()).to_state()
    assert round(hbal_score(state), 8) == 7.82236877      # hbal -t tiny.txt: Initial score
    total, components = reference(reference_score, tiny_file)
    assert_same(hbal_components(state), components)


@pytest.mark.parametrize("args", CLUSTERS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("dynamic_load", [True, False], ids=["default", "ignore-dynu"])
def test_generated_clusters_match_the_reference(generate, reference_score, args, dynamic_load):
    path = generate(*args)
    state = read_htools(path.read_text()).to_state()
    total, components = reference(reference_score, path, dynamic_load)
    assert_same(hbal_components(state, dynamic_load), components)
    assert hbal_score(state, dynamic_load) == pytest.approx(total, abs=1e-8)


@pytest.mark.parametrize("args", CLUSTERS[2:], ids=lambda a: " ".join(a))
def test_score_after_moves_matches_the_reference(generate, reference_score, args):
    """Moves, including DRBD primaries, re-scored with hbal's bookkeeping of touched nodes."""
    path = generate(*args)
    state = read_htools(path.read_text()).to_state()
    rng = np.random.default_rng(1)
    names = state.host_names
    moves = []
    for v in rng.choice(len(state.vms), size=8, replace=False):
        vm = state.vms[v]
        choices = [h for h in names if h not in (vm.host, vm.secondary)]
        moves.append((vm.name, str(rng.choice(choices))))
    moved = state.with_moves(moves)
    touched = np.zeros(state.n_hosts, dtype=bool)
    for name, host in moves:
        vm = state.vms[state.vm_index[name]]
        for h in (vm.host, vm.secondary, host):
            if h:
                touched[state.host_index[h]] = True
    _, components = reference(reference_score, path,
                              moves=[(n, h, state.vms[state.vm_index[n]].secondary or "")
                                     for n, h in moves])
    assert_same(hbal_components(moved, touched=touched), components)
