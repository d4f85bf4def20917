"""`vpool top`, `vpool stats`, `vpool forecast` and `vpool alarm`: what the collector measured,
where it is heading, and who is told when."""

import time

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vpool.cli.client import JSON, api_path, call, console, emit_json, fail, table

alarm_app = typer.Typer(help="Alarms: threshold and anomaly rules, their states and history.", no_args_is_help=True)
TOP_WIDTH = 80  # virt-top's terminal
TOP_SORT = {"cpu": "cpu_percent", "mem": "memory_used_bytes", "read": "disk_read_bytes_per_s",
            "write": "disk_write_bytes_per_s", "rx": "net_rx_bytes_per_s", "tx": "net_tx_bytes_per_s"}

# `top`'s amount columns: header, metric, and the step between K, M and G (bytes 1024, requests 1000)
TOP_AMOUNTS = (("MEM", "memory_used_bytes", 1024.0), ("RD/s", "disk_read_bytes_per_s", 1024.0),
               ("WR/s", "disk_write_bytes_per_s", 1024.0), ("RDIO", "disk_read_iops", 1000.0),
               ("WRIO", "disk_write_iops", 1000.0), ("RX/s", "net_rx_bytes_per_s", 1024.0),
               ("TX/s", "net_tx_bytes_per_s", 1024.0))


def _bytes(value: float | None, per_s: bool = False) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            text = f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            return text + ("/s" if per_s else "")
        value /= 1024
    return "-"


def _short(value: float | None, step: float = 1024.0) -> str:
    """At most five characters, for `top`, whose headers name the unit: 0, 27.9K, 256M, 1.21G."""
    if value is None:
        return "-"
    for unit in ("", "K", "M", "G", "T", "P"):
        if abs(value) < 999.5 or unit == "P":
            break
        value /= step
    if not unit or abs(value) >= 99.95:
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}" if abs(value) >= 9.995 else f"{value:.2f}{unit}"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _anomaly(metrics: dict) -> float | None:
    scores = [v for k, v in metrics.items() if k.endswith(".anomaly")]
    return max(scores) if scores else None


def toptable(data: dict, sort: str = "cpu", limit: int = 50) -> Group:
    """One frame of `vpool top`: the hosts, then the busiest VMs, a line each."""
    title = Text(f"vpool top: {len(data['vms'])} VMs · every {data['interval_s']:g} s · ")
    width = len(title)
    for n, h in enumerate(data["hosts"] or [None]):
        entry = "no hosts" if h is None else \
            f"{h['name']} {h['vms']} VMs {_num(h['metrics'].get('guest_cpu_cores'), '{:.2f}')} cores"
        stale = " stale" if h and h["stale"] else ""
        if n and width + len(entry) + len(stale) + 2 > TOP_WIDTH:  # a host's entry is never broken in two
            title.append(",\n")
            width = 0
        elif n:
            title.append(", ")
            width += 2
        title.append(entry)
        title.append(stale, "red")
        width += len(entry) + len(stale)
    key = TOP_SORT[sort]
    vms = sorted(data["vms"], key=lambda v: v["metrics"].get(key, -1.0), reverse=True)
    # virt-top's layout: a line per VM in 80 columns, numbers of at most five characters under
    # headers that name the unit (bytes and requests per second), the names last
    grid = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold reverse")
    for column in ("%CPU", *(header for header, _, _ in TOP_AMOUNTS), "ANOM"):
        grid.add_column(column, justify="right", no_wrap=True, min_width=5)
    grid.add_column("host", max_width=12, overflow="ellipsis")  # names have no spaces: cut, never wrapped
    grid.add_column("VM", overflow="ellipsis")
    for v in vms[:limit]:
        m = v["metrics"]
        grid.add_row(_num(m.get("cpu_percent"), "{:.0f}" if m.get("cpu_percent", 0) >= 999.5 else "{:.1f}"),
                      *(_short(m.get(metric), step) for _, metric, step in TOP_AMOUNTS),
                      _num(_anomaly(m), "{:.2f}"), v["host"] or "", v["name"])
    return Group(title, grid)


