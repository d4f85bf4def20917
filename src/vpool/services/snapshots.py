"""Snapshots: create (with or without memory), list as a tree, revert, delete.

What libvirt 9.0 can do decides the kind of snapshot:
- with --memory, a running VM gets an internal snapshot (disk and RAM inside its qcow2); a
  revert brings it back running at that moment;
- without --memory, a shut-off VM gets an internal disk snapshot, and a running one an
  external overlay (disk only; the only disk-only kind libvirt offers for a running VM).
  libvirt 9.0 cannot revert to external snapshots (that came in 9.7), so vpool refuses with
  the reason; deleting one merges its overlay back.
Backup checkpoints make qemu refuse an internal revert and libvirt then leaves the VM shut
off. vpool drops the checkpoints first (the next backup is then a full one, which it has to
be anyway: the disk went back in time) and restarts a VM a failed revert stopped.
"""

import libvirt
from sqlalchemy import select

from vpool.hypervisor import protection_xml as px
from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.model.errors import Conflict, HypervisorError, Invalid, NotFound
from vpool.model.names import check_name
from vpool.model.states import ACTIVE, STOPPED, VMOwnership, VMState
from vpool.placement.request import count
from vpool.store.migration_tables import BOOKING, Migration
from vpool.store.tables import VM, Host


def kind_of(s: px.SnapshotInfo) -> str:
    if s.external:
        return "disk (external overlay)"
    return "disk + memory" if s.memory else "disk"


def tree(snaps: list[px.SnapshotInfo]) -> list[dict]:
    """Depth-first, oldest first, each with its depth, so a list reads as the tree."""
    children: dict[str | None, list[px.SnapshotInfo]] = {}
    for s in snaps:
        children.setdefault(s.parent, []).append(s)
    out: list[dict] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: (x.created, x.name)):
            out.append({"name": s.name, "parent": s.parent, "depth": depth, "current": s.current,
                        "state": s.state, "kind": kind_of(s), "created": s.created,
                        "description": s.description, "children": [c.name for c in children.get(s.name, [])]})
            walk(s.name, depth + 1)

    walk(None, 0)
    return out


