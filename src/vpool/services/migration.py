"""Live migration as a Task: placed, booked, throttled per host, watched, and always settled.

The request decides and books before anything starts (a refusal changes nothing): the
destination is checked (or picked by placement, the VM's own host excluded), the VM's size is
booked there in the same transaction that marks the VM `migrating`, so no other placement can
take that room and the reconciler leaves the VM alone. The task then waits for a slot (per-host
limits on migrations out and in), runs libvirt's peer-to-peer pre-copy with auto-converge, and
switches to post-copy when pre-copy does not converge within the policy's bound. However it
ends, the task asks both hosts where the VM runs and writes that into the store, ends the
booking and keeps the record: duration, downtime, bytes, result. An abort is bounded too: if
libvirt has not ended the job one stall timeout after it (a disk copy whose connection died
drains only when TCP gives up, many minutes later), the task settles without waiting for it.
After the switch to post-copy nothing can be rolled back, so a broken link is waited out instead,
and the move finished when it returns: vpool restarts a broken post-copy stream from where it
stopped (see ``_await_split``).
What libvirt does not carry, the task does: snapshot metadata (libvirt 9.0 refuses to migrate a
domain with snapshots, though internal ones live in the disk image) and backup checkpoints (their
bitmaps go with the disk, their metadata did not, so the next backup was a full one) are kept in
the Migration row and defined again wherever the VM ends up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import NoReturn

from sqlalchemy import func, select

from vpool.hypervisor import protection_xml as px
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.hypervisor.libvirt_migration import (UNREACHABLE, JobProgress, LiveMigration, MigrationSpec,
                                                resume_postcopy, source_job_abort)
from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.model.errors import Conflict, HypervisorError, Invalid, NoCapacity, VpoolError
from vpool.model.states import ACTIVE, TaskState, VMOwnership, VMState
from vpool.placement import ClusterState, Placement, PlacementRequest, Workspace, explain, place
from vpool.placement.report import explanation_dict
from vpool.placement.request import count
from vpool.services import stored_policy
from vpool.services.measured_load import host_busy
from vpool.services.pool import group_constraints, cluster_state
from vpool.services.tasks import Cancelled
from vpool.store.migration_tables import BOOKING, Migration
from vpool.store.tables import VM, Host, Task, utcnow

POLL_S = 0.2
FOLLOW_S = 0.5  # how often a task that started migrations looks at them
CURRENT_HOST = "vpool:current-host"  # the tag that keeps placement off the VM's own host
OTHER_NETWORK = "vpool:other-network"  # ...and off hosts without the VM's network
SAME_STORAGE = "vpool:same-storage"  # ...and, for a disk copied into a host's own pool, off hosts that see it
RESTARTED = "the control plane restarted during the migration"


@dataclass(frozen=True)
class MigrationPolicy:
    """Pool-wide migration policy. The defaults follow vCenter's vMotion: stun the guest a
    little when it dirties memory faster than the link carries it (auto-converge, vMotion's
    SDPS), give pre-copy a bounded number of passes, then finish in post-copy rather than run
    on; two migrations out and two in per host at a time."""

    max_downtime_ms: int = 50  # QEMU measures the RAM switch-over against it; device state and stopping
    # the vCPUs come on top (tens of ms under TCG), so half the 100 ms a guest may notice
    bandwidth_mib_s: int = 0  # 0: as fast as the link goes
    auto_converge: bool = True
    postcopy: str = "auto"  # "auto": switch when pre-copy does not converge; "never"
    postcopy_after_iterations: int = 5  # passes over memory before the switch...
    postcopy_after_s: float = 60.0  # ...or seconds, whichever comes first (never in the first pass)
    stall_timeout_s: float = 60.0  # no byte moved for this long: abort
    postcopy_recovery_s: float = 900.0  # a post-copy whose link broke: how long to keep resuming it
    timeout_s: float = 1800.0
    max_outgoing: int = 2
    max_incoming: int = 2

    def check(self) -> MigrationPolicy:
        if self.postcopy not in ("auto", "never"):
            raise Invalid(f"postcopy must be 'auto' or 'never', not {self.postcopy!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and value < 0:
                raise Invalid(f"{f.name} must not be negative, got {value}")
        for name in ("max_outgoing", "max_incoming", "timeout_s", "stall_timeout_s", "postcopy_recovery_s",
                     "max_downtime_ms"):
            if getattr(self, name) <= 0:
                raise Invalid(f"{name} must be positive")
        return self


def load_policy(s) -> MigrationPolicy:
    return stored_policy.load(s, MigrationPolicy, "migration.")


# --- the pure decisions -------------------------------------------------------------------------
def next_step(policy: MigrationPolicy, p: JobProgress | None, elapsed_s: float, stalled_s: float,
              switched: bool, postcopy_allowed: bool) -> str | None:
    """'postcopy', an abort reason, or None to keep going."""
    if elapsed_s > policy.timeout_s:
        return f"it did not finish within {policy.timeout_s:g} s"
    if stalled_s > policy.stall_timeout_s:
        return f"no data moved for {policy.stall_timeout_s:g} s"
    if (postcopy_allowed and not switched and p is not None and p.active and p.iteration >= 2
            and (p.iteration > policy.postcopy_after_iterations or elapsed_s >= policy.postcopy_after_s)):
        return "postcopy"
    return None


def describe(p: JobProgress, switched: bool) -> tuple[int, str]:
    """(percent, message) for the Task."""
    mib = 2**20
    sent = p.memory_processed + p.disk_processed
    left = p.memory_remaining + p.disk_remaining
    pct = 5 + int(90 * sent / (sent + left)) if sent + left else 5
    words = [f"{'post-copy' if switched else f'pass {max(p.iteration, 1)}'}: {p.memory_processed // mib} MiB sent",
             f"{p.memory_remaining // mib} MiB left"]
    if p.disk_total:
        words.append(f"disk {p.disk_processed // mib}/{p.disk_total // mib} MiB")
    if p.dirty_rate_bps:
        words.append(f"guest dirties {p.dirty_rate_bps // mib} MiB/s")
    if p.expected_downtime_ms is not None and not switched:
        words.append(f"expected downtime {p.expected_downtime_ms} ms")
    if p.throttle_pct:
        words.append(f"vCPU throttled {p.throttle_pct}%")
    return min(pct, 95), ", ".join(words)


def settle(succeeded: bool, switched: bool, source_state: str, dest_state: str) -> str | None:
    """Where the VM runs once the migrate call has returned: 'source', 'destination', or None
    when the hosts' answers do not tell (a host unreachable, or a post-copy cut in the middle)."""
    if succeeded:
        return "destination"
    on_source, on_dest = source_state in ACTIVE, dest_state in ACTIVE
    if on_source and on_dest:
        # Pre-copy never resumes the destination before the source hands over, so its copy
        # is a leftover libvirt removes; after a post-copy switch both halves are the VM.
        return None if switched else "source"
    if on_source:
        return "source" if dest_state != UNREACHABLE or not switched else None
    if on_dest:
        return "destination" if source_state != UNREACHABLE else None
    return None


