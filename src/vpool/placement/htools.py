"""Ganeti's htools text format (3.0.2): read it, write it, turn it into a `ClusterState`.

vpool reads the files `hbal -t`, `hail -t` and `hspace -t` read, so both tools plan on the
same input, and writes the live pool in that format so `hbal` can judge vpool's pool. The
reader is as strict as Ganeti's (`Backend/Text.hs`): a value Ganeti would refuse is an
`HtoolsError` naming the line. What vpool does not model (several node groups, forthcoming
instances, location and migration tags) is refused the same way rather than half-read.

Fields are kept as the strings that were read, so writing an unchanged file gives back the
same bytes; `with_moves` rewrites only the nodes of moved instances and the free memory and
disk that implies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Iterable

from .state import ClusterState, HostRecord, VMRecord

MIB_PER_GIB = 1024

USES_MEMORY = ("running", "ERROR_up", "ERROR_nodedown", "ERROR_nodeoffline", "ERROR_wrongnode")
STATUSES = USES_MEMORY + ("ADMIN_down", "ADMIN_offline", "ERROR_down", "USER_down")
#: templates whose disk lives on the node(s); the rest use shared storage
LOCAL_TEMPLATES = ("plain", "drbd")
#: templates hbal may live-migrate to any node ("fa" moves)
MIGRATABLE_TEMPLATES = ("sharedfile", "rbd", "ext", "blockdev", "gluster")
TEMPLATES = ("diskless", "file", "sharedfile", "plain", "blockdev", "drbd", "rbd", "ext",
             "gluster")
ALLOC_POLICIES = ("preferred", "last_resort", "unallocable")
ROLES = ("N", "M", "Y")
UNSUPPORTED_CLUSTER_TAGS = ("htools:nlocation:", "htools:desiredlocation:", "htools:migration:",
                            "htools:allowmigration:")
DEFAULT_VCPU_RATIO = 4.0
DEFAULT_SPINDLE_RATIO = 32.0
EXCLUSION_PREFIX = "htools:iextags:"


class HtoolsError(ValueError):
    """A file Ganeti would not load, or one vpool does not model; says where and why."""


@dataclass(frozen=True)
class HtoolsNode:
    fields: tuple[str, ...]
    line: int

    name = property(lambda self: self.fields[0])
    offline = property(lambda self: self.fields[7] == "Y" or "?" in self.fields[1:7])
    t_mem = property(lambda self: _float(self, 1))
    n_mem = property(lambda self: _int(self, 2))
    f_mem = property(lambda self: _int(self, 3))
    t_dsk = property(lambda self: _float(self, 4))
    f_dsk = property(lambda self: _int(self, 5))
    t_cpu = property(lambda self: _float(self, 6))
    group = property(lambda self: self.fields[8])
    spindles = property(lambda self: _int(self, 9, 1))
    tags = property(lambda self: _list(self, 10))
    nos_cpu = property(lambda self: _int(self, 13, 1))
    cpu_speed = property(lambda self: _float(self, 14, 1.0))


@dataclass(frozen=True)
class HtoolsInstance:
    fields: tuple[str, ...]
    line: int

    name = property(lambda self: self.fields[0])
    mem = property(lambda self: _int(self, 1))
    dsk = property(lambda self: _int(self, 2))
    vcpus = property(lambda self: _int(self, 3))
    status = property(lambda self: self.fields[4])
    auto_balance = property(lambda self: self.fields[5] == "Y")
    pnode = property(lambda self: self.fields[6])
    snode = property(lambda self: self.fields[7])
    template = property(lambda self: self.fields[8])
    tags = property(lambda self: _list(self, 9))
    spindle_use = property(lambda self: _int(self, 10, 1))


@dataclass(frozen=True)
class HtoolsCluster:
    """One htools text file: groups, nodes, instances, cluster tags, instance policies."""

    groups: tuple[tuple[str, ...], ...]
    nodes: tuple[HtoolsNode, ...]
    instances: tuple[HtoolsInstance, ...]
    cluster_tags: tuple[str, ...]
    policies: tuple[tuple[str, ...], ...] | None

    @property
    def vcpu_ratio(self) -> float:
        return self._policy_value(4, DEFAULT_VCPU_RATIO)

    @property
    def spindle_ratio(self) -> float:
        return self._policy_value(5, DEFAULT_SPINDLE_RATIO)

    def _policy_value(self, index: int, default: float) -> float:
        field = self._policy_field(index)
        return default if field is None else float(field)

    def _policy_field(self, index: int) -> str | None:
        """The group's own policy wins over the cluster's, as in Ganeti; None without one."""
        by_owner = {p[0]: p[index] for p in self.policies or ()}
        return by_owner.get(self.groups[0][0], by_owner.get(""))

    @property
    def new_instance_template(self) -> str:
        """The disk template hspace gives new instances: the first the policy allows,
        Ganeti's first template without a policy."""
        allowed = self._policy_field(3)
        return TEMPLATES[0] if allowed is None else allowed.split(",")[0]

    @property
    def exclusion_prefixes(self) -> tuple[str, ...]:
        return tuple(t[len(EXCLUSION_PREFIX):] for t in self.cluster_tags
                     if t.startswith(EXCLUSION_PREFIX))

    def to_state(self) -> ClusterState:
        """The cluster as vpool sees it. Instance tags become groups; exclusion tags become
        anti-affinity groups. Shared-storage disks are not on any node, so they take no node
        disk; an ADMIN_offline instance takes no vCPU, as in Ganeti."""
        running_mem, local_disk = _running_mem(self.instances, {}), _local_disk(self.instances, {})
        vcpu_ratio, spindle_ratio = self.vcpu_ratio, self.spindle_ratio
        hosts = []
        for node in self.nodes:
            if node.offline:   # Ganeti loads an offline node with every amount zero
                hosts.append(HostRecord(node.name, up=False, cpu_ratio=vcpu_ratio))
                continue
            t_mem, t_dsk = node.t_mem, node.t_dsk
            missing = (int(t_mem) - node.n_mem - running_mem.get(node.name, 0)) - node.f_mem
            hosts.append(HostRecord(
                name=node.name, cpus=node.t_cpu, memory_mib=t_mem, disk_gib=t_dsk / MIB_PER_GIB,
                cpu_ratio=vcpu_ratio, reserved_cpus=node.nos_cpu, reserved_memory_mib=node.n_mem,
                reserved_disk_gib=(t_dsk - node.f_dsk - local_disk.get(node.name, 0)) / MIB_PER_GIB,
                up=not node.offline, tags=frozenset(node.tags), missing_memory_mib=missing,
                cpu_speed=node.cpu_speed, spindle_capacity=node.spindles * spindle_ratio))
        prefixes = self.exclusion_prefixes
        vms, policies = [], {}
        for inst in self.instances:
            offline = inst.status == "ADMIN_offline"
            for tag in inst.tags:
                if any(tag.startswith(p) for p in prefixes):
                    policies[tag] = "anti-affinity"
            local = inst.template in LOCAL_TEMPLATES
            vms.append(VMRecord(
                name=inst.name, host=inst.pnode, cpus=0 if offline else inst.vcpus,
                memory_mib=inst.mem, disk_gib=inst.dsk / MIB_PER_GIB if local else 0.0,
                groups=frozenset(inst.tags), running=inst.status in USES_MEMORY,
                auto_balance=inst.auto_balance and not offline,
                migratable=inst.template in MIGRATABLE_TEMPLATES,
                secondary=inst.snode or None, spindle_use=inst.spindle_use if local else 0))
        return ClusterState.from_records(hosts, vms, policies)

    def with_moves(self, moves: Iterable[tuple]) -> "HtoolsCluster":
        """The file after each (instance, new primary node) or (instance, new primary, new
        secondary or None), with f_mem and f_dsk rewritten so that each node's missing memory
        and other disk use stay what they were (hbal's `-S` output does not do this, so
        re-scoring it drifts; this output re-scores to the same value)."""
        where = {i.name: (i.pnode, i.snode) for i in self.instances}
        for name, node, *secondary in moves:
            if name not in where:
                raise HtoolsError(f"no instance named {name!r}")
            mirror = secondary[0] if secondary and secondary[0] is not None else where[name][1]
            where[name] = (node, mirror)
        old_mem, new_mem = _running_mem(self.instances, {}), _running_mem(self.instances, where)
        old_dsk, new_dsk = _local_disk(self.instances, {}), _local_disk(self.instances, where)

        def rewritten(n: HtoolsNode) -> HtoolsNode:
            if n.offline:
                return n
            if old_mem.get(n.name) != new_mem.get(n.name):
                n = _with_field(n, 3, str(n.f_mem - new_mem.get(n.name, 0) + old_mem.get(n.name, 0)))
            if old_dsk.get(n.name) != new_dsk.get(n.name):
                n = _with_field(n, 5, str(n.f_dsk - new_dsk.get(n.name, 0) + old_dsk.get(n.name, 0)))
            return n

        instances = tuple(_with_field(_with_field(i, 6, where[i.name][0]), 7, where[i.name][1])
                          for i in self.instances)
        return replace(self, nodes=tuple(rewritten(n) for n in self.nodes), instances=instances)

    def with_instances(self, added: Iterable[HtoolsInstance]) -> "HtoolsCluster":
        """The file with `added` instances too, their memory and local disk taken from their
        nodes' f_mem and f_dsk (as if Ganeti had created them), so htools judge the result."""
        added = tuple(added)
        mem, dsk = _running_mem(added, {}), _local_disk(added, {})
        nodes = tuple(n if n.offline else _with_field(_with_field(
            n, 3, str(n.f_mem - mem.get(n.name, 0))), 5, str(n.f_dsk - dsk.get(n.name, 0)))
            for n in self.nodes)
        return replace(self, nodes=nodes, instances=self.instances + added)

    def render(self) -> str:
        sections = [["|".join(g) for g in self.groups],
                    ["|".join(n.fields) for n in self.nodes],
                    ["|".join(i.fields) for i in self.instances],
                    list(self.cluster_tags)]
        if self.policies is not None:
            sections.append(["|".join(p) for p in self.policies])
        lines = list(sections[0])
        for section in sections[1:]:
            lines += [""] + section
        return "\n".join(lines) + "\n"


