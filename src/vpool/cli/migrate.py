"""`vpool vm migrate`, `vpool vm migrations` and `vpool vm migration-policy`."""

import typer
from rich.table import Table

from vpool.cli.client import JSON, api_path, call, console, details, emit_json, fail, follow, key_values
from vpool.cli.plan import dry_run as dry_run_placement



def register(vm_app: typer.Typer) -> None:
    vm_app.command("migrate")(migrate)
    vm_app.command("migrations")(migrations)
    vm_app.command("migration-policy")(policy)


def migrate(name: str, destination: str = typer.Argument(None, help="Destination host (or --to; default: "
                                                                     "placement picks)."),
            to: str = typer.Option(None, "--to", "--host", help="Destination host (default: placement picks)."),
            copy_storage: bool = typer.Option(False, "--copy-storage",
                                              help="Copy the disk too (hosts without shared storage)."),
            storage_pool: str | None = typer.Option(None, help="With --copy-storage: the destination's pool "
                                                         "(default: its own)."),
            max_downtime: int = typer.Option(None, "--max-downtime", help="Switch-over budget in ms."),
            bandwidth: int = typer.Option(None, "--bandwidth", help="Cap in MiB/s."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Move nothing: show the host placement would "
                                         "choose now and why, host by host."),
            no_wait: bool = typer.Option(False, "--no-wait", help="Return at once with the task."),
            as_json: bool = JSON):
    """Live-migrate a running VM to another host; `vpool task cancel ID` aborts it (the VM stays)."""
    if destination and to and destination != to:
        fail(f"name the destination once: {destination!r} or --to {to!r}")
    path = api_path("/vms/{}/migrate", name)
    body = {"to": destination or to, "copy_storage": copy_storage, "storage_pool": storage_pool,
            "max_downtime_ms": max_downtime, "bandwidth_mib_s": bandwidth}
    if dry_run:
        return dry_run_placement(path, body, as_json)
    task = follow(call("POST", path, json=body), not no_wait, as_json)
    r = task.get("result") or {}
    if not as_json and task["state"] == "succeeded":
        console.print(f"{name}: {r['source']} -> {r['destination']} in {_ms(r['duration_ms'])}, downtime "
                      f"{_ms(r['downtime_ms'])}, {_mib(r['memory_bytes'])} of memory sent"
                      + (", finished in post-copy" if r.get("postcopy") else ""), highlight=False)


def migrations(name: str, as_json: bool = JSON):
    """A VM's migrations, newest first."""
    items = call("GET", api_path("/vms/{}/migrations", name))["items"]
    if as_json:
        return emit_json(items)
    table = Table(title=f"Migrations of {name}", title_justify="left")
    for c in ("id", "when", "from", "to", "result", "took", "downtime", "memory", "disk", "post-copy", "error"):
        table.add_column(c)
    for m in items:
        table.add_row(str(m["id"]), str(m["created_at"])[:19], m["source"], m["destination"], m["state"],
                      _ms(m["duration_ms"]), _ms(m["downtime_ms"]), _mib(m["memory_bytes"]), _mib(m["disk_bytes"]),
                      "yes" if m["postcopy"] else "", m["error"] or "")
    console.print(table)
    for m in items:
        if m["leftover_disk"]:
            console.print(f"migration {m['id']} left {m['leftover_disk']} on a host out of reach then: vpool removes "
                          "it when that host is back", highlight=False)
        if m["undecided_disks"] and m["finished_at"]:
            copies = ", ".join(f"{path} on {host}" for host, path in m["undecided_disks"].items())
            console.print(f"migration {m['id']} keeps both copies of the disk ({copies}) until vpool finds which "
                          f"one {name} runs on; the other then goes", highlight=False)


def policy(settings: list[str] = typer.Option(None, "--set", help="KEY=VALUE, repeatable, e.g. --set "
                                                                   "postcopy_after_s=30"),
           as_json: bool = JSON):
    """Show or change the pool's migration policy (auto-converge, post-copy bound, limits per host)."""
    changes = key_values(settings)
    p = call("PATCH", "/migrations/policy", json=changes) if changes else call("GET", "/migrations/policy")
    if as_json:
        return emit_json(p)
    details(p)


def _ms(v) -> str:
    return "" if v is None else f"{v / 1000:.2f} s" if v >= 1000 else f"{v} ms"


def _mib(v) -> str:
    return "" if v is None else f"{v / 2**20:.0f} MiB"
