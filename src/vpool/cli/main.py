"""`vpool`: the command line. Each command parses, calls the API once (or follows a task), renders."""

from pathlib import Path
from typing import Optional

import typer

from vpool.cli import lab, plan
from vpool.cli.client import JSON, api_path, NO_WAIT, call, console, details, emit_json, fail, follow, table
from vpool.placement.request import count

app = typer.Typer(help="vpool: one virtual resource pool out of libvirt hosts.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
host_app = typer.Typer(help="Hosts: libvirt connections that make up the pool.", no_args_is_help=True)
vm_app = typer.Typer(help="VMs: create, power, delete, adopt.", no_args_is_help=True)
flavor_app = typer.Typer(help="Flavors: named VM sizes.", no_args_is_help=True)
image_app = typer.Typer(help="Images: base disks VMs are linked clones of.", no_args_is_help=True)
task_app = typer.Typer(help="Tasks: long operations and how they ended.", no_args_is_help=True)
group_app = typer.Typer(help="Server groups: VMs that must, or must not, share a host.", no_args_is_help=True)
pool_app = typer.Typer(help="The pool as a whole: capacity and defaults.", no_args_is_help=True)
for sub, name in ((host_app, "host"), (vm_app, "vm"), (flavor_app, "flavor"), (image_app, "image"),
                  (task_app, "task"), (pool_app, "pool"), (group_app, "group")):
    app.add_typer(sub, name=name)





def _post_task(path: str, body: dict | None, no_wait: bool, as_json: bool) -> dict:
    return follow(call("POST", path, json=body), not no_wait, as_json)


# --- serve --------------------------------------------------------------------------------------
@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8080, help="Port to listen on."),
          register_local: bool = typer.Option(True, help="Register this machine as a host if the pool has none."),
          lab: int = typer.Option(0, help="Also start a lab of N libvirtd hosts on this machine (vpool lab)."),
          lab_guests: int = typer.Option(3, help="Tiny guests to start on the lab, one per host."),
          standby: bool = typer.Option(False, help="If another control plane holds the database, wait "
                                                   "and take over when it stops or dies, instead of refusing.")):
    """Run the control plane (API, task runner, host watchers) in the foreground."""
    from vpool.config import Settings
    from vpool.model.errors import VpoolError
    from vpool.services.serve import run

    if not 0 <= lab <= 9:
        fail("--lab takes 0 to 9 hosts")
    try:
        settings = Settings()
    except ValueError as e:
        fail(str(e))
    try:
        run(settings, host, port, register_local, lab, lab_guests, standby)
    except VpoolError as e:
        fail(e.detail)


# --- hosts --------------------------------------------------------------------------------------
def _fmt_line(cap: dict, unit: str = "") -> str:
    return f"{cap['allocated']}/{cap['usable']}{unit}"


