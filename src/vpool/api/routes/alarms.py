from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from vpool.api.deps import control_plane
from vpool.telemetry.timespec import parse_duration

router = APIRouter(tags=["alarms"])


class AlarmCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    kind: str = Field("threshold", description="threshold, or anomaly (fires on the detector's score)")
    scope: str = Field("vm", description="vm, host or pool")
    target: str | None = Field(None, description="one VM or host by name; default: each of the scope")
    metric: str
    comparison: str | None = Field(None, description=">, >=, < or <= (anomaly: >=, the default)")
    value: float
    for_: str | float = Field(0, alias="for", description="how long the condition must hold: 30s, 5m")
    webhook: str | None = Field(None, description="URL that gets a JSON POST when the alarm fires or resolves")


class AlarmChange(BaseModel):
    """Only what is given changes; `webhook: null` removes the webhook."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    comparison: str | None = Field(None, description=">, >=, < or <= (threshold alarms)")
    value: float | None = None
    for_: str | float | None = Field(None, alias="for", description="how long the condition must hold: 30s, 5m")
    webhook: str | None = Field(None, description="URL that gets a JSON POST when the alarm fires or resolves")
    enabled: bool | None = Field(None, description="false: the alarm judges nothing until enabled again")


@router.post("/alarms", status_code=201)
def create_alarm(body: AlarmCreate, cp=Depends(control_plane)):
    return cp.alarms.create(body.name, body.kind, body.scope, body.metric, body.comparison, body.value,
                            parse_duration(body.for_, "for"), body.target, body.webhook)


@router.get("/alarms")
def list_alarms(cp=Depends(control_plane)):
    items = cp.alarms.rules()
    return {"items": items, "total": len(items), "limit": len(items), "offset": 0}


@router.get("/alarms/history")
def alarm_history(alarm: str | None = None, limit: int = Query(100, ge=1, le=1000), cp=Depends(control_plane)):
    """Firing, resolved and disabled events, newest first, with whether the webhook took them."""
    items = cp.alarms.history(alarm, limit)
    return {"items": items, "total": len(items), "limit": limit, "offset": 0}


@router.get("/alarms/{name}")
def show_alarm(name: str, cp=Depends(control_plane)):
    return cp.alarms.get(name)


@router.patch("/alarms/{name}")
def change_alarm(name: str, body: AlarmChange, cp=Depends(control_plane)):
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    if changes.get("for_") is not None:
        changes["for_"] = parse_duration(changes["for_"], "for")
    return cp.alarms.update(name, {"for_s" if k == "for_" else k: v for k, v in changes.items()})


@router.delete("/alarms/{name}", status_code=204)
def delete_alarm(name: str, cp=Depends(control_plane)):
    cp.alarms.delete(name)
