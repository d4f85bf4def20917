"""The HTTP API: thin routes over the control plane, bearer auth everywhere but /healthz."""

from fastapi import Depends, FastAPI

from vpool.api import problems
from vpool.api.deps import caller
from vpool.api.routes import flavors, groups, hosts, images, plans, tasks, vms
from vpool.api import prometheus
from vpool.api.routes import alarms, metrics
from vpool.api.routes import backups, clones, drills, schedules, snapshots
from vpool.api.routes import console, migrations


def create_app(cp) -> FastAPI:
    app = FastAPI(title="vpool", version="0.1.0",
                  description="One virtual resource pool out of libvirt hosts: hosts, VMs, flavors, images, tasks.")
    app.state.cp = cp
    app.state.token_cache = {}
    problems.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz():
        return {"status": "ok"}

    app.include_router(console.router)  # a WebSocket: it checks the token itself, to say why it refuses
    app.include_router(migrations.router, dependencies=[Depends(caller)])  # before vms, as below
    # Before vms: its /vms/{ref}/{op} would otherwise answer /vms/{ref}/snapshots and /vms/{ref}/clone.
    for module in (snapshots, backups, clones, schedules, drills):
        app.include_router(module.router, dependencies=[Depends(caller)])
    for module in (hosts, vms, flavors, groups, images, tasks, plans):
        app.include_router(module.router, dependencies=[Depends(caller)])
    for module in (metrics, alarms):
        app.include_router(module.router, dependencies=[Depends(caller)])
    prometheus.install(app)
    return app