@host_app.command("add")
def host_add(uri: str, name: str = typer.Option(None, "--name", help="Name in the pool (default: from the URI)."),
             virt_type: str = typer.Option("auto", help="auto, kvm or qemu (TCG)."),
             network: str = typer.Option(None, help="network:NAME or bridge:NAME for guest NICs."),
             no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Add a libvirt host: qemu:///system, qemu+ssh://user@h/system, qemu+tcp://h:port/system, test:///default."""
    _post_task("/hosts", {"uri": uri, "name": name, "virt_type": virt_type, "network": network}, no_wait, as_json)


@host_app.command("list")
def host_list(as_json: bool = JSON):
    """Hosts with their state and allocation (allocated/usable)."""
    items = call("GET", "/hosts", params={"limit": 1000})["items"]
    if as_json:
        return emit_json(items)
    table("Hosts", ["name", "state", "maint", "virt", "vms", "vCPU", "RAM MiB", "disk GiB", "storage", "uri"],
           [[h["name"], h["state"], "yes" if h["maintenance"] else "", h["virt_type"], h["vms"],
             _fmt_line(h["capacity"]["cpus"]), _fmt_line(h["capacity"]["memory_mib"]),
             _fmt_line(h["capacity"]["disk_gib"]), (h["storage"] or "?")[:8], h["uri"]] for h in items])


@host_app.command("show")
def host_show(name: str, as_json: bool = JSON):
    """One host: facts, policy, capacity, allocated and free."""
    h = call("GET", api_path("/hosts/{}", name))
    if as_json:
        return emit_json(h)
    shared = ", ".join(h["shares_storage_with"]) or "no other host"
    details({**{key: h[key] for key in ("name", "uri", "state", "maintenance", "error", "hostname", "host_uuid",
                                        "arch", "hypervisor", "hypervisor_version", "virt_type", "network",
                                        "storage_pool", "vms")},
             "storage": f"{h['storage'] or 'not read yet'} (shared with {shared}: VMs move between them without "
                        "copying disks)"})
    table("Capacity", ["resource", "capacity", "ratio", "reserved", "usable", "allocated", "free"],
           [[r, c["capacity"], c["ratio"], c["reserved"], c["usable"], c["allocated"], c["free"]]
            for r, c in h["capacity"].items()])


@host_app.command("remove")
def host_remove(name: str):
    """Take a host out of the pool (it must run no managed VMs)."""
    call("DELETE", api_path("/hosts/{}", name))
    console.print(f"host {name} removed")


@host_app.command("maintenance")
def host_maintenance(mode: str = typer.Argument(..., help="on or off"), name: str = typer.Argument(...),
                     dry_run: bool = typer.Option(False, "--dry-run", help="With on, change nothing: show where "
                                                  "each VM would go, and why any would stay."),
                     as_json: bool = JSON):
    """Maintenance on: no new placements, every VM leaves by live migration (those that cannot are
    named with the reason); off: back in service. `vpool host maintenance lab2 on` works too."""
    if mode not in ("on", "off") and name in ("on", "off"):
        mode, name = name, mode  # the host first, as one says it
    if mode not in ("on", "off"):
        fail(f"maintenance takes 'on' or 'off', not {mode!r}")
    if dry_run:
        return _maintenance_rehearsal(call("POST", api_path("/hosts/{}/maintenance", name),
                                           params={"dry_run": "true"}, json={"mode": mode}), as_json)
    task = follow(call("POST", api_path("/hosts/{}/maintenance", name), json={"mode": mode}), True, as_json)
    moved = (task.get("result") or {}).get("moved") or {}
    if not as_json:
        for vm, dest in moved.items():
            console.print(f"  {vm} -> {dest}", highlight=False)
        console.print(f"host {name}: maintenance {mode}")


@host_app.command("set")
def host_set(name: str, cpu_ratio: float = typer.Option(None), ram_ratio: float = typer.Option(None),
             disk_ratio: float = typer.Option(None), reserved_cpus: int = typer.Option(None),
             reserved_memory: int = typer.Option(None, help="MiB kept for the host's own OS."),
             reserved_disk: int = typer.Option(None, help="GiB kept for the host's own OS."),
             default: list[str] = typer.Option([], "--default", help="Give this setting (e.g. cpu_ratio, "
                                               "reserved_memory_mib) back to the pool's default; repeatable."),
             as_json: bool = JSON):
    """Per-host allocation ratios and reservations (override the pool defaults)."""
    body = {"cpu_ratio": cpu_ratio, "ram_ratio": ram_ratio, "disk_ratio": disk_ratio, "reserved_cpus": reserved_cpus,
            "reserved_memory_mib": reserved_memory, "reserved_disk_gib": reserved_disk}
    body = {k: v for k, v in body.items() if v is not None}
    for key in default:
        if key in body:
            fail(f"{key} is both set and given back to the pool's default; choose one")
        body[key] = None  # JSON merge patch: null removes the host's own value
    h = call("PATCH", api_path("/hosts/{}", name), json=body)
    emit_json(h) if as_json else console.print(f"host {name}: policy {h['policy']}")


# --- pool ---------------------------------------------------------------------------------------
@pool_app.command("show")
def pool_show(as_json: bool = JSON):
    """Totals across the pool."""
    p = call("GET", "/pool")
    if as_json:
        return emit_json(p)
    console.print(f"{p['hosts']} hosts ({p['hosts_up']} up), {p['vms']} VMs")
    table("Capacity", ["resource", "usable", "allocated", "free"],
           [[r, c["usable"], c["allocated"], c["free"]] for r, c in p["capacity"].items()])


@pool_app.command("defaults")
def pool_defaults(cpu_ratio: float = typer.Option(None), ram_ratio: float = typer.Option(None),
                  disk_ratio: float = typer.Option(None), reserved_cpus: int = typer.Option(None),
                  reserved_memory: int = typer.Option(None), reserved_disk: int = typer.Option(None),
                  as_json: bool = JSON):
    """Show or set the pool's default allocation ratios and host reservations."""
    body = {k: v for k, v in {"cpu_ratio": cpu_ratio, "ram_ratio": ram_ratio, "disk_ratio": disk_ratio,
                              "reserved_cpus": reserved_cpus, "reserved_memory_mib": reserved_memory,
                              "reserved_disk_gib": reserved_disk}.items() if v is not None}
    d = call("PATCH", "/pool/defaults", json=body) if body else call("GET", "/pool/defaults")
    if as_json:
        return emit_json(d)
    table("Pool defaults", ["setting", "value"], [[k, v] for k, v in d.items()])


def _maintenance_rehearsal(answer: dict, as_json: bool) -> None:
    if as_json:
        return emit_json(answer)
    rows = [[vm, to, ""] for vm, to in answer["moved"].items()]
    rows += [[vm, "", why] for vm, why in answer["not_moved"].items()]
    if rows:
        table(f"Where {answer['host']}'s VMs would go", ["VM", "to", "why it would stay"], rows)
    if answer["not_moved"]:
        fail(f"{len(answer['not_moved'])} of {answer['vms']} VMs would stay on {answer['host']} (a dry run: "
             "nothing changed)")
    console.print(f"{answer['host']} would be empty: " + (f"all {count(answer['vms'], 'VM')} would leave"
                  if rows else "it has no VMs") + " (a dry run: nothing changed)", highlight=False)


# --- VMs ----------------------------------------------------------------------------------------
@vm_app.command("create")
def vm_create(name: str, cpus: int = typer.Option(None, help="vCPUs (default: the flavor's, else 1)."),
              memory: str = typer.Option(None, help="e.g. 1G or 512M (default: the flavor's, else 512M)."),
              disk: str = typer.Option(None, help="e.g. 10G (default: the flavor's, else 1G)."),
              flavor: str = typer.Option(None), image: str = typer.Option(None),
              host: str = typer.Option(None, help="Pin to this host (default: placement picks)."),
              group: str = typer.Option(None, help="Join this server group (vpool group create)."),
              no_start: bool = typer.Option(False, "--no-start", help="Define but do not start."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Make nothing: show the host placement "
                                           "would choose now and why, host by host."),
              no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Create a VM: placed, its disk a linked clone of the image, defined and started."""
    body = {"name": name, "cpus": cpus, "memory": memory, "disk": disk, "flavor": flavor,
            "image": image, "host": host, "group": group, "start": not no_start}
    if dry_run:
        return plan.dry_run("/vms", body, as_json)
    _post_task("/vms", body, no_wait, as_json)


def _power(op: str, doc: str):
    def command(name: str, no_wait: bool = NO_WAIT, as_json: bool = JSON):
        _post_task(api_path("/vms/{}/{}", name, op), None, no_wait, as_json)
    command.__doc__ = doc
    vm_app.command(op)(command)


for _op, _doc in (("start", "Power a VM on."), ("reboot", "Reboot a VM (ACPI)."), ("suspend", "Pause a VM."),
                  ("resume", "Resume a paused VM."), ("adopt", "Take an unmanaged domain under vpool's management.")):
    _power(_op, _doc)


@vm_app.command("stop")
def vm_stop(name: str, force: bool = typer.Option(False, "--force", help="Power off at once, no ACPI."),
            timeout: float = typer.Option(60, help="Seconds to wait for ACPI shutdown before powering off."),
            no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Stop a VM: ACPI shutdown first, forced power-off after the timeout."""
    _post_task(api_path("/vms/{}/stop", name), {"force": force, "timeout": timeout}, no_wait, as_json)


@vm_app.command("resize")
def vm_resize(name: str, cpus: int = typer.Option(None, help="vCPUs."),
              memory: str = typer.Option(None, help="e.g. 2G or 1536M."),
              disk: str = typer.Option(None, help="The disk's new size, e.g. 20G: it only grows, live too."),
              no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Change a VM's vCPUs, memory or disk; booked on its host first. A running VM only grows (hot-plug)."""
    _post_task(api_path("/vms/{}/resize", name), {"cpus": cpus, "memory": memory, "disk": disk}, no_wait, as_json)


@vm_app.command("set")
def vm_set(name: str,
           auto_balance: Optional[bool] = typer.Option(None, "--auto-balance/--no-auto-balance",
                                                       help="Whether balance and consolidation plans, and so DRS, "
                                                            "may move it (an evacuation still does)."),
           as_json: bool = JSON):
    """Change a VM's settings beside its size (vCenter's per-VM DRS override, Ganeti's auto_balance)."""
    if auto_balance is None:
        fail("name a setting to change: --auto-balance or --no-auto-balance")
    v = call("PATCH", api_path("/vms/{}", name), json={"auto_balance": auto_balance})
    if as_json:
        return emit_json(v)
    console.print(f"{v['name']}: plans {'may move it' if v['auto_balance'] else 'leave it where it is'}",
                  highlight=False)


@vm_app.command("console")
def vm_console(name: str, force: bool = typer.Option(False, "--force", help="Take the console over from another "
                                                                           "session.")):
    """Join a running VM's serial console (like virsh console); Ctrl-] leaves. Input from a pipe is
    sent, and the command ends once the guest has answered and then been quiet for a second."""
    from vpool.cli.console import attach
    attach(name, force)


@vm_app.command("delete")
def vm_delete(name: str, no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Delete a VM and its disk."""
    follow(call("DELETE", api_path("/vms/{}", name)), not no_wait, as_json)


@vm_app.command("list")
def vm_list(name: str = typer.Option(None, help="Names that begin with this."), host: str = typer.Option(None),
            state: str = typer.Option(None, help="running, shutoff, paused, missing, …"),
            group: str = typer.Option(None, help="VMs of this server group."),
            ownership: str = typer.Option(None, help="managed or unmanaged"),
            limit: int = typer.Option(100), offset: int = typer.Option(0), as_json: bool = JSON):
    """VMs, filtered (the filters combine) and paginated."""
    params = {k: v for k, v in {"name": name, "host": host, "state": state, "group": group, "ownership": ownership,
                                "limit": limit, "offset": offset}.items() if v is not None}
    page = call("GET", "/vms", params=params)
    if as_json:
        return emit_json(page)
    table(f"VMs ({len(page['items'])} of {page['total']})", ["name", "state", "host", "vCPU", "RAM MiB",
                                                              "disk GiB", "image", "group", "owner"],
           [[v["name"], v["state"], v["host"], v["cpus"], v["memory_mib"], v["disk_gib"], v["image"], v["group"],
             v["ownership"]] for v in page["items"]])


@vm_app.command("show")
def vm_show(name: str, as_json: bool = JSON):
    """One VM, with its address when the guest has one."""
    v = call("GET", api_path("/vms/{}", name))
    if as_json:
        return emit_json(v)
    if room := v.get("hotplug"):
        cpus = (f"up to {count(room['max_cpus'], 'vCPU')}" if room["vcpus_live"]
                else "vCPUs grow while stopped (TCG)")
        v["hotplug"] = cpus + (f"; memory up to {room['max_memory_mib']} MiB "
                               f"({count(room['free_slots'], 'memory slot')} free)"
                               if room["free_slots"] else "; memory grows while stopped")
    details(v)


# --- flavors ------------------------------------------------------------------------------------
@flavor_app.command("create")
def flavor_create(name: str, cpus: int = typer.Option(...), memory: str = typer.Option(...),
                  disk: str = typer.Option(...), as_json: bool = JSON):
    """Create a flavor, e.g. vpool flavor create small --cpus 1 --memory 512M --disk 5G."""
    f = call("POST", "/flavors", json={"name": name, "cpus": cpus, "memory": memory, "disk": disk})
    emit_json(f) if as_json else console.print(f"flavor {f['name']}: {f['cpus']} vCPU, {f['memory_mib']} MiB, "
                                               f"{f['disk_gib']} GiB")


@flavor_app.command("list")
def flavor_list(as_json: bool = JSON):
    items = call("GET", "/flavors")["items"]
    if as_json:
        return emit_json(items)
    table("Flavors", ["name", "vCPU", "RAM MiB", "disk GiB"],
           [[f["name"], f["cpus"], f["memory_mib"], f["disk_gib"]] for f in items])


@flavor_app.command("delete")
def flavor_delete(name: str):
    call("DELETE", api_path("/flavors/{}", name))
    console.print(f"flavor {name} deleted")


# --- groups -------------------------------------------------------------------------------------
@group_app.command("create")
def group_create(name: str, policy: str = typer.Option(..., help="affinity, anti-affinity or soft-anti-affinity"),
                 as_json: bool = JSON):
    """A server group; VMs join it with `vpool vm create --group NAME`."""
    g = call("POST", "/groups", json={"name": name, "policy": policy})
    emit_json(g) if as_json else console.print(f"group {g['name']}: {g['policy']}")


@group_app.command("list")
def group_list(as_json: bool = JSON):
    """Groups, their VMs with their hosts, and whether each rule holds."""
    items = call("GET", "/groups")["items"]
    if as_json:
        return emit_json(items)
    table("Groups", ["name", "policy", "VMs (host)", "rule"],
          [[g["name"], g["policy"], _members(g), "holds" if g["holds"] else f"broken: {g['breach']}"] for g in items])


@group_app.command("show")
def group_show(name: str, as_json: bool = JSON):
    g = call("GET", api_path("/groups/{}", name))
    if as_json:
        return emit_json(g)
    details({"name": g["name"], "policy": g["policy"], "VMs": _members(g) or "-",
             "rule": "holds" if g["holds"] else f"broken: {g['breach']}"})


@group_app.command("add")
def group_add(name: str, vms: list[str] = typer.Argument(..., help="VMs that join on the hosts they are on."),
              as_json: bool = JSON):
    """Put VMs that already exist into a group, where they are: all or none, and refused (with
    the reason) when the rule forbids a VM's host; migrate it first."""
    g = call("PATCH", api_path("/groups/{}", name), json={"add": vms})
    emit_json(g) if as_json else console.print(f"group {name}: {_members(g)}")


@group_app.command("remove")
def group_remove(name: str, vms: list[str] = typer.Argument(..., help="VMs that leave the group."),
                 as_json: bool = JSON):
    """Take VMs out of a group (all or none); they stay where they are."""
    g = call("PATCH", api_path("/groups/{}", name), json={"remove": vms})
    emit_json(g) if as_json else console.print(f"group {name}: {_members(g) or 'no VMs'}")


def _members(g: dict) -> str:
    return ", ".join(f"{m['vm']} ({m['host'] or '-'})" for m in g["members"])


@group_app.command("delete")
def group_delete(name: str):
    """Delete an empty group."""
    call("DELETE", api_path("/groups/{}", name))
    console.print(f"group {name} deleted")


# --- images -------------------------------------------------------------------------------------
@image_app.command("import")
def image_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
                 name: str = typer.Option(None, help="Image name (default: the file name without suffix)."),
                 as_json: bool = JSON):
    """Upload a qcow2 or raw disk image to the control plane."""
    name = name or file.name.split(".")[0]
    with open(file, "rb") as fh:
        img = call("PUT", api_path("/images/{}", name), content=fh,
                   headers={"Content-Type": "application/octet-stream"})
    emit_json(img) if as_json else console.print(f"image {img['name']}: {img['format']}, "
                                                 f"{img['virtual_size_bytes'] // 2**20} MiB virtual")


@image_app.command("build-tiny")
def image_build_tiny(name: str = typer.Option("tiny"), no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Build the tiny bootable guest (Debian kernel + busybox) and register it as an image."""
    follow(call("POST", "/images/build-tiny", params={"name": name}), not no_wait, as_json)


@image_app.command("list")
def image_list(as_json: bool = JSON):
    items = call("GET", "/images")["items"]
    if as_json:
        return emit_json(items)
    table("Images", ["name", "kind", "format", "size MiB", "virtual MiB"],
           [[i["name"], i["kind"], i["format"], i["size_bytes"] // 2**20, i["virtual_size_bytes"] // 2**20]
            for i in items])


@image_app.command("delete")
def image_delete(name: str):
    call("DELETE", api_path("/images/{}", name))
    console.print(f"image {name} deleted")


# --- tasks --------------------------------------------------------------------------------------
@task_app.command("list")
def task_list(state: str = typer.Option(None), kind: str = typer.Option(None), target: str = typer.Option(None),
              limit: int = typer.Option(20), as_json: bool = JSON):
    params = {k: v for k, v in {"state": state, "kind": kind, "target": target, "limit": limit}.items() if v}
    page = call("GET", "/tasks", params=params)
    if as_json:
        return emit_json(page)
    table(f"Tasks ({len(page['items'])} of {page['total']})",
           ["id", "kind", "target", "state", "%", "by", "created", "message / error"],
           [[t["id"], t["kind"], t["target"], t["state"], t["progress"], t["requested_by"],
             str(t["created_at"])[:19], t["error"] or t["message"]] for t in page["items"]])


@task_app.command("show")
def task_show(task_id: int, as_json: bool = JSON):
    t = call("GET", api_path("/tasks/{}", task_id))
    if as_json:
        return emit_json(t)
    details(t)


@task_app.command("wait")
def task_wait(task_id: int, as_json: bool = JSON):
    """Wait for a task to end, with a progress bar; exit 1 if it failed or was cancelled."""
    follow(call("GET", api_path("/tasks/{}", task_id)), True, as_json)


@task_app.command("cancel")
def task_cancel(task_id: int, as_json: bool = JSON):
    t = call("POST", api_path("/tasks/{}/cancel", task_id))
    emit_json(t) if as_json else console.print(f"task {task_id}: cancel requested")


app.add_typer(plan.app, name="plan")
app.add_typer(lab.app, name="lab")

from vpool.cli import telemetry as _telemetry  # noqa: E402  (top, stats, alarm)

_telemetry.register(app)

from vpool.cli import migrate as _migrate  # noqa: E402  (vm migrate, vm migrations)

_migrate.register(vm_app)

from vpool.cli import protection as _protection  # noqa: E402  (snapshot, backup, schedule, dr, vm template/clone)

_protection.mount(app, vm_app)


if __name__ == "__main__":
    app()
