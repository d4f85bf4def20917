from fastapi import APIRouter, Depends, Query

from vpool.api.deps import control_plane

router = APIRouter(tags=["metrics"])


@router.get("/metrics/query")
def query(vm: str | None = None, host: str | None = None, metric: str | None = None,
          since: str = Query("1h", description="a duration before now (1h) or an ISO 8601 time"),
          until: str | None = Query(None, description="like since; default now"),
          step: str | None = Query(None, description="bucket size (5m); default: the stored resolution"),
          cp=Depends(control_plane)):
    """A VM's series (vm=), a host's (host=), or the pool's (neither); each point is [t, mean, min, max]."""
    return cp.telemetry.query(vm, host, metric, since, until, step)


@router.get("/metrics/forecast")
def forecast(metric: str, vm: str | None = None, host: str | None = None,
             horizon: str = Query("30m", description="how far ahead (30m)"),
             history: str = Query("6h", description="how much stored history the model is fitted on"),
             cp=Depends(control_plane)):
    """One series' next values (Holt-Winters with a damped trend and a detected season, fitted on
    the stored history); each point is [t, value], a step apart."""
    return cp.telemetry.forecast(vm, host, metric, horizon, history)


@router.get("/metrics/latest")
def latest(host: str | None = None, cp=Depends(control_plane)):
    """The last collection interval from memory: every VM's and host's metrics and anomaly scores."""
    return cp.telemetry.current(host)