def new_disks(template: str) -> str:
    """Where `capacity` puts the disks of new instances of an htools `template`."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown disk template {template!r}; known: {', '.join(TEMPLATES)}")
    return "mirrored" if template == "drbd" else "local" if template in LOCAL_TEMPLATES else "shared"


def _running_mem(instances, where):
    total: dict[str, int] = {}
    for inst in instances:
        if inst.status in USES_MEMORY:
            node = where.get(inst.name, (inst.pnode,))[0]
            total[node] = total.get(node, 0) + inst.mem
    return total


def _local_disk(instances, where):
    """Disk of plain and drbd instances per node (primary and secondary)."""
    total: dict[str, int] = {}
    for inst in instances:
        if inst.template in LOCAL_TEMPLATES:
            for node in filter(None, where.get(inst.name, (inst.pnode, inst.snode))):
                total[node] = total.get(node, 0) + inst.dsk
    return total


def _with_field(record, index, value):
    fields = list(record.fields)
    fields[index] = value
    return replace(record, fields=tuple(fields))


# ---------------------------------------------------------------------- reading
def _int(record, index, default=None):
    if index >= len(record.fields) or (record.fields[index] == "" and default is not None):
        return default
    return int(record.fields[index])


def _float(record, index, default=None):
    if index >= len(record.fields) or (record.fields[index] == "" and default is not None):
        return default
    return float(record.fields[index])


def _list(record, index):
    if index >= len(record.fields):
        return ()
    return tuple(t for t in record.fields[index].split(",") if t)


def _check_int(line, what, text):
    try:
        int(text)
    except ValueError:
        raise HtoolsError(f"line {line}: {what} must be an integer, got {text!r}") from None


def _check_float(line, what, text):
    try:
        float(text)
    except ValueError:
        raise HtoolsError(f"line {line}: {what} must be a number, got {text!r}") from None


def read_htools(text: str) -> HtoolsCluster:
    """Parse an htools text file; raise `HtoolsError` with the line and reason if Ganeti
    would not load it or vpool does not model it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    sections: list[list[tuple[int, str]]] = [[]]
    for number, line in enumerate(lines, start=1):
        if line == "":
            sections.append([])
        else:
            sections[-1].append((number, line))
    if len(sections) not in (4, 5):
        raise HtoolsError(f"expected 4 or 5 sections separated by empty lines "
                          "(groups, nodes, instances, cluster tags, policies), "
                          f"found {len(sections)}")
    groups = tuple(_group(n, line) for n, line in sections[0])
    if len(groups) != 1:
        raise HtoolsError(f"vpool reads one node group per file, found {len(groups)}; "
                          "balance one group at a time as hbal -G does")
    group_uuid = groups[0][1]
    nodes = tuple(_node(n, line, group_uuid) for n, line in sections[1])
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise HtoolsError("node names must be unique")
    known = set(names)
    instances = tuple(_instance(n, line, known) for n, line in sections[2])
    if len({i.name for i in instances}) != len(instances):
        raise HtoolsError("instance names must be unique")
    for number, tag in sections[3]:
        if tag.startswith(UNSUPPORTED_CLUSTER_TAGS):
            raise HtoolsError(f"line {number}: cluster tag {tag!r}: vpool does not model Ganeti "
                              "location or migration tags")
    policies = tuple(_policy(n, line) for n, line in sections[4]) if len(sections) == 5 else None
    return HtoolsCluster(groups, nodes, instances, tuple(t for _, t in sections[3]), policies)


