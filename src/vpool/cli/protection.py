"""`vpool snapshot|backup|schedule|dr …` and `vpool vm template|clone`: data protection commands."""

import typer
from rich.text import Text
from rich.tree import Tree

from vpool.cli.client import JSON, api_path, NO_WAIT, call, console, emit_json, fail, follow, table


snapshot_app = typer.Typer(help="Snapshots: points in a VM's life to go back to.", no_args_is_help=True)
backup_app = typer.Typer(help="Backups: full and incremental copies in the backup repository.",
                         no_args_is_help=True)
schedule_app = typer.Typer(help="Schedules: backups on a cron expression (UTC).", no_args_is_help=True)
dr_app = typer.Typer(help="Disaster recovery: drills that restore, boot and time the backups.", no_args_is_help=True)




def _size(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.1f} MiB"


# --- snapshots ----------------------------------------------------------------------------------
@snapshot_app.command("create")
def snapshot_create(vm: str, name: str,
                    memory: bool = typer.Option(False, "--memory", help="Save the RAM too: a revert resumes there."),
                    description: str = typer.Option(None, "--description"), no_wait: bool = NO_WAIT,
                    as_json: bool = JSON):
    """Take a snapshot (disk, or disk and memory with --memory)."""
    follow(call("POST", api_path("/vms/{}/snapshots", vm),
                json={"name": name, "memory": memory, "description": description}),
           not no_wait, as_json)


@snapshot_app.command("list")
def snapshot_list(vm: str, as_json: bool = JSON):
    """The VM's snapshots as a tree; the one the VM is at is marked."""
    data = call("GET", api_path("/vms/{}/snapshots", vm))
    if as_json:
        return emit_json(data)
    root = Tree(Text(data["vm"], "bold"))
    nodes = {}
    for s in data["snapshots"]:
        desc = f" — {s['description']}" if s["description"] else ""
        label = Text.assemble(f"{s['name']}  ", (f"{s['kind']}, {s['state']}{desc}", "dim"),
                              (" <- current", "green") if s["current"] else "")
        nodes[s["name"]] = nodes.get(s["parent"], root).add(label)
    console.print(root if data["snapshots"] else f"{data['vm']} has no snapshots")