def unused_copy(copies: dict[str, list], host_id: int | None, state_on: Callable[[int], str]) -> str | None:
    """Which of an undecided copy-storage migration's two disks ('source' or 'destination') the
    VM does not use: the one on the host it is not found running on, once that host answers that
    it does not run it either (one out of reach may). None while that is not known."""
    sides = {copy[0]: side for side, copy in copies.items()}
    if host_id not in sides:
        return None
    other = "source" if sides[host_id] == "destination" else "destination"
    return None if state_on(copies[other][0]) in (*ACTIVE, UNREACHABLE) else other


def _disk_copies(job: dict, new_disk: str) -> dict[str, list]:
    return {"source": [job["src_id"], job["disk"], job["storage"]],
            "destination": [job["dst_id"], new_disk, job["disk_storage"]]}


def whereabouts(where: str | None, switched: bool, src: str, dst: str, source_state: str, dest_state: str) -> str:
    """What a failed migration's message says of the VM, from ``settle``'s answer."""
    if where == "destination":
        return f"it runs on {dst}"
    if where is None:
        return (f"vpool cannot tell where it runs ({src}: {source_state}, {dst}: {dest_state}); it is recorded as "
                "unknown until a host answers")
    if source_state == "running":
        return f"it still runs on {src}"
    if switched:  # the destination ran the guest for a while, and its part of the memory is gone
        return (f"it is {source_state} on {src} with the memory it had at the switch to post-copy, which the "
                "destination may have changed since: resuming it could corrupt its disk; stop it "
                "(vpool vm stop --force) and start it again")
    return f"it is {source_state} on {src}"


def _refuse_losing_snapshots(snaps: list[px.SnapshotInfo], vm: str) -> None:
    """On shared storage a VM's snapshots go where it goes: internal ones live in its disk image,
    overlays beside it, and vpool carries the metadata libvirt 9.0 will not. A disk copy takes
    only what the guest sees, so there they would be lost."""
    if snaps:
        raise Conflict(f"VM {vm} has {count(len(snaps), 'snapshot')}, which a copy-storage migration would lose (it "
                       "copies only what the guest sees); delete the snapshots first, or migrate on shared storage")


def _destinations(state: ClusterState, source: str, networks: dict[str, str], seeing_disk: set[str]) -> ClusterState:
    """Tags the VM's own host, the hosts that put guests on another network than its host does (a
    live migration keeps the VM's network card as it is, so its network must be there) and
    `seeing_disk`, the hosts a disk copy into their own pool would write over the disk itself."""
    hosts = [replace(h, tags=h.tags | {CURRENT_HOST}) if h.name == source else
             replace(h, tags=h.tags | {OTHER_NETWORK}) if networks.get(h.name) != networks[source] else
             replace(h, tags=h.tags | {SAME_STORAGE}) if h.name in seeing_disk else h
             for h in state.hosts]
    return ClusterState.from_records(hosts, state.vms, state.group_policies)


@dataclass(frozen=True)
class _Question:
    """Where a VM may go, as placement is asked it: the pool with the VM's own host, the hosts
    on another network and those that would see a copied disk tagged off, and the request. What
    `migrate` books on and `preview` explains."""

    vm: str
    source: str
    to: str | None
    state: ClusterState
    request: PlacementRequest
    networks: dict[str, str]
    seeing_disk: set[str]

    @classmethod
    def ask(cls, s, cp, vm: VM, source: str, to: str | None, copy_storage: bool, storage_pool: str | None,
            busy: dict[str, float]) -> "_Question":
        """Refuses a named destination on another network, or one a disk copy would write over."""
        networks = dict(s.execute(select(Host.name, Host.network)).all())
        target = cp.hosts.get(s, to).name if to is not None else None
        if target is not None and networks[target] != networks[source]:
            raise Conflict(_other_network(vm.name, source, networks, target))
        seeing_disk = set()
        if copy_storage and vm.disk_storage:
            same = select(Host.name).where(Host.storage == vm.disk_storage)
            if storage_pool is not None:
                same = same.where(Host.storage_pool == storage_pool)
            seeing_disk = set(s.scalars(same))
        if target in seeing_disk:
            raise Conflict(_sees_disk(vm.name, target))
        state = _destinations(cluster_state(s, per_vm=False, cpu_busy=busy), source, networks, seeing_disk)
        request = PlacementRequest(  # the disk needs room there only when it is copied
            name=vm.name, cpus=vm.cpus, memory_mib=vm.memory_mib, disk_gib=vm.disk_gib if copy_storage else 0,
            host=to, forbid_tags=frozenset({CURRENT_HOST, OTHER_NETWORK, SAME_STORAGE}),
            storage=None if copy_storage else vm.disk_storage or "", **group_constraints(vm.group))
        return cls(vm.name, source, to, state, request, networks, seeing_disk)

    def refuse(self, decision: Placement) -> NoReturn:
        """Why no host will do, said as the operator can act on it: the hosts with room see the
        disk already, or cannot see it (on the VM's network), or lack the VM's network; else where
        room is short."""
        state, request, name = self.state, self.request, self.vm
        if self.to is None and self.seeing_disk and (on_it := place(state, replace(request, forbid_tags=frozenset({
                CURRENT_HOST, OTHER_NETWORK})))).ok:
            raise Conflict(_sees_disk(name, on_it.host, example=True))
        if request.storage is not None:
            elsewhere = place(state, replace(request, storage=None))
            if elsewhere.ok:
                where = self.to or f"the hosts with room (such as {elsewhere.host})"
                raise Conflict(f"cannot migrate {name}: {where} cannot see its disk, which is on other "
                               "storage; migrate with --copy-storage")
            decision = elsewhere  # room is missing even with the disk copied: say where it is short
        if self.to is None:
            anywhere = place(state, replace(request, storage=None, forbid_tags=frozenset({CURRENT_HOST})))
            if anywhere.ok and self.networks[anywhere.host] != self.networks[self.source]:
                raise Conflict(_other_network(name, self.source, self.networks, anywhere.host, example=True))
        raise NoCapacity(f"cannot migrate {name}: {decision.message} (its own host {self.source} does not count)")

    def explained(self) -> dict:
        """The explanation as `vm migrate --dry-run` shows it, the tags that keep hosts off read
        as the reasons they are."""
        explanation = explain(self.state, self.request, tag_words=_KEPT_OFF)
        answer = explanation_dict(self.request, explanation)
        if answer["host"] is None:
            try:
                self.refuse(explanation.placement)
            except VpoolError as e:
                answer["message"] = e.detail
        return answer