def _group(number, line):
    fields = tuple(line.split("|"))
    if len(fields) < 4:
        raise HtoolsError(f"line {number}: a group needs name|uuid|alloc_policy|tags, "
                          f"found {len(fields)} fields")
    if fields[2] not in ALLOC_POLICIES:
        raise HtoolsError(f"line {number}: unknown allocation policy {fields[2]!r}")
    return fields


def _node(number, line, group_uuid):
    fields = tuple(line.split("|"))
    if len(fields) < 9:
        raise HtoolsError(f"line {number}: a node needs at least 9 fields, found {len(fields)}")
    if fields[7] not in ROLES:
        raise HtoolsError(f"line {number}: node role must be N, M or Y, got {fields[7]!r}")
    if fields[8] != group_uuid:
        raise HtoolsError(f"line {number}: node {fields[0]} is in unknown group {fields[8]!r}")
    if "?" not in fields[1:7]:
        for i, what in ((1, "t_mem"), (4, "t_dsk"), (6, "t_cpu")):
            _check_float(number, what, fields[i])
        for i, what in ((2, "n_mem"), (3, "f_mem"), (5, "f_dsk")):
            _check_int(number, what, fields[i])
    for i, what in ((9, "spindles"), (12, "free_spindles"), (13, "nos_cpu")):
        if i < len(fields) and fields[i] != "":
            _check_int(number, what, fields[i])
    if len(fields) > 14 and fields[14] != "":
        _check_float(number, "cpu_speed", fields[14])
    return HtoolsNode(fields, number)


