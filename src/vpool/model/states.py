"""Life-cycle states shared by the store, the services and the adapters."""

from enum import StrEnum


class TaskState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.succeeded, TaskState.failed, TaskState.cancelled)


class HostState(StrEnum):
    up = "up"
    down = "down"


class VMState(StrEnum):
    """libvirt's domain states, plus vpool's own before a domain exists."""

    creating = "creating"
    migrating = "migrating"  # a live migration owns the VM: the reconciler keeps its hands off
    running = "running"
    paused = "paused"
    shutoff = "shutoff"
    crashed = "crashed"
    pmsuspended = "pmsuspended"
    blocked = "blocked"
    shutdown = "shutdown"
    unknown = "unknown"
    missing = "missing"


ACTIVE = (VMState.running, VMState.blocked, VMState.paused)  # states with a qemu process behind them
STOPPED = (VMState.shutoff, VMState.crashed)  # what `vm start` starts, and `vm stop` calls stopped already


class VMOwnership(StrEnum):
    managed = "managed"
    unmanaged = "unmanaged"