_KEPT_OFF = {CURRENT_HOST: "the VM's own host", OTHER_NETWORK: "guests there are on another network",
             SAME_STORAGE: "sees the disk already (nothing to copy it to)"}


def _sees_disk(vm: str, host: str, example: bool = False) -> str:
    """`example`: `host` is one of the hosts with room, all of which see the disk already."""
    who = f"the hosts with room (such as {host}) already see" if example else f"{host} already sees"
    return (f"cannot copy {vm}'s disk: {who} the storage it is on; migrate without --copy-storage, "
            "or name another of the destination's pools with --storage-pool")


def _other_network(vm: str, source: str, networks: dict[str, str], host: str, example: bool = False) -> str:
    """`example`: `host` is one of the hosts with room, none of which has the network."""
    where = f"the hosts with room (such as {host}) do" if example else f"{host} does"
    return (f"cannot migrate {vm}: its network card is on {networks[source]} on {source}, which {where} "
            f"not offer (guests there are on {networks[host]}); a live migration keeps the "
            "card on its network, so the VM can only go to hosts that have it (a host joins with its network "
            f"chosen: vpool host add URI --network {networks[source]})")


def describe_row(m: Migration) -> dict:
    return {
        "id": m.id, "vm": m.vm_name, "vm_uuid": m.vm_uuid, "task_id": m.task_id, "source": m.source,
        "destination": m.destination, "state": m.state, "copy_storage": m.copy_storage,
        "max_downtime_ms": m.max_downtime_ms, "bandwidth_mib_s": m.bandwidth_mib_s, "postcopy": m.postcopy,
        "leftover_disk": m.leftover_disk,
        "undecided_disks": {m.source if side == "source" else m.destination: path
                            for side, (_, path, _) in (m.undecided_disks or {}).items()},
        "iterations": m.iterations, "duration_ms": m.duration_ms, "downtime_ms": m.downtime_ms,
        "memory_bytes": m.memory_bytes, "disk_bytes": m.disk_bytes, "error": m.error,
        "created_at": m.created_at, "started_at": m.started_at, "finished_at": m.finished_at,
        "wall_ms": int((m.finished_at - m.started_at).total_seconds() * 1000)
        if m.finished_at and m.started_at else None,
    }


@dataclass
class _Run:
    """What one migration knows once its migrate call has returned."""

    started: bool = False  # the migrate call was made: only then may the VM be anywhere but the source
    error: str | None = None
    aborted_why: str | None = None
    cancelled: bool = False
    switched: bool = False
    unfinished: bool = False  # libvirt had not ended the job a stall timeout after vpool aborted it
    interrupted: str | None = None  # why a post-copy broke that the hosts then finished
    resumed: bool = False  # ...by vpool restarting its stream (else by the stream going on)
    stats: dict | None = None
    source_state: str = UNREACHABLE
    dest_state: str = UNREACHABLE