def _instance(number, line, nodes):
    fields = tuple(line.split("|"))
    if len(fields) < 10:
        raise HtoolsError(f"line {number}: an instance needs at least 10 fields, "
                          f"found {len(fields)}")
    name = fields[0]
    for i, what in ((1, "mem"), (2, "dsk"), (3, "vcpus")):
        _check_int(number, what, fields[i])
    if len(fields) > 10 and fields[10] != "":
        _check_int(number, "spindle_use", fields[10])
    if fields[4] not in STATUSES:
        raise HtoolsError(f"line {number}: instance {name} has unknown status {fields[4]!r}")
    if fields[5] not in ("Y", "N"):
        raise HtoolsError(f"line {number}: auto_balance must be Y or N, got {fields[5]!r}")
    if fields[6] not in nodes:
        raise HtoolsError(f"line {number}: instance {name} runs on unknown node {fields[6]!r}")
    if fields[7] and fields[7] not in nodes:
        raise HtoolsError(f"line {number}: instance {name} has unknown secondary {fields[7]!r}")
    if fields[8] not in TEMPLATES:
        raise HtoolsError(f"line {number}: instance {name} has unknown disk template "
                          f"{fields[8]!r}")
    if (fields[8] == "drbd") != bool(fields[7]):
        raise HtoolsError(f"line {number}: instance {name}: a secondary node goes with the drbd "
                          "template and only with it")
    if len(fields) > 12 and fields[12] not in ("", "N"):
        raise HtoolsError(f"line {number}: instance {name} is forthcoming; vpool does not model "
                          "forthcoming instances")
    return HtoolsInstance(fields, number)


