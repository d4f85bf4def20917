"""Plans on the live pool: the store's view handed to the pure placement engine. Balance and
consolidation plans can also be applied (vCenter's "apply recommendations", hbal -X)."""

import time
from dataclasses import replace
from urllib.parse import urlparse

from sqlalchemy import select, update

from vpool.model.errors import Conflict, Invalid, VpoolError
from vpool.placement import ClusterState
from vpool.placement.consolidate import STAYS_ON
from vpool.placement.report import htools_text, parse_parameters, plan_report
from vpool.placement.request import count
from vpool.services.measured_load import load_window, with_measured_load
from vpool.services.pool import cluster_state
from vpool.store.tables import Host

APPLICABLE = ("balance", "consolidate")  # the plans that move VMs: applied, and weighed on measured load


class PlanService:
    def __init__(self, cp):
        self.cp = cp

    def plan(self, kind: str, params: dict) -> dict:
        """kind: balance, consolidate, ha or capacity; params are the plan's policy, as text.
        Balance and consolidation plans weigh each VM's measured CPU load over the last
        `load_window_s` (services/measured_load.py): balance evens it out, and consolidation
        keeps each host under `load_target` of it besides its allocation targets. HA and
        capacity count what VMs were given, the room they may take at any moment."""
        params, window = self._checked(kind, params)
        basis = None
        with self.cp.store.session() as s:
            state = cluster_state(s)
            if kind == "consolidate":
                state = _control_plane_stays_on(state, s)
            if window is not None:
                state, basis = with_measured_load(state, s, self.cp.telemetry.series, time.time(), window)
        try:
            report = plan_report(kind, state, params, measured_cpu=bool(basis) and basis["cpu"] == "measured")
        except ValueError as e:
            raise Invalid(str(e)) from None
        return report | {"load": basis} if basis else report

    def _checked(self, kind: str, params: dict) -> tuple[dict, float | None]:
        """The plan's parameters, checked, and the load window when the plan weighs measured
        load (balance, unless told to ignore dynamic load as hbal --ignore-dynu is; consolidation)."""
        try:
            parsed = parse_parameters(kind, params)
        except ValueError as e:
            raise Invalid(str(e)) from None
        if kind not in APPLICABLE:
            return params, None
        window = load_window(parsed.get("load_window_s"), self.cp.telemetry.series.retention.raw_s)
        return params, None if parsed.get("ignore_dynu") else window

    def apply(self, kind: str, params: dict, requested_by: str = "admin"):
        """A task that makes the plan afresh when it starts (the pool may have changed since it
        was shown) and runs it stage by stage, the moves of a stage together, each a live
        migration booked and checked again as `vpool vm migrate --to` is. A move refused or
        failed ends the plan after its stage: every move made is whole, and each left the pool
        fitting and better scored. Consolidation first puts the hosts it empties in maintenance,
        so nothing new lands on them (vpool has no power control: powering off is the
        operator's). Hosts it would wake are named, not touched: maintenance an operator set
        for a repair looks the same as a host parked here."""
        if kind not in APPLICABLE:
            raise Invalid(f"only {' and '.join(APPLICABLE)} plans are applied; a {kind} plan is a report")
        self._checked(kind, params)
        return self.cp.runner.submit("plan.apply", kind, dict(params),
                                     lambda ctx: self._apply(ctx, kind, params, requested_by),
                                     requested_by=requested_by)

    def _apply(self, ctx, kind: str, params: dict, requested_by: str) -> dict:
        plan = self.plan(kind, params)
        moves, stages = plan["moves"], plan["stages"]
        ctx.progress(0, f"{count(len(moves), 'move')} in {count(stages, 'stage')}, score {plan['score_before']:.4f} "
                        f"-> {plan['score_after']:.4f}")
        parked = plan["power_off"]
        self._park(parked)
        done, not_moved = [], {}
        for stage in range(1, stages + 1):
            ctx.check_cancel()
            started = {}
            for m in (m for m in moves if m["stage"] == stage):
                try:
                    started[m["vm"]] = self.cp.migrations.migrate(m["vm"], to=m["to"], requested_by=requested_by).id
                except VpoolError as e:
                    not_moved[m["vm"]] = e.detail
            moved = self.cp.migrations.follow(ctx, started, not_moved, len(done), len(moves),
                                              f"stage {stage} of {stages}: ")
            done += [m for m in moves if m["vm"] in moved]
            if not_moved:
                break
        now = self.plan(kind, params)
        report = {"kind": kind, "score_before": plan["score_before"], "score_planned": plan["score_after"],
                  "score_now": now["score_before"], "moves": done, "planned_moves": len(moves),
                  "power_off": parked, "wake": plan["wake"], "load": plan.get("load")}
        if not_moved:
            reasons = "; ".join(f"{vm}: {why}" for vm, why in not_moved.items())
            parked_note = (f" {', '.join(parked)} stay in maintenance (vpool host maintenance H off takes one back)."
                           if parked else "")
            raise Conflict(f"the {kind} plan stopped after {len(done)} of {len(moves)} moves: {reasons}. Every move "
                           f"made is whole; the score is {now['score_before']:.4f} (was {plan['score_before']:.4f})."
                           + parked_note)
        return report

    def _park(self, hosts: list[str]) -> None:
        """Maintenance on, without the evacuation `vpool host maintenance` starts: the plan's
        moves empty these hosts."""
        if hosts:
            with self.cp.store.session() as s:
                s.execute(update(Host).where(Host.name.in_(hosts)).values(maintenance=True))
                s.commit()

    def export_htools(self) -> str:
        with self.cp.store.session() as s:
            return htools_text(cluster_state(s))


def _control_plane_stays_on(state: ClusterState, s) -> ClusterState:
    """A host reached without a host name (qemu:///system) is the machine vpool runs on:
    powering it off would take the control plane down with it."""
    here = {name for name, uri in s.execute(select(Host.name, Host.uri))
            if not (parsed := urlparse(uri)).scheme.startswith("test") and not parsed.hostname}
    if not here:
        return state
    return ClusterState.from_records([replace(h, tags=h.tags | {STAYS_ON}) if h.name in here else h
                                      for h in state.hosts], state.vms, state.group_policies)