class MigrationService:
    def __init__(self, cp, busy):
        self.cp = cp
        self.busy = busy  # a VM migrates only when no snapshot, backup or clone of it runs
        self._slots = threading.Condition()
        self._out: Counter[int] = Counter()
        self._in: Counter[int] = Counter()

    def policy(self) -> MigrationPolicy:
        with self.cp.store.session() as s:
            return load_policy(s)

    # --- request: decide and book, or refuse with nothing changed ------------------------------
    def migrate(self, ref: str, to: str | None = None, copy_storage: bool = False,
                max_downtime_ms: int | None = None, bandwidth_mib_s: int | None = None,
                storage_pool: str | None = None, requested_by: str = "admin"):
        if max_downtime_ms is not None and not 1 <= max_downtime_ms <= 60000:
            raise Invalid("max downtime must be 1 to 60000 ms")
        if bandwidth_mib_s is not None and not 1 <= bandwidth_mib_s <= 1_000_000:
            raise Invalid("bandwidth must be 1 to 1000000 MiB/s")
        uuid, name, src_id, src_name = self._movable(ref, to)
        release = self.busy.claim(name, "a migration")
        try:
            self._source_ready(src_id, uuid, name, copy_storage)
            mig_id, task, storage_pool = self._book(ref, to, src_id, src_name, copy_storage, max_downtime_ms,
                                                    bandwidth_mib_s, storage_pool, requested_by)
        except BaseException:
            release()
            raise

        def body(ctx):
            try:
                return self._run_task(ctx, mig_id, storage_pool)
            finally:
                release()

        return self.cp.runner.start(task, body)

    def preview(self, ref: str, to: str | None = None, copy_storage: bool = False,
                storage_pool: str | None = None) -> dict:
        """Where `migrate` would move the VM now and why, host by host (the compatibility check of
        vCenter's migrate wizard); nothing is booked, and what `migrate` refuses is refused."""
        uuid, name, src_id, src_name = self._movable(ref, to)
        self._source_ready(src_id, uuid, name, copy_storage)
        question, sees_disk = self._ask(ref, src_name, to, copy_storage, storage_pool,
                                        host_busy(self.cp) if to is None else {})
        answer = question.explained()
        if answer["host"] is not None and not copy_storage:
            try:
                sees_disk(answer["host"])
            except Conflict as e:
                answer |= {"host": None, "message": e.detail}
        return answer

    def rehearse(self, refs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """Where each VM would go if `migrate` were asked for them one after another, each
        booking the room the ones before it took (as an evacuation does), and why each of the
        others would stay: (VM -> destination, VM -> reason). Nothing is booked."""
        moves: dict[str, str] = {}
        not_moved: dict[str, str] = {}
        booked: list[tuple[str, PlacementRequest]] = []
        busy = host_busy(self.cp)
        for ref in refs:
            try:
                uuid, name, src_id, src_name = self._movable(ref, None)
                self._source_ready(src_id, uuid, name, False)
                question, sees_disk = self._ask(ref, src_name, None, False, None, busy)
                work = Workspace(question.state)
                for host, request in booked:
                    work.add(work.host_index[host], request.demand, request.groups)
                question = replace(question, state=work)
                decision = place(work, question.request)
                if not decision.ok:
                    question.refuse(decision)
                sees_disk(decision.host)
            except VpoolError as e:
                not_moved[ref] = e.detail
                continue
            moves[ref] = decision.host
            booked.append((decision.host, question.request))
        return moves, not_moved

    def _ask(self, ref: str, source: str, to: str | None, copy_storage: bool, storage_pool: str | None,
             busy: dict[str, float]) -> tuple[_Question, Callable[[str], None]]:
        """The question placement is asked for this VM, and the check that a host opens its disk
        in place (what `migrate` refuses last, after booking)."""
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            question = _Question.ask(s, self.cp, vm, source, to, copy_storage, storage_pool, busy)
            name, disk_path, ids = vm.name, vm.disk_path, dict(s.execute(select(Host.name, Host.id)).all())
        return question, lambda host: self._check_sees_disk(ids[host], host, name, disk_path)

    def _movable(self, ref: str, to: str | None) -> tuple[str, str, int, str]:
        """The VM's uuid, name, host id and host name, once it can move at all (and not onto its
        own host)."""
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            self._check_movable(s, vm)
            if to is not None and (target := self.cp.hosts.get(s, to)).id == vm.host_id:
                raise Invalid(f"VM {vm.name} already runs on {target.name}")
            return vm.uuid, vm.name, vm.host_id, vm.host.name

    def _check_sees_disk(self, dest_id: int, dest: str, name: str, disk_path: str | None) -> None:
        """Refuses a destination that cannot open the VM's disk in place: storage that placement
        counts as shared by its id may still not be the same files there."""
        if disk_path and not self.cp.connections.driver(dest_id).volume_exists(disk_path):
            raise Conflict(f"{dest} does not see {name}'s disk {disk_path} (no shared storage); "
                           "migrate with --copy-storage")

    def _source_ready(self, src_id: int, uuid: str, name: str, copy_storage: bool) -> None:
        """Refuses at once when the source is down, and a disk copy that would lose snapshots."""
        source = self.cp.connections.driver(src_id)
        if copy_storage:
            _refuse_losing_snapshots(ProtectionOps(source).snapshots(uuid), name)

    def follow(self, ctx, started: dict[str, int], not_moved: dict[str, str], done_before: int = 0,
               total: int | None = None, stage: str = "") -> dict[str, str]:
        """Follows migration tasks (VM -> task id) to their end for a task that started them
        (maintenance, a plan): its progress counts them, its cancel cancels them. Returns VM ->
        destination for those that moved; why the others did not goes into not_moved."""
        refused = len(not_moved)  # refused before they started: done, as far as progress goes
        total = total if total is not None else done_before + refused + len(started)
        moved: dict[str, str] = {}
        pending = dict(started)
        while pending:
            if ctx.cancelled():
                for task_id in pending.values():
                    self.cp.runner.cancel(task_id)
            with self.cp.store.session() as s:
                tasks = {vm: s.get(Task, tid) for vm, tid in pending.items()}
            for vm, t in tasks.items():
                if t.state == TaskState.succeeded:
                    moved[vm] = t.result["destination"]
                elif t.state in (TaskState.failed, TaskState.cancelled):
                    not_moved[vm] = t.error or t.message
                else:
                    continue
                del pending[vm]
            done = done_before + refused + len(started) - len(pending)
            ctx.progress(int(100 * done / max(total, 1)), f"{stage}{len(moved)} moved, {len(not_moved)} not moved, "
                                                          f"{len(pending)} migrating")
            if pending:
                time.sleep(FOLLOW_S)
        if ctx.cancelled():
            raise Cancelled()
        return moved

    def _book(self, ref: str, to: str | None, src_id: int, src_name: str, copy_storage: bool,
              max_downtime_ms: int | None, bandwidth_mib_s: int | None, storage_pool: str | None,
              requested_by: str):
        """The Migration row, its task and the pool a copied disk goes to (the destination's own
        by default), or a refusal that changed nothing."""
        busy = host_busy(self.cp) if to is None else {}
        with self.cp.store.session() as s, self.cp.store.placement_lock(s):
            vm = self.cp.vms.get(s, ref)
            self._check_movable(s, vm)  # again, under the lock: a second request may have won
            question = _Question.ask(s, self.cp, vm, src_name, to, copy_storage, storage_pool, busy)
            decision = place(question.state, question.request)
            if not decision.ok:
                question.refuse(decision)
            dest = s.scalar(select(Host).where(Host.name == decision.host))
            storage_pool = (storage_pool or dest.storage_pool) if copy_storage else None
            row = Migration(vm_id=vm.id, vm_name=vm.name, vm_uuid=vm.uuid, source_host_id=src_id,
                            destination_host_id=dest.id, source=src_name, destination=dest.name,
                            cpus=vm.cpus, memory_mib=vm.memory_mib, disk_gib=vm.disk_gib, copy_storage=copy_storage,
                            max_downtime_ms=max_downtime_ms, bandwidth_mib_s=bandwidth_mib_s, state="queued")
            s.add(row)
            prior_state = vm.state
            vm.state = VMState.migrating
            s.commit()
            mig_id, vm_id, dest_id, name = row.id, vm.id, dest.id, vm.name
        try:
            if not copy_storage:
                self._check_sees_disk(dest_id, dest.name, name, vm.disk_path)
        except BaseException:
            self._unbook(mig_id, vm_id, prior_state)
            raise
        task = self.cp.runner.new("vm.migrate", name, {
            "to": dest.name, "from": src_name, "copy_storage": copy_storage, "max_downtime_ms": max_downtime_ms,
            "bandwidth_mib_s": bandwidth_mib_s, "storage_pool": storage_pool},
            requested_by)
        with self.cp.store.session() as s:
            s.get(Migration, mig_id).task_id = task.id
            s.commit()
        return mig_id, task, storage_pool

    def _check_movable(self, s, vm: VM) -> None:
        if vm.ownership != VMOwnership.managed:
            raise Conflict(f"VM {vm.name} is not managed by vpool; adopt it first (vpool vm adopt {vm.name})")
        if vm.state == VMState.migrating:
            task = s.scalar(select(Migration.task_id).where(Migration.vm_uuid == vm.uuid,
                                                            Migration.state.in_(BOOKING)))
            raise Conflict(f"VM {vm.name} is already migrating (task {task})")
        if vm.state not in ACTIVE:
            raise Conflict(f"VM {vm.name} is {vm.state}: live migration moves running or paused VMs")
        if vm.host_id is None:
            raise Conflict(f"VM {vm.name} has no host")

    # --- the task ----------------------------------------------------------------------------
    def _run_task(self, ctx, mig_id: int, storage_pool: str | None) -> dict:
        with self.cp.store.session() as s:
            m = s.get(Migration, mig_id)
            vm = s.get(VM, m.vm_id)
            src, dst = s.get(Host, m.source_host_id), s.get(Host, m.destination_host_id)
            policy = load_policy(s)
            job = dict(vm_id=vm.id, uuid=vm.uuid, name=vm.name, disk=vm.disk_path, disk_gib=vm.disk_gib,
                       storage=vm.disk_storage,
                       src_id=src.id, src=src.name, src_uri=src.uri, dst_id=dst.id, dst=dst.name, dst_uri=dst.uri,
                       copy=m.copy_storage, downtime=m.max_downtime_ms or policy.max_downtime_ms,
                       bandwidth=m.bandwidth_mib_s or policy.bandwidth_mib_s or None)
        run, new_disk, took_slot = _Run(), None, False
        try:
            took_slot = self._take_slot(ctx, job)
            with self.cp.store.session() as s:
                row = s.get(Migration, mig_id)
                row.state, row.started_at = "running", utcnow()
                s.commit()
            if not job["copy"]:  # a copied disk has no snapshots (refused) and starts without bitmaps
                self._set_metadata_aside(ctx, mig_id, job)
            else:
                ctx.progress(3, f"creating {job['name']}'s disk in pool {storage_pool} on {job['dst']}")
                dst_drv = self.cp.connections.driver(job["dst_id"])
                job["disk_storage"] = dst_drv.storage_identity(storage_pool)
                new_disk = dst_drv.create_disk(storage_pool, f"vm-{job['name']}.qcow2", job["disk_gib"])
                with self.cp.store.session() as s:
                    s.get(Migration, mig_id).undecided_disks = _disk_copies(job, new_disk)
                    s.commit()
            self._live(ctx, job, policy, new_disk, run)
            if run.switched and run.error is not None:
                self._await_split(ctx, job, policy, run)
        except Cancelled:
            run.cancelled = True
        except Exception as e:
            run.error = e.detail if isinstance(e, HypervisorError) else f"{type(e).__name__}: {e}"
        finally:
            if took_slot:
                self._release_slot(job)
        return self._finish(mig_id, job, run, new_disk)

    def _set_metadata_aside(self, ctx, mig_id: int, job: dict) -> None:
        """The snapshot and checkpoint metadata libvirt will not carry goes into the Migration row
        before libvirt forgets any of it, so a control plane that dies mid-way still puts it back
        where the VM is (``recover``)."""
        ops = ProtectionOps(self.cp.connections.driver(job["src_id"]))
        carried = {"snapshots": ops.snapshot_definitions(job["uuid"]),
                   "checkpoints": ops.checkpoint_definitions(job["uuid"])}
        if not any(carried.values()):
            return
        with self.cp.store.session() as s:
            s.get(Migration, mig_id).carried = carried
            s.commit()
        if carried["snapshots"]:
            ctx.progress(3, f"setting the metadata of {count(len(carried['snapshots']), 'snapshot')} aside "
                            "(libvirt 9.0 migrates no domain that has any); the snapshots are in the disk image")
            ops.forget_snapshots(job["uuid"], carried["snapshots"])

    def _put_metadata_back(self, mig_id: int, uuid: str, host_id: int | None) -> str | None:
        """Defines the carried metadata again on the host the VM is on. A failure is told, not
        raised: the VM is where it is either way, and the metadata stays in the row for
        ``put_back_carried``."""
        with self.cp.store.session() as s:
            carried = s.get(Migration, mig_id).carried
        if not carried:
            return None
        try:
            if host_id is None:
                raise Conflict("it is not known where the VM is")
            ProtectionOps(self.cp.connections.driver(host_id)).redefine(uuid, carried)
        except (Conflict, HypervisorError) as e:
            names = ", ".join(m["name"] for m in carried["snapshots"] + carried["checkpoints"])
            return (f"its snapshots and backup checkpoints ({names}) could not be defined again: {e}; migration "
                    f"{mig_id} keeps their metadata, and vpool defines them where the VM is once it can")
        with self.cp.store.session() as s:
            s.get(Migration, mig_id).carried = None
            s.commit()
        return None

    def _take_slot(self, ctx, job: dict) -> bool:
        policy = self.policy()
        with self._slots:
            while self._out[job["src_id"]] >= policy.max_outgoing or self._in[job["dst_id"]] >= policy.max_incoming:
                ctx.progress(1, f"waiting for a migration slot ({self._out[job['src_id']]} leaving {job['src']}, "
                                f"{self._in[job['dst_id']]} arriving at {job['dst']})")
                self._slots.wait(0.5)
                ctx.check_cancel()
            self._out[job["src_id"]] += 1
            self._in[job["dst_id"]] += 1
        return True

    def _release_slot(self, job: dict) -> None:
        with self._slots:
            self._out[job["src_id"]] -= 1
            self._in[job["dst_id"]] -= 1
            self._slots.notify_all()

    def _live(self, ctx, job: dict, policy: MigrationPolicy, new_disk: str | None, run: _Run) -> None:
        ctx.progress(4, f"{job['src']} -> {job['dst']}: starting")
        postcopy_allowed = policy.postcopy == "auto" and not job["copy"]  # libvirt: no post-copy with disk copy
        lm = LiveMigration(MigrationSpec(job["uuid"], job["src_uri"], job["dst_uri"], job["bandwidth"],
                                         postcopy_allowed, policy.auto_converge, new_disk))
        try:
            lm.start(job["downtime"])
            run.started = True
            started = last_change = time.monotonic()
            moved, aborted_at = -1, None
            while not lm.wait(POLL_S):
                now = time.monotonic()
                p = lm.progress()
                if p is not None and p.active:
                    if p.memory_processed + p.disk_processed != moved:
                        moved, last_change = p.memory_processed + p.disk_processed, now
                    ctx.progress(*describe(p, run.switched))
                if ctx.cancelled() and not run.cancelled:
                    run.cancelled = True
                    if not run.switched:  # post-copy cannot go back: the destination already runs the VM
                        lm.abort()
                        aborted_at = now
                step = next_step(policy, p, now - started, now - last_change, run.switched, postcopy_allowed)
                if step == "postcopy":
                    run.switched = lm.start_postcopy()
                    if run.switched:
                        ctx.progress(90, f"pre-copy did not converge in {p.iteration} passes: switched to post-copy")
                elif step and run.aborted_why is None and not run.switched:
                    run.aborted_why = step
                    lm.abort()
                    aborted_at = now
                if aborted_at is not None and now - aborted_at > policy.stall_timeout_s:
                    # Before the switch-over the VM never left its source, so the task can end
                    # here; what keeps libvirt busy (a disk copy whose connection died: qemu
                    # drains it only when TCP gives up) ends by itself, watched by close_when_done.
                    run.unfinished = True
                    break
        finally:
            if run.started:
                if not lm.wait(0) and not run.unfinished:  # vpool failed mid-way: leave no migration nobody watches
                    lm.abort()
                    run.unfinished = not lm.wait(policy.stall_timeout_s)
                run.error = lm.error
                if run.unfinished:
                    run.error = (f"libvirt had not ended the job {policy.stall_timeout_s:g} s after the abort (a disk "
                                 "copy whose connection died waits until TCP gives up); it ends by itself")
                elif run.error is None:
                    run.stats = lm.final_stats()
                run.source_state, run.dest_state = lm.states()
            lm.close_when_done()

    def _await_split(self, ctx, job: dict, policy: MigrationPolicy, run: _Run) -> None:
        """After the switch to post-copy the VM's memory lives on both hosts, so a broken link
        cannot be rolled back: the migration is finished instead. A stream that only stalled
        goes on by itself when the link returns within TCP's retry time; one that broke leaves
        both halves paused, and vpool restarts it from where it stopped (resume_postcopy) as
        soon as the hosts reach each other again. Both hosts are watched (fresh connections) for
        up to ``postcopy_recovery_s`` before the VM's home is called unknown."""
        spec = MigrationSpec(job["uuid"], job["src_uri"], job["dst_uri"], job["bandwidth"], True, policy.auto_converge)
        deadline = time.monotonic() + policy.postcopy_recovery_s
        last_try = None
        while settle(False, True, run.source_state, run.dest_state) is None and time.monotonic() < deadline:
            ctx.progress(95, f"the migration broke after the switch to post-copy ({run.error}); {job['name']} is "
                             f"paused until {job['src']} and {job['dst']} finish it ({job['src']}: {run.source_state}, "
                             f"{job['dst']}: {run.dest_state})"
                             + (f"; resuming failed: {last_try}" if last_try else ""))
            if run.source_state == VMState.paused and not run.resumed:
                last_try = resume_postcopy(spec, policy.stall_timeout_s)
                run.resumed = last_try is None
            if not run.resumed:
                time.sleep(2)
            run.source_state = _state_at(job["src_uri"], job["uuid"])
            run.dest_state = _state_at(job["dst_uri"], job["uuid"])
        if settle(False, True, run.source_state, run.dest_state) == "destination":
            run.interrupted, run.error = run.error, None

    def _finish(self, mig_id: int, job: dict, run: _Run, new_disk: str | None) -> dict:
        """Writes where the VM is, ends the booking, and answers as the task."""
        succeeded = run.started and run.error is None
        if run.started:
            where = settle(succeeded, run.switched, run.source_state, run.dest_state)
        else:
            where, run.source_state = "source", self._state_now(job["src_id"], job["uuid"])
        host_id = {"source": job["src_id"], "destination": job["dst_id"]}.get(where)
        vm_state = {"source": run.source_state, "destination": run.dest_state}.get(where, VMState.unknown)
        if vm_state not in ACTIVE:
            vm_state = VMState.running if where == "destination" else VMState.unknown  # the reconciler corrects it
        stats = run.stats or {}
        if succeeded:
            state, error = "succeeded", None
        elif run.cancelled and where == "source":
            state, error = "cancelled", "cancelled at the operator's request"
        else:
            state = "failed"
            why = run.aborted_why and f"vpool aborted it: {run.aborted_why}"
            error = why or run.error or "cancelled after the switch to post-copy, which cannot go back"
            if why and run.unfinished:
                error = f"{why}; {run.error}"
        lost_metadata = self._put_metadata_back(mig_id, job["uuid"], host_id)
        if lost_metadata and state == "failed":
            error = f"{error}; {lost_metadata}"
        self._end(mig_id, job["vm_id"], state, vm_state, host_id, error=error, stats=stats, switched=run.switched,
                  disk=(new_disk, job.get("disk_storage")) if where == "destination" and new_disk else None)
        self._clean_disks(mig_id, job, where, new_disk)
        if state == "cancelled":
            raise Cancelled()
        if state == "failed":
            there = whereabouts(where, run.switched, job["src"], job["dst"], run.source_state, run.dest_state)
            raise HypervisorError(f"migration of {job['name']} from {job['src']} to {job['dst']} failed: {error}; "
                                  f"{there}")
        result = {"vm": job["name"], "source": job["src"], "destination": job["dst"], "postcopy": run.switched,
                  "duration_ms": stats.get("time_elapsed"), "downtime_ms": stats.get("downtime"),
                  "memory_bytes": stats.get("memory_processed"), "disk_bytes": stats.get("disk_processed"),
                  "iterations": stats.get("memory_iteration")}
        if run.interrupted:
            result["note"] = f"the link broke during post-copy ({run.interrupted}); " + (
                "vpool resumed the migration from where it stopped once the hosts reached each other again"
                if run.resumed else "the hosts finished the migration once it came back")
        if lost_metadata:
            result["note"] = "; ".join(filter(None, (result.get("note"), lost_metadata)))
        return result

    def _end(self, mig_id: int, vm_id: int, state: str, vm_state: str, host_id: int | None, error: str | None = None,
             stats: dict | None = None, switched: bool = False, disk: tuple[str, str] | None = None) -> None:
        """disk: (path, storage id) of a disk copied to the destination, now the VM's."""
        stats = stats or {}
        with self.cp.store.session() as s:
            row = s.get(Migration, mig_id)
            row.state, row.error, row.finished_at, row.postcopy = state, error, utcnow(), switched
            row.duration_ms, row.downtime_ms = stats.get("time_elapsed"), stats.get("downtime")
            row.memory_bytes, row.disk_bytes = stats.get("memory_processed"), stats.get("disk_processed")
            row.iterations = stats.get("memory_iteration")
            vm = s.get(VM, vm_id)
            if vm is not None:
                vm.state = vm_state
                if host_id is not None:
                    vm.host_id = host_id
                if disk is not None:
                    vm.disk_path, storage = disk
                    vm.storage = None if storage == s.get(Host, host_id).storage else storage
            s.commit()

    def _unbook(self, mig_id: int, vm_id: int, prior_state: str) -> None:
        """A request refused after it booked: as if it never came."""
        with self.cp.store.session() as s:
            s.delete(s.get(Migration, mig_id))
            s.get(VM, vm_id).state = prior_state
            s.commit()

    def _state_now(self, host_id: int, uuid: str) -> str:
        try:
            return self.cp.connections.driver(host_id).state(uuid)
        except Conflict:  # the host is down
            return UNREACHABLE

    def _clean_disks(self, mig_id: int, job: dict, where: str | None, new_disk: str | None) -> None:
        """A copy-storage migration leaves one disk: the source's once the VM arrived, else the new
        one. The other is removed now, or recorded and removed when its host is back. Until then
        the row holds both (``undecided_disks``), so a migration that cannot tell where the VM
        went, or a control plane that dies mid-way, still removes the right one once the VM is
        found (``settle_undecided_disks``)."""
        if not new_disk or where is None:
            return
        with self.cp.store.session() as s:
            s.get(Migration, mig_id).undecided_disks = None
            s.commit()
        self._remove_copy(mig_id, job["name"], *_disk_copies(job, new_disk)[
            "source" if where == "destination" else "destination"])

    def _remove_copy(self, mig_id: int, vm: str, host_id: int, path: str, storage: str) -> None:
        try:
            self.cp.connections.driver(host_id).delete_volume(path)
        except (Conflict, HypervisorError) as e:
            print(f"vpool: could not remove {path} after migrating {vm} ({e}); it goes when the host is back")
            with self.cp.store.session() as s:
                row = s.get(Migration, mig_id)
                row.leftover_host_id, row.leftover_disk, row.leftover_storage = host_id, path, storage
                s.commit()

    def settle_undecided_disks(self) -> list[str]:
        """Once a VM an ended copy-storage migration lost track of runs on one of its two hosts and
        the other host answers that it does not run it there, the copy on the other host goes (and
        the VM's disk is the destination's copy, if that is where it runs). Returns the VMs done.

        A VM found only shut off is not enough: the host out of reach may run it. A VM deleted since
        has neither copy: both go once neither host runs it, unless a VM made since has that file."""
        undecided = (Migration.undecided_disks.is_not(None), Migration.state.not_in(BOOKING))
        with self.cp.store.session() as s:
            rows = [(m.id, m.vm_uuid, m.vm_name, m.undecided_disks, vm.id, vm.host_id) for m, vm in s.execute(
                select(Migration, VM).join(VM, Migration.vm_id == VM.id).where(*undecided, VM.state.in_(ACTIVE)))]
            deleted = [(m.id, m.vm_uuid, m.vm_name, m.undecided_disks) for m in s.scalars(
                select(Migration).where(*undecided, Migration.vm_id.is_(None)))]
        settled = self._remove_deleted_vms_copies(deleted)
        for mig_id, uuid, name, copies, vm_id, host_id in rows:
            other = unused_copy(copies, host_id, lambda elsewhere: self._state_now(elsewhere, uuid))
            if other is None:
                continue
            kept = "source" if other == "destination" else "destination"
            with self.cp.store.session() as s:
                if kept == "destination":
                    vm = s.get(VM, vm_id)
                    vm.disk_path, storage = copies[kept][1:]
                    vm.storage = None if storage == s.get(Host, host_id).storage else storage
                s.get(Migration, mig_id).undecided_disks = None
                s.commit()
            self._remove_copy(mig_id, name, *copies[other])
            settled.append(name)
        return settled

    def _remove_deleted_vms_copies(self, rows: list[tuple]) -> list[str]:
        done = []
        for mig_id, uuid, name, copies in rows:
            if any(self._state_now(host_id, uuid) in (*ACTIVE, UNREACHABLE) for host_id, _, _ in copies.values()):
                continue
            in_use = self._disks_in_use([path for _, path, _ in copies.values()])
            with self.cp.store.session() as s:
                s.get(Migration, mig_id).undecided_disks = None
                s.commit()
            for host_id, path, storage in copies.values():
                if (path, storage) not in in_use:
                    self._remove_copy(mig_id, name, host_id, path, storage)
            done.append(name)
        return done

    def _disks_in_use(self, paths: list[str]) -> set[tuple[str, str | None]]:
        """(path, storage) of the VMs' disks among these paths: the same file name on the same storage."""
        with self.cp.store.session() as s:
            return {(vm.disk_path, vm.disk_storage) for vm in s.scalars(select(VM).where(VM.disk_path.in_(paths)))}

    def put_back_carried(self) -> list[str]:
        """Defines the metadata an ended migration could not put back (where the VM was not known,
        or its host refused) once the reconciler knows where the VM is. Returns the VMs done."""
        with self.cp.store.session() as s:
            rows = [(m.id, vm.uuid, vm.name, vm.host_id) for m, vm in s.execute(
                select(Migration, VM).join(VM, Migration.vm_id == VM.id).where(
                    Migration.carried.is_not(None), Migration.state.not_in(BOOKING),
                    VM.state.in_((*ACTIVE, VMState.shutoff))))]
        return [name for mig_id, uuid, name, host_id in rows
                if host_id in self.cp.connections.drivers and self._put_metadata_back(mig_id, uuid, host_id) is None]

    def sweep_leftovers(self, host_id: int) -> None:
        """Removes the disks copy-storage migrations left on a host that was out of reach then,
        unless a VM whose disk is that file (the same path on the same storage) has come since."""
        with self.cp.store.session() as s:
            rows = [(m.id, m.leftover_disk, m.leftover_storage) for m in s.scalars(select(Migration).where(
                Migration.leftover_host_id == host_id))]
        in_use = self._disks_in_use([p for _, p, _ in rows])
        for mig_id, path, storage in rows:
            if (path, storage) not in in_use:
                try:
                    self.cp.connections.driver(host_id).delete_volume(path)
                except (Conflict, HypervisorError):
                    continue  # out of reach again: the next connect tries again
            with self.cp.store.session() as s:
                row = s.get(Migration, mig_id)
                row.leftover_host_id = row.leftover_disk = row.leftover_storage = None
                s.commit()

    # --- after a restart ---------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Bookings a dead control plane left: abort the job if it still runs, find the VM, end
        the booking. Returns the names of the VMs it settled."""
        with self.cp.store.session() as s:
            rows = [(m.id, m.vm_id, m.vm_uuid, m.vm_name, m.source_host_id, m.destination_host_id)
                    for m in s.scalars(select(Migration).where(Migration.state.in_(BOOKING)))]
            uris = {h.id: h.uri for h in s.scalars(select(Host))}
        settled = []
        for mig_id, vm_id, uuid, name, src_id, dst_id in rows:
            source_state = source_job_abort(uris[src_id], uuid) if src_id in uris else UNREACHABLE
            dest_state = _state_at(uris.get(dst_id), uuid)
            where = settle(False, False, source_state, dest_state)
            host_id = {"source": src_id, "destination": dst_id}.get(where)
            vm_state = {"source": source_state, "destination": dest_state}.get(where, VMState.unknown)
            error = f"{RESTARTED}; the VM was found {'on the ' + where if where else 'nowhere for sure'}"
            lost_metadata = self._put_metadata_back(mig_id, uuid, host_id)
            self._end(mig_id, vm_id, "failed", vm_state, host_id,
                      error=f"{error}; {lost_metadata}" if lost_metadata else error)
            settled.append(name)
        return settled

    # --- reading -------------------------------------------------------------------------------
    def history(self, ref: str) -> list[dict]:
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            return [describe_row(m) for m in s.scalars(
                select(Migration).where(Migration.vm_uuid == vm.uuid).order_by(Migration.id.desc()))]

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        where = [Migration.state == state] if state else []
        with self.cp.store.session() as s:
            total = s.scalar(select(func.count()).select_from(Migration).where(*where))
            rows = s.scalars(select(Migration).where(*where).order_by(Migration.id.desc()).limit(limit).offset(offset))
            return [describe_row(m) for m in rows], total

    def set_policy(self, changes: dict) -> dict:
        with self.cp.store.session() as s:
            return asdict(stored_policy.save(s, MigrationPolicy, "migration.", changes, "migration"))


def _state_at(uri: str | None, uuid: str) -> str:
    if uri is None:
        return UNREACHABLE
    try:
        drv = LibvirtDriver(uri)
    except HypervisorError:
        return UNREACHABLE
    try:
        return drv.state(uuid)
    finally:
        drv.close()