class SnapshotService:
    def __init__(self, cp, busy):
        self.cp = cp
        self.busy = busy

    def _vm(self, ref: str) -> VM:
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            if vm.ownership != VMOwnership.managed:
                raise Conflict(f"VM {vm.name} is not managed by vpool; adopt it first (vpool vm adopt {vm.name})")
            if vm.state == VMState.creating:
                raise Conflict(f"VM {vm.name} is still being created")
            self.cp.connections.driver(vm.host_id)  # refuse at once when the host is down
            return vm

    def _ops(self, vm: VM) -> ProtectionOps:
        return ProtectionOps(self.cp.connections.driver(vm.host_id))

    def _find(self, vm: VM, name: str) -> tuple[px.SnapshotInfo, list[px.SnapshotInfo]]:
        snaps = self._ops(vm).snapshots(vm.uuid)
        for snap in snaps:
            if snap.name == name:
                return snap, snaps
        known = ", ".join(s.name for s in snaps) or "none"
        raise NotFound(f"VM {vm.name} has no snapshot {name!r} (it has: {known})")

    def list_tree(self, ref: str) -> dict:
        vm = self._vm(ref)
        snaps = self._carried(vm) if vm.state == VMState.migrating else None
        if snaps is None:
            snaps = self._ops(vm).snapshots(vm.uuid)
        return {"vm": vm.name, "current": next((s.name for s in snaps if s.current), None), "snapshots": tree(snaps)}

    def _carried(self, vm: VM) -> list[px.SnapshotInfo] | None:
        """A migrating VM's snapshots are set aside in its Migration row (libvirt would not move
        the domain with them), so they are listed from there."""
        with self.cp.store.session() as s:
            carried = s.scalar(select(Migration.carried).where(Migration.vm_uuid == vm.uuid,
                                                               Migration.state.in_(BOOKING)))
        if not carried:
            return None
        return [px.parse_snapshot(m["xml"], m["current"]) for m in carried["snapshots"]]

    # --- create -------------------------------------------------------------------------------
    def create(self, ref: str, name: str, memory: bool = False, description: str | None = None,
               requested_by: str = "admin"):
        check_name(name, "snapshot name")
        if description is not None and len(description) > 1000:
            raise Invalid("a snapshot description is at most 1000 characters")
        vm = self._vm(ref)
        ops = self._ops(vm)
        if any(s.name == name for s in ops.snapshots(vm.uuid)):
            raise Conflict(f"VM {vm.name} already has a snapshot named {name!r}")
        state = ops.drv.state(vm.uuid)
        if memory and state not in ACTIVE:
            raise Invalid(f"a memory snapshot needs a running VM and {vm.name} is {state}; "
                          "leave out --memory for a disk snapshot")
        overlay = self._overlay(vm, ops)
        external = state in ACTIVE and not memory
        if overlay and not external:
            raise Conflict(f"VM {vm.name} runs on the overlay of disk-only snapshot {overlay}; an internal snapshot "
                           f"taken now would be lost when that overlay is merged. Delete snapshot {overlay} first "
                           "(that merges it), then take this one")
        with self.cp.store.session() as s:
            pool = s.get(Host, vm.host_id).storage_pool

        def body(ctx):
            if external:
                ctx.progress(20, "taking a disk-only snapshot (the disk continues in a new overlay)")
                base = ops.pool_path(pool)
                files = {disk: f"{base}/{overlay_name(vm.name, name)}" for disk in ops.disks(vm.uuid)}
                ops.create_snapshot(vm.uuid, px.snapshot_xml(name, description, files), disk_only=True)
                ops.refresh_pool(pool)
            else:
                ctx.progress(20, "saving disk and memory" if memory else "taking a disk snapshot")
                ops.create_snapshot(vm.uuid, px.snapshot_xml(name, description), disk_only=False)
            snap, _ = self._find(vm, name)
            return {"vm": vm.name, "snapshot": name, "kind": kind_of(snap)}

        return self.busy.run(self.cp, vm.name, "a snapshot", "snapshot.create",
                             {"name": name, "memory": memory}, body, requested_by)

    def _overlay(self, vm: VM, ops: ProtectionOps) -> str | None:
        """The external snapshot whose overlay the VM now writes to, if any."""
        active = set(ops.disks(vm.uuid).values())
        return next((s.name for s in ops.snapshots(vm.uuid) if s.external and active & set(s.overlays)), None)

    # --- revert -------------------------------------------------------------------------------
    def revert(self, ref: str, name: str, requested_by: str = "admin"):
        vm = self._vm(ref)
        ops = self._ops(vm)
        snap, _ = self._find(vm, name)
        if snap.external:
            raise Conflict(f"snapshot {name} is a disk-only snapshot of a running VM (an external overlay), and "
                           "libvirt 9.0 cannot revert to those (libvirt 9.7 can). Nothing was changed. "
                           "Take snapshots you want to go back to with --memory, or of the VM shut off")
        with self.cp.store.session() as s:
            ops.refresh_pool(s.get(Host, vm.host_id).storage_pool)  # libvirt's volume list may predate a loss
        if not vm.disk_path or not ops.drv.volume_exists(vm.disk_path):
            raise Conflict(f"the disk of VM {vm.name} ({vm.disk_path or 'unknown'}) no longer exists, so there is "
                           "nothing to revert; nothing was changed")
        overlay = self._overlay(vm, ops)
        if overlay:
            raise Conflict(f"VM {vm.name} runs on the overlay of disk-only snapshot {overlay}; delete that snapshot "
                           f"(it merges the overlay) before reverting to {name}. Nothing was changed")

        def body(ctx):
            before = ops.drv.state(vm.uuid)
            dropped = ops.drop_checkpoints(vm.uuid, lambda names: ctx.progress(
                20, f"dropping {len(names)} backup checkpoint(s); qemu cannot revert a disk that has them"))
            flags = 0
            if before in ("running", "blocked"):
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
            elif before == "paused":
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
            if flags and snap.state not in ACTIVE:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE  # boot the reverted disk afresh
            ctx.progress(50, f"reverting {vm.name} to {name}")
            try:
                ops.revert_snapshot(vm.uuid, name, flags)
            except HypervisorError as e:
                if before in ACTIVE and ops.drv.state(vm.uuid) in STOPPED:
                    ops.drv.start(vm.uuid)
                    raise HypervisorError(f"{e.detail}; vpool started {vm.name} again as it was") from e
                raise
            state = ops.drv.state(vm.uuid)
            size = self._record_state(vm.id, state, ops.drv.size(vm.uuid))
            notes = [f"the snapshot's size came back with it: {size}"] if size else []
            if dropped:
                notes.append(f"dropped {count(len(dropped), 'backup checkpoint')} that block a revert, "
                             f"so the next backup of {vm.name} is a full one")
            result = {"vm": vm.name, "snapshot": name, "state": state, "checkpoints_dropped": dropped}
            return result | {"note": "; ".join(notes)} if notes else result

        return self.busy.run(self.cp, vm.name, "a snapshot revert", "snapshot.revert", {"name": name}, body,
                             requested_by)

    def _record_state(self, vm_id: int, state: str, size: tuple[int, int] | None) -> str | None:
        """The VM's state after a revert, and the (vCPUs, memory MiB) the snapshot brought back
        if it was resized since: its host's room is counted on them. Returns the size when it changed."""
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            vm.state = state
            changed = size is not None and size != (vm.cpus, vm.memory_mib)
            if changed:
                vm.cpus, vm.memory_mib = size
            s.commit()
        return f"{size[0]} vCPU / {size[1]} MiB" if changed else None

    # --- delete -------------------------------------------------------------------------------
    def delete(self, ref: str, name: str, requested_by: str = "admin"):
        vm = self._vm(ref)
        ops = self._ops(vm)
        snap, snaps = self._find(vm, name)
        active = set(ops.disks(vm.uuid).values())
        is_top = bool(active & set(snap.overlays))
        internal_parent = snap.external and any(s.name == snap.parent and not s.external for s in snaps)
        if internal_parent and not is_top:
            raise Conflict(f"snapshot {name} is an overlay between others; libvirt 9.0 can merge it only when it is "
                           "the newest. Delete the newer disk-only snapshots first. Nothing was changed")
        with self.cp.store.session() as s:
            pool = s.get(Host, vm.host_id).storage_pool

        def body(ctx):
            if not internal_parent:
                ctx.progress(30, f"deleting {name}" + (" and merging its overlay" if snap.external else ""))
                ops.delete_snapshot(vm.uuid, name)
            else:
                # libvirt 9.0 refuses this case; merge by hand, then forget the snapshot.
                started = not ops.is_active(vm.uuid)
                if started:
                    ops.start_paused(vm.uuid)
                try:
                    for disk in ops.disks(vm.uuid):
                        ops.commit_active(vm.uuid, disk, lambda m: ctx.progress(40, m))
                finally:
                    if started:
                        ops.drv.destroy(vm.uuid)
                ops.delete_snapshot(vm.uuid, name, metadata_only=True)
                ops.refresh_pool(pool)
                for path in snap.overlays:
                    ops.drv.delete_volume(path)
            ops.refresh_pool(pool)
            return {"vm": vm.name, "deleted": name}

        return self.busy.run(self.cp, vm.name, "a snapshot delete", "snapshot.delete", {"name": name}, body,
                             requested_by)


def overlay_name(vm: str, snapshot: str) -> str:
    """'@' cannot be in a VM name, so VM a's overlay never takes the name of VM a.s1's disk."""
    return f"vm-{vm}@{snapshot}.qcow2"
