"""The CLI's way to the API: VPOOL_URL and VPOOL_TOKEN, else the local data dir's admin token."""

import json
import os
import sys
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from vpool.config import Settings


def _console(stderr: bool = False) -> Console:
    """Output piped to a file or grep is not cut at 80 columns, as Rich cuts it by default: a
    terminal's width, or COLUMNS, still rules where there is one."""
    wide = not (sys.stderr if stderr else sys.stdout).isatty() and "COLUMNS" not in os.environ
    # No markup: names, descriptions and the server's messages are printed as given ('[/]' in one
    # would stop the command with MarkupError, '[b]' would vanish); colour goes through Text.
    return Console(stderr=stderr, width=200 if wide else None, markup=False)


console = _console()
err = _console(stderr=True)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
NO_WAIT = typer.Option(False, "--no-wait", help="Return at once with the task instead of waiting.")
FINISHED = ("succeeded", "failed", "cancelled")


def api_urls() -> list[str]:
    """VPOOL_URL: one API, or several separated by commas (a control plane and its standbys);
    the one that last answered first."""
    urls = [u.strip().rstrip("/") for u in os.environ.get("VPOOL_URL", "http://127.0.0.1:8080").split(",")]
    urls = [u for u in urls if u] or ["http://127.0.0.1:8080"]
    return sorted(urls, key=lambda u: u != _answered.get("url"))


_answered: dict[str, str] = {}


def api_token() -> str | None:
    if os.environ.get("VPOOL_TOKEN"):
        return os.environ["VPOOL_TOKEN"]
    path = Settings().token_file
    return path.read_text().strip() if path.exists() else None


def api_client(url: str, timeout: float = 60.0) -> httpx.Client:
    token = api_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0))


def fail(message: str, code: int = 1):
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def api_path(template: str, *segments) -> str:
    """template with each '{}' replaced by one escaped path segment: a name like '..' or 'a?b' is
    then looked up as that name (and refused) instead of reaching another route. A '/' is refused
    here: the server decodes '%2F' before routing, so 'web1/snapshots/s1' given to `vm delete`
    would delete a snapshot."""
    def segment(value) -> str:
        if "/" in str(value):
            fail(f"{str(value)!r} cannot name anything in vpool: names never contain '/'")
        quoted = quote(str(value), safe="")
        return quoted.replace(".", "%2E") if set(quoted) <= {"."} else quoted  # '..' is not a step up
    return template.format(*map(segment, segments))


def call(method: str, path: str, **kwargs):
    """One request; a problem+json answer becomes one line on stderr and exit code 1. With
    several URLs, the next is tried only when one refuses the connection (a standby serves
    nothing until it takes over), so no request is ever sent twice; the one that answered is
    asked first from then on."""
    urls = api_urls()
    for url in urls:
        try:
            with api_client(url) as c:
                r = c.request(method, path, **kwargs)
            break
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            if url == urls[-1]:
                fail(f"cannot reach vpool at {', '.join(urls)} ({e.__class__.__name__}); is 'vpool serve' running?")
        except httpx.TransportError as e:
            maybe = "" if method == "GET" else "; the request may or may not have been carried out"
            fail(f"vpool at {url} did not answer ({e.__class__.__name__}){maybe}")
    _answered["url"] = url
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail") or r.text
        except ValueError:
            detail = r.text
        fail(f"{detail}")
    if r.status_code == 204 or not r.content:
        return None
    ctype = r.headers.get("content-type", "")
    return r.json() if "json" in ctype else r.text


def table(title: str, columns: list[str], rows: list[list]) -> None:
    """The CLI's one table style: a left-aligned title, empty cells for missing values, and one
    line instead of an empty frame when there is nothing to list."""
    if not rows:
        return console.print(f"{title}: none")
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


def details(record: dict) -> None:
    """One object as aligned `key  value` lines (`vm show`, `task show`): '-' where there is no
    value, rather than Python's None or a blank."""
    width = max(map(len, record), default=0)
    for key, value in record.items():
        console.print(Text.assemble((f"{key:>{width}}", "bold"), f"  {'-' if value in (None, '') else value}"),
                      highlight=False)


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def key_values(items: list[str] | None) -> dict[str, str]:
    """--set KEY=VALUE options as a dict; a malformed one ends the command."""
    changes = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set takes KEY=VALUE, not {item!r}")
        changes[key] = value
    return changes


def follow(task: dict, wait: bool, as_json: bool) -> dict:
    """Wait for a task behind a progress bar (or not), then report how it ended."""
    if wait and task["state"] not in FINISHED:
        if as_json or not console.is_terminal:
            while task["state"] not in FINISHED:
                task = call("GET", api_path("/tasks/{}", task["id"]), params={"wait": 5})
        else:
            with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[message]}", markup=False),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                tid = bar.add_task(f"{task['kind']} {task['target'] or ''}", total=100, message="")
                while task["state"] not in FINISHED:
                    task = call("GET", api_path("/tasks/{}", task["id"]), params={"wait": 1})
                    bar.update(tid, completed=task["progress"], message=task["message"])
    if as_json:
        emit_json(task)
        if task["state"] in ("failed", "cancelled"):
            raise typer.Exit(1)
    elif task["state"] in FINISHED:
        line = f"task {task['id']} {task['kind']} {task['target'] or ''}: {task['state']}"
        if task["state"] == "succeeded":
            note = "" if task.get("message") in (None, "done") else f" ({task['message']})"
            console.print(Text.assemble((line, "green"), note), highlight=False)
        else:
            fail(f"{line}: {task.get('error') or task.get('message')}")
    else:
        console.print(f"task {task['id']} {task['kind']} queued; follow it with: vpool task wait {task['id']}")
    return task