def top(host: str = typer.Option(None, help="Only this host's VMs."),
        sort: str = typer.Option("cpu", help=f"Sort by {', '.join(TOP_SORT)}."),
        limit: int = typer.Option(50, min=1, help="Show at most this many VMs."),
        interval: float = typer.Option(None, min=0.2, help="Refresh every N s (default: the collection interval)."),
        once: bool = typer.Option(False, "--once", help="Print one frame and exit."),
        as_json: bool = JSON):
    """A live table of the busiest VMs, like virt-top, from the last collection interval."""
    if sort not in TOP_SORT:
        fail(f"cannot sort by {sort!r}; use one of {', '.join(TOP_SORT)}")
    params = {"host": host} if host else {}
    data = call("GET", "/metrics/latest", params=params)
    if as_json:
        return emit_json(data)
    if once or not console.is_terminal:
        return console.print(toptable(data, sort, limit))
    every = interval or data["interval_s"]
    try:
        with Live(toptable(data, sort, limit), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(toptable(call("GET", "/metrics/latest", params=params), sort, limit), refresh=True)
    except KeyboardInterrupt:
        pass


def stats(vm: str, since: str = typer.Option("1h", help="How far back: 30m, 1h, 7d, or an ISO 8601 time."),
          step: str = typer.Option(None, help="Bucket size, e.g. 5m (default: the stored resolution)."),
          as_json: bool = JSON):
    """A VM's metrics over a period: last, min, mean, max, and the highest anomaly score."""
    params = {"vm": vm, "since": since, **({"step": step} if step else {})}
    data = call("GET", "/metrics/query", params=params)
    if as_json:
        return emit_json(data)
    by_metric = {s["metric"]: s["points"] for s in data["series"]}
    resolution = "raw" if data["resolution_s"] is None else f"{data['resolution_s']} s"
    grid = Table(title=f"{vm} since {since} ({resolution} resolution)", title_justify="left")
    grid.add_column("metric", min_width=max((len(m) for m in by_metric if not m.endswith(".anomaly")), default=6),
                     no_wrap=True)
    for column in ("points", "last", "min", "mean", "max", "max anomaly"):
        grid.add_column(column, justify="right")
    for metric in sorted(m for m in by_metric if not m.endswith(".anomaly")):
        points = by_metric[metric]
        if not points:
            continue
        fmt = _formatter(metric)
        mean = sum(p[1] for p in points) / len(points)
        scores = by_metric.get(metric + ".anomaly") or []
        grid.add_row(metric, str(len(points)), fmt(points[-1][1]), fmt(min(p[2] for p in points)), fmt(mean),
                      fmt(max(p[3] for p in points)), f"{max(p[3] for p in scores):.2f}" if scores else "learning")
    if not grid.row_count:
        return console.print(f"no samples of {vm} since {since} yet")
    console.print(grid)


def forecast(vm: str = typer.Argument(None, help="The VM (leave out, with --host, for a host's series)."),
             metric: str = typer.Option(..., help="e.g. cpu_percent, net_rx_bytes_per_s."),
             host: str = typer.Option(None, help="A host's series instead of a VM's."),
             horizon: str = typer.Option("30m", help="How far ahead."),
             history: str = typer.Option("6h", help="How much stored history the model learns from."),
             as_json: bool = JSON):
    """Where a series is heading: Holt-Winters (damped trend, detected season) on its history."""
    params = {"metric": metric, "horizon": horizon, "history": history,
              **({"vm": vm} if vm else {}), **({"host": host} if host else {})}
    f = call("GET", "/metrics/forecast", params=params)
    if as_json:
        return emit_json(f)
    fmt = _formatter(metric)
    season = f"a season of {f['season_steps']} steps" if f["season_steps"] else "no season"
    console.print(f"{f['name']} {metric}: fitted on {f['fitted_on']} steps of {_duration(f['step_s'])} ({season})")
    grid = Table()
    for column in ("ahead", "at (UTC)", "forecast"):
        grid.add_column(column, justify="right")
    grid.add_row("now", _clock(f["last"][0]), fmt(f["last"][1]))
    points = f["points"]
    for i in sorted({max(0, round(len(points) * k / 6) - 1) for k in range(1, 7)}):  # at most six, the horizon last
        t, value = points[i]
        grid.add_row(f"+{_duration(t - f['last'][0])}", _clock(t), fmt(value))
    console.print(grid)


def _formatter(metric: str):
    """Bytes as KiB/MiB/GiB (per second for rates), anything else as a number."""
    return (lambda x: _bytes(x, metric.endswith("_per_s"))) if "bytes" in metric else _num


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _duration(seconds: float) -> str:
    """The largest unit that says it exactly: 1h, 80m, 90s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


# --- alarms -------------------------------------------------------------------------------------
@alarm_app.command("create")
def alarm_create(name: str, metric: str = typer.Option(..., help="e.g. cpu_percent, memory_used_bytes."),
                 value: float = typer.Option(..., help="Threshold, or minimum anomaly score (0-1; on cpu_percent "
                                             "0.35 and below also hears the resonance's opinion on shape)."),
                 comparison: str = typer.Option(None, "--comparison", "-c", help=">, >=, < or <= (threshold)."),
                 anomaly: bool = typer.Option(False, "--anomaly", help="Fire on the detector's score, not the value."),
                 scope: str = typer.Option("vm", help="vm, host or pool."),
                 target: str = typer.Option(None, help="One VM or host by name (default: each of the scope)."),
                 for_: str = typer.Option("0s", "--for", help="How long the condition must hold, e.g. 5m."),
                 webhook: str = typer.Option(None, help="URL to POST a JSON notice to when it fires or resolves."),
                 as_json: bool = JSON):
    """Create an alarm, e.g. vpool alarm create hot --metric cpu_percent -c '>' --value 90 --for 5m."""
    body = {"name": name, "kind": "anomaly" if anomaly else "threshold", "scope": scope, "target": target,
            "metric": metric, "comparison": comparison, "value": value, "for": for_, "webhook": webhook}
    a = call("POST", "/alarms", json=body)
    if as_json:
        return emit_json(a)
    console.print(f"alarm {a['name']}: {_condition(a)}", highlight=False)


def _condition(a: dict) -> str:
    what = f"{a['metric']} anomaly score" if a["kind"] == "anomaly" else a["metric"]
    where = a["target"] or f"any {a['scope']}" if a["scope"] != "pool" else "the pool"
    held = f" for {a['for_s']:g} s" if a["for_s"] else ""
    return f"{what} {a['comparison']} {a['value']:g} on {where}{held}"


@alarm_app.command("set")
def alarm_set(name: str, value: float = typer.Option(None, help="New threshold, or minimum anomaly score."),
              comparison: str = typer.Option(None, "--comparison", "-c", help=">, >=, < or <= (threshold)."),
              for_: str = typer.Option(None, "--for", help="How long the condition must hold, e.g. 5m."),
              webhook: str = typer.Option(None, help="URL to POST a JSON notice to."),
              no_webhook: bool = typer.Option(False, "--no-webhook", help="Notify no one any more."),
              enabled: bool = typer.Option(None, "--enable/--disable", help="Judge again, or stop judging "
                                           "(its firing states end with a `disabled` notice)."),
              as_json: bool = JSON):
    """Change an alarm, e.g. vpool alarm set hot --value 95, or vpool alarm set hot --disable."""
    if webhook is not None and no_webhook:
        fail("give --webhook URL or --no-webhook, not both")
    body = {k: v for k, v in {"value": value, "comparison": comparison, "for": for_, "webhook": webhook,
                              "enabled": enabled}.items() if v is not None}
    if no_webhook:
        body["webhook"] = None
    if not body:
        fail("say what to change: --value, -c, --for, --webhook, --no-webhook, --enable or --disable")
    a = call("PATCH", api_path("/alarms/{}", name), json=body)
    if as_json:
        return emit_json(a)
    console.print(f"alarm {a['name']}: {_condition(a)}" + ("" if a["enabled"] else " (disabled)"), highlight=False)


@alarm_app.command("list")
def alarm_list(as_json: bool = JSON):
    """Alarms with the VMs or hosts they are firing for."""
    items = call("GET", "/alarms")["items"]
    if as_json:
        return emit_json(items)
    table("Alarms", ["name", "kind", "condition", "firing", "webhook"],
          [[a["name"], a["kind"], _condition(a), ", ".join(a["firing"]) or ("ok" if a["enabled"] else "disabled"),
            a["webhook"]] for a in items])


@alarm_app.command("show")
def alarm_show(name: str, as_json: bool = JSON):
    """One alarm: its condition and where it stands for each VM or host it has judged."""
    a = call("GET", api_path("/alarms/{}", name))
    if as_json:
        return emit_json(a)
    console.print(f"alarm {a['name']} ({a['kind']}): {_condition(a)}; webhook {a['webhook'] or 'none'}",
                  highlight=False)
    table("Where it stands", ["subject", "state", "value", "since"],
          [[st["subject"], st["state"], _num(st["value"], "{:.4g}"), str(st["changed_at"])[:19]] for st in a["states"]])


@alarm_app.command("delete")
def alarm_delete(name: str):
    """Delete an alarm with its states (its history stays)."""
    call("DELETE", api_path("/alarms/{}", name))
    console.print(f"alarm {name} deleted")


@alarm_app.command("history")
def alarm_history(name: str = typer.Argument(None, help="Only this alarm."), limit: int = typer.Option(20, min=1),
                  as_json: bool = JSON):
    """Firing, resolved and disabled events, newest first, and whether the webhook took them."""
    items = call("GET", "/alarms/history", params={"limit": limit, **({"alarm": name} if name else {})})["items"]
    if as_json:
        return emit_json(items)
    table("Alarm history", ["at", "alarm", "subject", "state", "value", "notified"],
          [[str(e["at"])[:19], e["alarm"], e["subject"], e["state"], _num(e["value"], "{:.4g}"),
            "yes" if e["notified"] else (e["notify_error"] or "-")] for e in items])


def register(app: typer.Typer) -> None:
    app.command()(top)
    app.command()(stats)
    app.command()(forecast)
    app.add_typer(alarm_app, name="alarm")
