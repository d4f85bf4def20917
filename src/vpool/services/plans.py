"""Plans on the live pool: the store's view handed to the pure placement engine, read-only."""

from vpool.model.errors import Invalid
from vpool.placement.report import htools_text, plan_report
from vpool.services.pool import cluster_state


class PlanService:
    def __init__(self, cp):
        self.cp = cp

    def plan(self, kind: str, params: dict) -> dict:
        """kind: balance, consolidate, ha or capacity; params are the plan's policy, as text."""
        with self.cp.store.session() as s:
            state = cluster_state(s)
        try:
            return plan_report(kind, state, params)
        except ValueError as e:
            raise Invalid(str(e)) from None

    def export_htools(self) -> str:
        with self.cp.store.session() as s:
            return htools_text(cluster_state(s))
