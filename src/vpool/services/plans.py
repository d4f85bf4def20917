"""Plans on the live pool: the store's view handed to the pure placement engine, read-only."""

from dataclasses import replace
from urllib.parse import urlparse

from sqlalchemy import select

from vpool.model.errors import Invalid
from vpool.placement import ClusterState
from vpool.placement.consolidate import STAYS_ON
from vpool.placement.report import htools_text, plan_report
from vpool.services.pool import cluster_state
from vpool.store.tables import Host


class PlanService:
    def __init__(self, cp):
        self.cp = cp

    def plan(self, kind: str, params: dict) -> dict:
        """kind: balance, consolidate, ha or capacity; params are the plan's policy, as text."""
        with self.cp.store.session() as s:
            state = _control_plane_stays_on(cluster_state(s), s) if kind == "consolidate" else cluster_state(s)
        try:
            return plan_report(kind, state, params)
        except ValueError as e:
            raise Invalid(str(e)) from None

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
