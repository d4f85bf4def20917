"""Plans as plain data: the one conversion behind `vpool plan KIND --json` and `GET /plans/KIND`.

Both call `plan_report` with the same parameters (strings from a query string or numbers from
the command line), so a script sees the same JSON offline and from the server.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from .balance import BalancePolicy, balance
from .capacity import PRIMARIES_SCORED, CapacityReport, capacity, mirrored_pair, parse_mix
from .consolidate import ConsolidationPolicy, consolidate
from .ha import HaReport, ha_admission
from .htools import from_state
from .place import Explanation, explain
from .plan import Move, Plan
from .request import PlacementRequest
from .score import host_divisors, per_host, vm_arrays
from .state import ClusterState


def plan_dict(plan: Plan) -> dict:
    return {
        "kind": plan.kind,
        "score_before": plan.score_before,
        "score_after": plan.score_after,
        "moves": [_move_dict(m) for m in plan.moves],
        "stages": plan.stages,
        "power_off": list(plan.power_off),
        "wake": list(plan.wake),
        "note": plan.note,
    }


def _move_dict(m: Move) -> dict:
    """A move as JSON; a DRBD-mirrored VM's also names its copy's host before and after."""
    out = {"vm": m.vm, "from": m.src, "to": m.dst, "stage": m.stage, "reason": m.reason}
    if m.dst_secondary is not None:
        out.update(secondary_from=m.src_secondary, secondary_to=m.dst_secondary)
    return out


def placement_report(state: ClusterState, request: PlacementRequest, new_disks: str = "local") -> dict:
    """Where one more VM would go on `state` and why, as `explanation_dict` (what Ganeti's
    hail answers for a file, with every host's verdict). `new_disks` is where its disk goes,
    as for `capacity`: on the chosen host, on shared storage (which no host's disk room
    limits), or mirrored (DRBD), on a host and a `mirror` host chosen together by
    `mirrored_pair` among the weighers' first hosts, as hail weighs pairs, and `mirror_why`
    says so; no host for the mirror is no host."""
    if new_disks == "shared":
        request = replace(request, disk_gib=0.0)
    answer = explanation_dict(request, explain(state, request))
    if new_disks == "mirrored" and answer["host"] is not None:
        primaries = [h["host"] for h in answer["hosts"] if h["total"] is not None]
        pair = mirrored_pair(state, primaries, request)
        if pair is None:
            answer["message"] = (f"no host but {answer['host']} has {request.disk_gib:g} GiB disk free for the "
                                 f"mirror of {request.name}")
            answer["host"], answer["mirror"] = None, None
        else:
            answer["host"], answer["mirror"], score = pair
            answer["mirror_why"] = (f"of the weighers' first {min(PRIMARIES_SCORED, len(primaries))} hosts, each with "
                                    f"its roomiest mirrors, this pair leaves Ganeti's cluster score lowest ({score:.4f})")
    return answer


def explanation_dict(request: PlacementRequest, explanation: Explanation) -> dict:
    """A placement and its reasons (`vpool vm create --dry-run`): `host` is null and `message`
    says why when no host will do; each host has the filter that removed it, or its weights."""
    decision = explanation.placement
    return {
        "vm": request.name,
        "demand": {"cpus": request.cpus, "memory_mib": request.memory_mib, "disk_gib": request.disk_gib},
        "host": decision.host,
        "message": decision.message,
        "removed_by": {name: n for name, n in decision.removed_by.items() if n},
        "hosts": [{"host": v.host, "removed_by": v.removed_by, "why": v.why or None,
                   "weights": dict(v.weights), "total": v.total} for v in explanation.hosts],
    }


def ha_dict(report: HaReport) -> dict:
    return {
        "kind": "ha",
        "failures": report.failures,
        "ok": report.ok,
        "worst": list(report.worst),
        "unplaced": list(report.unplaced),
        "bottlenecks": list(report.bottlenecks),
        "headroom": report.headroom,
        "sets_tried": report.sets_tried,
        "exhaustive": report.exhaustive,
        "message": report.message,
    }


def capacity_dict(report: CapacityReport) -> dict:
    return {
        "kind": "capacity",
        "mix": report.mix,
        "failures": report.failures,
        "fits": report.fits,
        "fits_without_ha": report.fits_without_ha,
        "by_flavor": report.by_flavor,
        "limited_by": report.limited_by,
        "disks": report.disks,
    }


def _number(kind: type) -> Callable[[Any], Any]:
    def parse(value):
        if isinstance(value, str) and kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        return kind(value)
    return parse


def _at_least(kind: type, low: float) -> Callable[[Any], Any]:
    parse = _number(kind)

    def check(value):
        x = parse(value)
        if not x >= low:  # NaN too
            raise ValueError(f"must be at least {low:g}, got {value!r}")
        return x
    return check


def _share(value) -> float:
    """A target: a share of a host's capacity, above 0 and at most all of it."""
    x = float(value)
    if not 0 < x <= 1:
        raise ValueError(f"must be a share above 0 and at most 1, got {value!r}")
    return x


_COUNT, _AMOUNT = _at_least(int, 0), _at_least(float, 0)

#: per plan kind: parameter name -> parser; the names of the CLI options and query params
PARAMETERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "balance": {"max_moves": _COUNT, "min_gain": _AMOUNT, "min_gain_limit": _AMOUNT,
                "migration_cost": _AMOUNT, "ignore_dynu": _number(bool), "load_window_s": _AMOUNT},
    "consolidate": {"cpu_target": _share, "memory_target": _share, "disk_target": _share,
                    "wake_above": _share, "load_target": _share, "load_wake_above": _share, "max_moves": _COUNT,
                    "min_hosts": _COUNT, "load_window_s": _AMOUNT},
    "ha": {"failures": _COUNT},
    "capacity": {"mix": str, "failures": _COUNT},
}