def _policy(number, line):
    fields = tuple(line.split("|"))
    if len(fields) != 6:
        raise HtoolsError(f"line {number}: a policy needs "
                          f"owner|stdspec|min;max|disk_templates|vcpu_ratio|spindle_ratio, "
                          f"found {len(fields)} fields")
    specs = [fields[1]] + fields[2].split(";")
    if len(specs) < 3 or len(specs) % 2 == 0:
        raise HtoolsError(f"line {number}: min;max specs must come in pairs")
    for spec in specs:
        values = spec.split(",")
        if len(values) != 6:
            raise HtoolsError(f"line {number}: a spec has 6 values "
                              f"(mem,cpu,disk_size,disk_count,nic_count,spindle_use), got {spec!r}")
        for value in values:
            _check_int(number, "a spec value", value)
    _check_float(number, "vcpu_ratio", fields[4])
    _check_float(number, "spindle_ratio", fields[5])
    return fields


# ---------------------------------------------------------------------- writing the pool
def from_state(state: ClusterState, group: str = "default") -> HtoolsCluster:
    """The pool in htools form, so `hbal -t` can judge it. Every VM is written as a
    `sharedfile` instance (live-migratable to any node, the only move vpool makes), so
    its disk is reported as used node disk that moves do not change."""
    for name in state.host_names + tuple(v.name for v in state.vms):
        _check_name(name)
    group_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{group}.vpool"))
    ratios = [h.cpu_ratio for h in state.hosts]
    vcpu_ratio = max(set(ratios), key=ratios.count) if ratios else DEFAULT_VCPU_RATIO
    running = {}
    for vm, h in zip(state.vms, state.vm_host):
        if h >= 0 and vm.running:
            running[h] = running.get(h, 0) + int(round(vm.memory_mib))
    nodes = []
    for i, host in enumerate(state.hosts):
        t_mem = int(round(host.memory_mib))
        n_mem = int(round(host.reserved_memory_mib))
        f_mem = t_mem - n_mem - running.get(i, 0) - int(round(host.missing_memory_mib))
        t_dsk = int(round(host.disk_gib * MIB_PER_GIB))
        f_dsk = int(round(t_dsk - (host.reserved_disk_gib + state.used[i, 2]) * MIB_PER_GIB))
        role = "M" if i == 0 else "N"
        nodes.append(HtoolsNode((
            host.name, str(t_mem), str(n_mem), str(f_mem), str(t_dsk), str(f_dsk),
            _decimal(host.cpus), "Y" if not host.up else role, group_uuid,
            str(max(1, int(round(host.spindle_capacity / DEFAULT_SPINDLE_RATIO)))),
            ",".join(sorted(host.tags)), "N", "0", str(int(round(host.reserved_cpus))),
            _decimal(host.cpu_speed)), 0))
    instances = []
    for vm, h in zip(state.vms, state.vm_host):
        if h < 0:
            continue
        instances.append(HtoolsInstance((
            vm.name, str(int(round(vm.memory_mib))), str(int(round(vm.disk_gib * MIB_PER_GIB))),
            str(int(round(vm.cpus))), "running" if vm.running else "ADMIN_down",
            "Y" if vm.auto_balance else "N", state.host_names[h], "", "sharedfile",
            ",".join(sorted(vm.groups)), "1", "-", "N"), 0))
    exclusive = sorted(state.groups_with("anti-affinity"))
    for prefix in exclusive:
        for other in {g for vm in state.vms for g in vm.groups} - set(exclusive):
            if other.startswith(prefix):
                raise HtoolsError(f"group {other!r} starts with anti-affinity group {prefix!r}; "
                                  "Ganeti would treat it as an exclusion tag too")
    spec = "4096,2,61440,1,1,1"
    minmax = "128,1,1024,1,1,1;131072,64,4194304,16,8,12"
    templates = ",".join(("sharedfile",) + tuple(t for t in TEMPLATES if t != "sharedfile"))
    policies = tuple((owner, spec, minmax, templates, _decimal(vcpu_ratio),
                      _decimal(DEFAULT_SPINDLE_RATIO)) for owner in ("", group))
    return HtoolsCluster(((group, group_uuid, "preferred", "", ""),), tuple(nodes),
                         tuple(instances), tuple(EXCLUSION_PREFIX + g for g in exclusive),
                         policies)


def _check_name(name: str) -> None:
    if any(c in name for c in "|,\n") or name == "":
        raise HtoolsError(f"name {name!r} cannot be written in the htools format "
                          "(empty, or contains '|', ',' or a newline)")


def _decimal(value: float) -> str:
    """Ganeti's Double fields as Haskell `show` writes them: always with a decimal point."""
    return repr(float(value))
