"""Server-group rules for VMs that already have a host: whether a group holds where its VMs are,
and whether a VM may join it without moving. The same rules AntiAffinityFilter and
AffinityFilter apply when a VM is placed; vCenter lets an operator write a rule over running
VMs, and so does vpool, but it refuses one that the pool breaks at once: a rule that reads as
kept while broken is worse than none, and DRS would mend only an anti-affinity rule (the balance
score counts VMs of one such group on a host), never an affinity one (its VMs do not move)."""

HARD_POLICIES = ("affinity", "anti-affinity")


def breach(policy: str, members: dict[str, str]) -> str | None:
    """Why the group, its members placed as `members` (VM -> host), breaks its policy now, or
    None. A soft rule is never broken, only less kept."""
    by_host: dict[str, list[str]] = {}
    for vm, host in sorted(members.items()):
        by_host.setdefault(host, []).append(vm)
    if policy == "anti-affinity":
        shared = next(((host, vms) for host, vms in sorted(by_host.items()) if len(vms) > 1), None)
        if shared:
            return f"{_names(shared[1])} share {shared[0]}"
    elif policy == "affinity" and len(by_host) > 1:
        return "its VMs are on " + ", ".join(f"{host} ({_names(vms)})" for host, vms in sorted(by_host.items()))
    return None


def joining_breach(policy: str, vm: str, host: str, members: dict[str, str]) -> str | None:
    """Why `vm`, on `host`, would break the group's policy by joining it as it stands, or None."""
    if policy == "anti-affinity":
        there = sorted(m for m, h in members.items() if h == host)
        if there:
            return (f"{vm} is on {host}, where {_names(there)} of the anti-affinity group already "
                    f"{'runs' if len(there) == 1 else 'run'}; migrate it to another host first")
    elif policy == "affinity":
        hosts = sorted(set(members.values()))
        if hosts and host not in hosts:
            return (f"{vm} is on {host} and the affinity group's VMs are on {', '.join(hosts)}; "
                    f"migrate it there first")
    return None


def _names(vms: list[str]) -> str:
    return vms[0] if len(vms) == 1 else ", ".join(vms[:-1]) + " and " + vms[-1]