def parse_parameters(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Typed parameters for `kind`; unknown names and bad values are one-line ValueErrors."""
    if kind not in PARAMETERS:
        raise ValueError(f"unknown plan {kind!r}; known: {', '.join(PARAMETERS)}")
    known = PARAMETERS[kind]
    parsed = {}
    for name, value in params.items():
        if value is None:
            continue
        if name not in known:
            raise ValueError(f"plan {kind} takes no parameter {name!r}; it takes "
                             f"{', '.join(known)}")
        try:
            parsed[name] = known[name](value)
        except ValueError as e:
            raise ValueError(f"parameter {name}: {e}") from None
    return parsed


def plan_report(kind: str, state: ClusterState, params: Mapping[str, Any] | None = None,
                new_disks: str = "local", measured_cpu: bool = False) -> dict:
    """Run plan `kind` on `state` with `params` (see PARAMETERS) and return it as data;
    `new_disks` is where capacity puts new VMs' disks (an htools file's template decides);
    `measured_cpu` says the state's VM CPU loads were measured (BalancePolicy)."""
    p = parse_parameters(kind, params or {})
    p.pop("load_window_s", None)  # the live pool's: over what its VMs' cpu_load was measured
    if kind == "balance":
        dynamic = not p.pop("ignore_dynu", False)
        plan = balance(state, BalancePolicy(dynamic_load=dynamic, measured_cpu=measured_cpu, **p))
        return plan_dict(plan) | ({"cpu_busy": cpu_busy(state, plan)} if measured_cpu else {})
    if kind == "consolidate":
        plan = consolidate(state, ConsolidationPolicy(measured_cpu=measured_cpu, **p))
        return plan_dict(plan) | ({"cpu_busy": cpu_busy(state, plan)} if measured_cpu else {})
    if kind == "ha":
        return ha_dict(ha_admission(state, p.get("failures", 1)))
    return capacity_dict(capacity(state, parse_mix(p.get("mix", "medium")), failures=p.get(
        "failures", 1), disks=new_disks))


def cpu_busy(state: ClusterState, plan: Plan) -> list[dict]:
    """How busy each up host's CPUs are by the VMs' measured load, before and after the plan: the
    spread the CPU-load term evens out, as an operator reads it."""
    after = state.with_moves((m.vm, m.dst) for m in plan.moves) if plan.moves else state
    pool = host_divisors(state)["cpu_pool"]
    shares = [per_host(s, vm_arrays(s, True)["cpu_load"]) / pool for s in (state, after)]
    return [{"host": h.name, "before": round(float(shares[0][i]), 4), "after": round(float(shares[1][i]), 4)}
            for i, h in enumerate(state.hosts) if state.up[i]]


def htools_text(state: ClusterState) -> str:
    """The pool in Ganeti's htools text format (`vpool plan export-htools`)."""
    return from_state(state).render()