@snapshot_app.command("revert")
def snapshot_revert(vm: str, name: str, no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Go back to a snapshot; a running VM stays running."""
    follow(call("POST", api_path("/vms/{}/snapshots/{}/revert", vm, name)), not no_wait, as_json)


@snapshot_app.command("delete")
def snapshot_delete(vm: str, name: str, no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Delete a snapshot (an overlay is merged back into the disk)."""
    follow(call("DELETE", api_path("/vms/{}/snapshots/{}", vm, name)), not no_wait, as_json)


# --- backups ------------------------------------------------------------------------------------
@backup_app.command("create")
def backup_create(vm: str, incremental: bool = typer.Option(False, "--incremental",
                                                            help="Only what changed since the last backup."),
                  no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Back a VM up into the repository."""
    follow(call("POST", "/backups", json={"vm": vm, "incremental": incremental}), not no_wait, as_json)


@backup_app.command("list")
def backup_list(vm: str = typer.Argument(None), as_json: bool = JSON):
    """Backups (of one VM, or all), oldest first."""
    items = call("GET", "/backups", params={"vm": vm} if vm else None)["items"]
    if as_json:
        return emit_json(items)
    table("Backups", ["id", "vm", "kind", "state", "point (UTC)", "size", "chain", "parent", "error"],
           [[b["id"], b["vm"], b["kind"], b["state"], (b["point_at"] or "")[:19], _size(b["size_bytes"]),
             b["chain"][:8], b["parent"], b["error"]] for b in items])


@backup_app.command("verify")
def backup_verify(vm: str = typer.Argument(None), no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Re-read every file and compare it with its checksum."""
    task = follow(call("POST", "/backups/verify", params={"vm": vm} if vm else None), not no_wait, as_json)
    r = task.get("result") or {}
    if not as_json and r:
        console.print(f"{r['ok']} of {r['checked']} backups intact")
        for bad in r["corrupt"]:
            console.print(Text.assemble((f"backup {bad['backup']}", "red"), f": {'; '.join(bad['problems'])}"))
        if r["corrupt"]:
            raise typer.Exit(1)


@backup_app.command("restore")
def backup_restore(vm: str, as_name: str = typer.Option(None, "--as", help="Restore under this name."),
                   host: str = typer.Option(None, "--host"),
                   point: str = typer.Option(None, "--point", help="Newest point at or before this time (UTC)."),
                   no_start: bool = typer.Option(False, "--no-start"), no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Rebuild a VM from its backups (a deleted VM too)."""
    follow(call("POST", "/backups/restore", json={"vm": vm, "as": as_name, "host": host, "point": point,
                                                  "start": not no_start}), not no_wait, as_json)


@backup_app.command("prune")
def backup_prune(vm: str, keep_daily: int = typer.Option(0, "--keep-daily"),
                 keep_weekly: int = typer.Option(0, "--keep-weekly"), no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Apply a retention policy: the newest backup of each of the last N days and M weeks stay."""
    follow(call("POST", "/backups/prune", json={"vm": vm, "keep_daily": keep_daily, "keep_weekly": keep_weekly}),
           not no_wait, as_json)


# --- schedules ----------------------------------------------------------------------------------
@schedule_app.command("create")
def schedule_create(kind: str, vm: str, cron: str = typer.Option(..., "--cron", help='e.g. "0 2 * * *"'),
                    full: bool = typer.Option(False, "--full", help="Full backups every time."),
                    keep_daily: int = typer.Option(None, "--keep-daily"),
                    keep_weekly: int = typer.Option(None, "--keep-weekly"), as_json: bool = JSON):
    """Schedule backups of a VM: vpool schedule create backup VM --cron "0 2 * * *"."""
    sc = call("POST", "/schedules", json={"kind": kind, "vm": vm, "cron": cron, "incremental": not full,
                                          "keep_daily": keep_daily, "keep_weekly": keep_weekly})
    emit_json(sc) if as_json else console.print(f"schedule {sc['id']}: {sc['kind']} {sc['vm']} at {sc['cron']!r} "
                                                f"(UTC), next {sc['next_run']}")


@schedule_app.command("list")
def schedule_list(as_json: bool = JSON):
    items = call("GET", "/schedules")["items"]
    if as_json:
        return emit_json(items)
    table("Schedules", ["id", "kind", "vm", "cron (UTC)", "incremental", "keep d/w", "next", "last run", "missed",
                        "failed"],
           [[s["id"], s["kind"], s["vm"], s["cron"], s["incremental"],
             f"{s['keep_daily'] or '-'}/{s['keep_weekly'] or '-'}", str(s["next_run"])[:16],
             s["runs"][0]["outcome"] if s["runs"] else "-", s["missed"], s["failed"]] for s in items])


@schedule_app.command("show")
def schedule_show(schedule_id: int, as_json: bool = JSON):
    """A schedule and its runs, each with how its backup ended; missed and failed runs say why."""
    sc = call("GET", api_path("/schedules/{}", schedule_id))
    if as_json:
        return emit_json(sc)
    console.print(f"schedule {sc['id']}: {sc['kind']} {sc['vm']} at {sc['cron']!r}, next {sc['next_run']}")
    table("Runs", ["due (UTC)", "outcome", "task", "note"],
           [[str(r["due_at"])[:16], r["outcome"], r["task_id"], r["note"]] for r in sc["runs"]])


@schedule_app.command("delete")
def schedule_delete(schedule_id: int):
    call("DELETE", api_path("/schedules/{}", schedule_id))
    console.print(f"schedule {schedule_id} deleted")


# --- DR -----------------------------------------------------------------------------------------
@dr_app.command("drill")
def dr_drill(vms: str = typer.Option(..., "--vms", help="Names or patterns, comma-separated (web*), or all."),
             target_host: str = typer.Option(None, "--target-host"), no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Restore the newest backups on an isolated network, boot them, time it, clean up."""
    task = follow(call("POST", "/dr/drills", json={"vms": vms, "target_host": target_host}), not no_wait, as_json)
    drill = (task.get("result") or {}).get("drill")
    if drill and not as_json:
        console.print(call("GET", api_path("/dr/drills/{}", drill))["summary"], highlight=False)


@dr_app.command("drills")
def dr_drills(as_json: bool = JSON):
    """Past drills and their figures."""
    items = call("GET", "/dr/drills")["items"]
    if as_json:
        return emit_json(items)
    table("DR drills", ["id", "state", "selector", "host", "VMs", "RTO s", "RPO s", "started"],
           [[d["id"], d["state"], d["selector"], d["target_host"], d["vms"],
             f"{d['rto_s']:.1f}" if d["rto_s"] is not None else "", f"{d['rpo_s']:.0f}" if d["rpo_s"] is not None
             else "", str(d["started_at"])[:19]] for d in items])


@dr_app.command("show")
def dr_show(drill_id: int, as_json: bool = JSON):
    d = call("GET", api_path("/dr/drills/{}", drill_id))
    emit_json(d) if as_json else console.print(d["summary"] or f"drill {drill_id} is {d['state']}", highlight=False)


# --- templates and clones (mounted under `vpool vm`) ---------------------------------------------
def vm_template(vm: str, name: str = typer.Option(None, "--name", help="Image name (default tpl-VM)."),
                no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Seal a shut-off VM's disk into a read-only base image (a template)."""
    follow(call("POST", api_path("/vms/{}/template", vm), json={"name": name}), not no_wait, as_json)


def vm_clone(src: str, new: str, linked: bool = typer.Option(False, "--linked", help="Thin overlay on a template."),
             full: bool = typer.Option(False, "--full", help="A standalone copy."),
             host: str = typer.Option(None, "--host"), no_start: bool = typer.Option(False, "--no-start"),
             no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Clone a VM (full) or a template (linked by default) as NEW."""
    if linked and full:
        fail("choose --linked or --full, not both")
    mode = "linked" if linked else "full" if full else None
    follow(call("POST", api_path("/vms/{}/clone", src),
                json={"name": new, "mode": mode, "host": host, "start": not no_start}),
           not no_wait, as_json)


def mount(app: typer.Typer, vm_app: typer.Typer) -> None:
    for sub, name in ((snapshot_app, "snapshot"), (backup_app, "backup"), (schedule_app, "schedule"), (dr_app, "dr")):
        app.add_typer(sub, name=name)
    vm_app.command("template")(vm_template)
    vm_app.command("clone")(vm_clone)
