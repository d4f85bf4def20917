"""`vpool plan …`: what balancing, consolidation, HA and capacity planning would do, and, with
`--apply`, doing a balance or consolidation plan on the live pool. Also the one placement
table that `vm create --dry-run` and `vm migrate --dry-run` print.

With `--htools FILE` the plan is made here from a Ganeti htools text file, without a server;
otherwise the server plans on the live pool (`GET /plans/KIND`). Both print the same JSON.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vpool.cli.client import JSON, NO_WAIT, api_path, call, console, details, fail, follow, key_values, table
from vpool.placement.capacity import DEFAULT_FLAVORS
from vpool.placement.htools import HtoolsError, new_disks, read_htools
from vpool.placement.report import placement_report, plan_report

app = typer.Typer(help="Plans: balance, consolidate, HA, capacity and placement; balance and "
                       "consolidate can be applied.", no_args_is_help=True)
APPLY = typer.Option(False, "--apply", help="Do it: the plan is made afresh and its moves run as live "
                                            "migrations, stage by stage (a task).")

LOAD_WINDOW = typer.Option(None, "--load-window", help="Seconds of measured CPU load each VM weighs by, its mean "
                                                       "over them; 0 weighs none [default: 3600].")
HTOOLS = typer.Option(None, "--htools", help="Plan from a Ganeti htools text file instead of "
                                             "the live pool (no server needed).")


def _report(kind: str, htools: Optional[Path], params: dict, template: Optional[str] = None) -> dict:
    if htools is None:
        if template is not None:
            fail("--disk-template needs --htools: a live pool's new disks go to their host's storage")
        return call("GET", api_path("/plans/{}", kind),
                    params={k: v for k, v in params.items() if v is not None})
    return _offline(htools, template, lambda state, disks: plan_report(kind, state, params, new_disks=disks))


def _offline(htools: Path, template: Optional[str], plan) -> dict:
    """`plan(state, disks)` on the cluster of an htools file, its new VMs' disks where the
    template (or the file's own) puts them; a file or a value it cannot take is one line."""
    try:
        cluster = read_htools(htools.read_text())
        return plan(cluster.to_state(), new_disks(template or cluster.new_instance_template))
    except OSError as e:
        fail(f"cannot read {htools}: {e.strerror}")
    except (HtoolsError, ValueError) as e:
        fail(f"{htools}: {e}" if isinstance(e, HtoolsError) else str(e))


def _live_only(htools: Optional[Path], load_window: Optional[float]) -> None:
    if htools is not None and load_window is not None:
        fail("--load-window needs the live pool: an htools file carries no measured load")


def _apply(kind: str, htools: Optional[Path], params: dict, no_wait: bool, as_json: bool) -> None:
    if htools is not None:
        fail("--apply works on the live pool; a plan from an htools file is only shown")
    task = follow(call("POST", api_path("/plans/{}/apply", kind),
                       json={k: v for k, v in params.items() if v is not None}), not no_wait, as_json)
    r = task.get("result")
    if as_json or task["state"] != "succeeded" or not r:
        return
    if r["moves"]:
        table = Table(title=f"{kind}: {len(r['moves'])} moves made", title_justify="left")
        for column in ("stage", "vm", "from", "to", "why"):
            table.add_column(column)
        for m in r["moves"]:
            table.add_row(str(m["stage"]), m["vm"], m["from"], m["to"], m["reason"])
        console.print(table)
    console.print(f"score {r['score_before']:.8f} -> {r['score_now']:.8f} (planned {r['score_planned']:.8f})",
                  highlight=False)
    if r["power_off"]:
        console.print(f"in maintenance, can be powered off: {', '.join(r['power_off'])}", highlight=False)
    if r["wake"]:
        console.print(f"wake (power on, maintenance off): {', '.join(r['wake'])}", highlight=False)


def show_placement(answer: dict) -> None:
    """Each host with the filter that removed it or what each weigher gave it (0 up to its
    multiplier; the highest total wins, the first host in the pool on a tie)."""
    weighers = list(next((h["weights"] for h in answer["hosts"] if h["total"] is not None), {}))
    rows = []
    for h in answer["hosts"]:
        if h["removed_by"]:
            verdict = f"removed by {h['removed_by']}" + (f": {h['why']}" if h["why"] else "")
        else:
            verdict = "chosen" if h["host"] == answer["host"] else ""
        rows.append([h["host"], verdict, *(f"{h['weights'][w]:.2f}" if w in h["weights"] else "" for w in weighers),
                     "" if h["total"] is None else f"{h['total']:.2f}"])
    demand = answer["demand"]
    size = f"{demand['cpus']:g} vCPU / {demand['memory_mib']:g} MiB" + (
        f" / {demand['disk_gib']:g} GiB" if demand["disk_gib"] else "; its disk stays where it is")
    table(f"Placement of {answer['vm']} ({size})", ["host", "verdict", *(w.removesuffix("Weigher") for w in weighers),
                                                     "total"], rows)
    if answer["host"] is not None:
        mirror = f", its disk mirrored on {answer['mirror']}" if answer.get("mirror") else ""
        console.print(f"{answer['vm']} would go to {answer['host']}{mirror} (a dry run: nothing changed).",
                      highlight=False)
        if answer.get("mirror_why"):
            console.print(f"Why this pair: {answer['mirror_why']}.", highlight=False)


def dry_run(path: str, body: dict, as_json: bool) -> None:
    """POST `body` to `path` as a dry run and show where placement would put the VM and why."""
    _answer(call("POST", path, params={"dry_run": "true"}, json=body), as_json)


def _answer(placement: dict, as_json: bool) -> None:
    """A placement as JSON or as the table; no host is an error, as the real request's would be."""
    if as_json:
        return _emit(placement)
    show_placement(placement)
    if placement["host"] is None:
        fail(placement["message"])


def _emit(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _load_basis(kind: str, load: dict) -> str:
    window = f"{load['window_s'] / 60:g} min" if load["window_s"] % 60 == 0 else f"{load['window_s']:g} s"
    instead = "VMs counted" if kind == "balance" else "allocations only"
    if not load["window_s"]:
        return f"CPU load: {instead} (load window 0)"
    if load["cpu"] != "measured":
        return f"CPU load: {instead} (no VM's CPU use measured in the last {window})"
    unmeasured = load["running_vms"] - load["measured_vms"]
    return (f"CPU load: measured over the last {window} for {load['measured_vms']} of {load['running_vms']} running "
            f"VMs" + (f"; {unmeasured} not yet measured " + ("counts all its" if unmeasured == 1 else "count all their")
                      + " vCPUs busy" if unmeasured else ""))


def _show_plan(data: dict) -> None:
    if data["moves"]:
        title = f"{data['kind']}: {len(data['moves'])} moves in {data['stages']} stages"
        table = Table(title=title, title_justify="left")
        for column in ("stage", "vm", "from", "to", "why"):
            table.add_column(column)
        for m in data["moves"]:
            mirrors = "secondary_to" in m
            table.add_row(str(m["stage"]), m["vm"],
                          f"{m['from']} (mirror {m['secondary_from']})" if mirrors else m["from"],
                          f"{m['to']} (mirror {m['secondary_to']})" if mirrors else m["to"],
                          m["reason"])
        console.print(table)
    console.print(f"score {data['score_before']:.8f} -> {data['score_after']:.8f}; {data['note']}",
                  highlight=False)
    if load := data.get("load"):
        console.print(_load_basis(data["kind"], load), highlight=False)
    if busy := data.get("cpu_busy"):
        console.print("CPUs busy by measured load, now and after the plan:", highlight=False)
        table = Table()
        for column in ("host", "now", "after"):
            table.add_column(column, justify="left" if column == "host" else "right")
        for h in busy:
            table.add_row(h["host"], f"{h['before']:.0%}", f"{h['after']:.0%}")
        console.print(table)
    if data["power_off"]:
        console.print("power off: " + ", ".join(data["power_off"]), highlight=False)
    if data["wake"]:
        console.print("wake: " + ", ".join(data["wake"]), highlight=False)


@app.command()
def balance(htools: Optional[Path] = HTOOLS,
            max_moves: Optional[int] = typer.Option(None, help="Move budget."),
            min_gain: float = typer.Option(0.01, help="Least gain per move once the score is "
                                                      "at or below --min-gain-limit (hbal -g)."),
            min_gain_limit: float = typer.Option(0.1, help="hbal --min-gain-limit."),
            migration_cost: float = typer.Option(0.0, help="Score a move must gain per GiB "
                                                           "of memory it copies."),
            ignore_dynu: bool = typer.Option(False, "--ignore-dynu",
                                             help="Leave out the load terms (measured CPU load and VM "
                                                  "count), like hbal --ignore-dynu."),
            load_window: Optional[float] = LOAD_WINDOW,
            apply: bool = APPLY, no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Moves that balance the pool (Ganeti's hbal score), in stages that can run together. On
    the live pool, the CPU-load term weighs what each VM measurably uses."""
    _live_only(htools, load_window)
    params = {"max_moves": max_moves, "min_gain": min_gain, "min_gain_limit": min_gain_limit,
              "migration_cost": migration_cost, "ignore_dynu": ignore_dynu, "load_window_s": load_window}
    if apply:
        return _apply("balance", htools, params, no_wait, as_json)
    data = _report("balance", htools, params)
    _emit(data) if as_json else _show_plan(data)


@app.command()
def consolidate(htools: Optional[Path] = HTOOLS,
                cpu_target: float = typer.Option(0.8, help="Share of usable vCPUs to fill."),
                memory_target: float = typer.Option(0.9, help="Share of usable memory to fill."),
                disk_target: float = typer.Option(1.0, help="Share of usable disk to fill."),
                wake_above: float = typer.Option(0.9, help="Above this share of the powered-on "
                                                           "pool, wake hosts instead."),
                max_moves: Optional[int] = typer.Option(None, help="Move budget."),
                load_target: float = typer.Option(0.63, help="Share of a host's CPUs its VMs' measured load may "
                                                            "keep busy."),
                load_wake_above: float = typer.Option(0.81, help="Above this share of the powered-on CPUs busy "
                                                                "by measured load, wake hosts instead."),
                load_window: Optional[float] = LOAD_WINDOW,
                apply: bool = typer.Option(False, "--apply", help="Do it: the hosts to power off go into "
                                           "maintenance and are emptied by live migration, stage by stage (a "
                                           "task); vpool does not power hosts off or on."),
                no_wait: bool = NO_WAIT, as_json: bool = JSON):
    """Hosts that can be emptied and powered off (DPM), or hosts to wake. On the live pool the
    hosts that stay on also keep their measured CPU load under --load-target."""
    _live_only(htools, load_window)
    params = {"cpu_target": cpu_target, "memory_target": memory_target, "disk_target": disk_target,
              "wake_above": wake_above, "max_moves": max_moves, "load_target": load_target,
              "load_wake_above": load_wake_above,
              "load_window_s": load_window}
    if apply:
        return _apply("consolidate", htools, params, no_wait, as_json)
    data = _report("consolidate", htools, params)
    _emit(data) if as_json else _show_plan(data)


@app.command()
def ha(htools: Optional[Path] = HTOOLS,
       failures: int = typer.Option(1, help="Hosts that may fail at once (N+k)."),
       as_json: bool = JSON):
    """Whether every VM of any k failed hosts can restart on the others (exit 2 if not)."""
    data = _report("ha", htools, {"failures": failures})
    if as_json:
        return _emit(data)
    console.print(data["message"], highlight=False)
    if data["bottlenecks"]:
        console.print("bottlenecks: " + ", ".join(data["bottlenecks"]), highlight=False)
    if not data["ok"]:
        raise typer.Exit(2)


@app.command()
def capacity(htools: Optional[Path] = HTOOLS,
             mix: str = typer.Option("medium", help="Flavors and weights, e.g. medium=3,large=1 "
                                                    "(tiny small medium large xlarge db)."),
             failures: int = typer.Option(1, help="Keep N+k while adding VMs (0: room only)."),
             disk_template: Optional[str] = typer.Option(
                 None, help="With --htools: the new VMs' Ganeti disk template (default: the "
                            "first the file's policy allows, as hspace does)."),
             as_json: bool = JSON):
    """How many more VMs of a flavor mix fit while keeping N+k (like Ganeti's hspace)."""
    data = _report("capacity", htools, {"mix": mix, "failures": failures}, disk_template)
    if as_json:
        return _emit(data)
    disks = {"local": "on their host's storage", "shared": "on shared storage",
             "mirrored": "mirrored on a second host"}[data["disks"]]
    console.print(f"{data['fits']} more VMs fit keeping N+{data['failures']} "
                  f"({data['fits_without_ha']} by room alone; disks {disks})", highlight=False)
    table = Table()
    table.add_column("flavor")
    table.add_column("VMs")
    for name, count in data["by_flavor"].items():
        table.add_row(name, str(count))
    console.print(table)
    console.print(data["limited_by"], highlight=False)


@app.command()
def place(htools: Path = typer.Option(..., "--htools", help="The Ganeti htools text file to place on, as hail -t "
                                                              "does; on the live pool `vpool vm create NAME "
                                                              "--dry-run` answers."),
          flavor: str = typer.Option("medium", help="Its size: " + " ".join(DEFAULT_FLAVORS) + "."),
          cpus: Optional[float] = typer.Option(None, help="vCPUs, instead of the flavor's."),
          memory: Optional[float] = typer.Option(None, help="MiB of memory, instead of the flavor's."),
          disk: Optional[float] = typer.Option(None, help="GiB of disk, instead of the flavor's."),
          name: str = typer.Option("new-vm", help="What to call it in the answer."),
          disk_template: Optional[str] = typer.Option(
              None, help="Its Ganeti disk template (default: the first the file's policy allows, as hail does)."),
          as_json: bool = JSON):
    """Where one more VM would go on an htools cluster and why, host by host (like Ganeti's hail)."""
    if flavor not in DEFAULT_FLAVORS:
        fail(f"unknown flavor {flavor!r}; known: {', '.join(DEFAULT_FLAVORS)}")
    size = DEFAULT_FLAVORS[flavor]
    given = {"cpus": cpus, "memory_mib": memory, "disk_gib": disk}
    if any(v is not None and not v >= 0 for v in given.values()) or cpus == 0:
        fail("--cpus must be above 0, and --memory and --disk 0 or more")
    request = replace(size, name=name, **{k: v for k, v in given.items() if v is not None})
    _answer(_offline(htools, disk_template, lambda state, disks: placement_report(state, request, disks)), as_json)


@app.command()
def drs(settings: list[str] = typer.Option(None, "--set", help="KEY=VALUE, repeatable: automation=automatic|off, "
                                                               "interval_s, max_moves, min_gain, migration_cost, "
                                                               "load_window_s."),
        run: bool = typer.Option(False, "--run", help="One run now, whatever the automation."),
        as_json: bool = JSON):
    """Show or change DRS automation: with automation=automatic the pool applies its balance plan
    by itself every interval_s, at most max_moves moves a run."""
    changes = key_values(settings)
    status = call("PATCH", "/plans/drs", json=changes) if changes else call("GET", "/plans/drs")
    if run:
        status = call("POST", "/plans/drs/run")
    if as_json:
        return _emit(status)
    last, task = status.pop("last_run"), status.pop("task", None)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC: ", time.gmtime(last["at"])) if last["at"] else ""
    details(status | {"last run": when + last["outcome"]})
    if task:
        follow(call("GET", api_path("/tasks/{}", task)), True, False)


@app.command("export-htools")
def export_htools(output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                        help="Write here instead of stdout.")):
    """The live pool in Ganeti's htools text format, for hbal -t / hinfo -t."""
    text = call("GET", "/plans/export-htools")
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
