"""`vpool lab`: several libvirtd hosts on this machine, for trying vpool and for its tests.

The lab is machine plumbing, not a pool operation, so these commands drive `vpool.lab` directly;
only registering the hosts goes through the API, like any other client would.
"""

import typer
from rich.table import Table
from rich.text import Text

from vpool.cli.client import call, console, emit_json, err, fail, follow
from vpool.lab.hosts import HostStatus, Lab
from vpool.lab.network import MAX_HOSTS
from vpool.lab.procs import LabError
from vpool.model.errors import HypervisorError

app = typer.Typer(help="The local lab: libvirtd hosts in namespaces of this machine (needs root).",
                  no_args_is_help=True)


def _lab() -> Lab:
    try:
        return Lab()
    except LabError as e:
        fail(str(e))


def _show(lab: Lab, hosts: list[HostStatus]) -> None:
    dhcp = lab.dhcp()
    topo = lab.topology
    table = Table(title=f"Lab in {lab.root}", title_justify="left")
    for column in ("host", "address", "uri", "libvirtd", "running"):
        table.add_column(column)
    for h in hosts:
        daemon = (Text("answers", "green") if h.answers else Text("alive, silent", "yellow")) if h.libvirtd \
            else Text("down", "red")
        table.add_row(h.name, h.address, h.uri, daemon, "" if h.running is None else str(h.running))
    console.print(table)
    console.print(Text.assemble(
        f"guest network {topo.guest_subnet}.0/24 on bridge {topo.guest_bridge} (isolated), DHCP ",
        ("running", "green") if dhcp and dhcp.alive() else ("not running", "red"),
        f"; shared disks in {lab.shared_dir}"), highlight=False)


def _register(lab: Lab, hosts: list[HostStatus]) -> None:
    """Add the lab's hosts to the running control plane, skipping those it already has."""
    try:
        known = call("GET", "/hosts", params={"limit": 1000})["items"]
    except typer.Exit:
        err.print("the lab is up, but its hosts are not registered: start `vpool serve` and run "
                  "`vpool lab up` again, or pass --no-register")
        raise
    uris, names = {h["uri"] for h in known}, {h["name"]: h["uri"] for h in known}
    failed = []
    for h in hosts:
        if h.uri in uris:
            continue
        if h.name in names:
            failed.append(f"{h.name}: the pool already has a host of that name ({names[h.name]})")
            continue
        task = call("POST", "/hosts", json={"uri": h.uri, "name": h.name, "virt_type": "qemu",
                                            "network": f"bridge:{lab.topology.guest_bridge}"})
        try:
            follow(task, wait=True, as_json=False)
        except typer.Exit:  # follow has said why
            failed.append(f"{h.name}: its registration task failed")
    if failed:
        fail("; ".join(failed))


@app.command()
def up(hosts: int = typer.Option(3, "--hosts", min=1, max=MAX_HOSTS, help="How many hosts (lab1..labN)."),
       register: bool = typer.Option(True, "--register/--no-register",
                                     help="Add the hosts to the running vpool control plane.")):
    """Start the lab's hosts, network and DHCP; what already runs is left alone."""
    lab = _lab()
    try:
        status = lab.up(hosts, say=lambda line: console.print(line, highlight=False))
    except (LabError, HypervisorError) as e:
        fail(f"{e} (`vpool lab down` removes what was started)")
    _show(lab, status)
    if register:
        _register(lab, [h for h in status if h.number <= hosts])


@app.command()
def down(fence: bool = typer.Option(True, "--fence/--no-fence",
                                    help="Keep the lab's subnets unreachable until the next up, so clients still "
                                         "pointed at lab hosts fail here instead of sending packets out.")):
    """Destroy the lab's guests, stop the processes it recorded, remove its netns and bridges."""
    lab = _lab()
    try:
        lab.down(say=lambda line: console.print(line, highlight=False), fence=fence)
    except LabError as e:
        fail(str(e))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")):
    """Each lab host: address, URI, whether libvirtd runs and answers, how many domains run."""
    lab = _lab()
    hosts = lab.status()
    if as_json:
        return emit_json([h.to_json() for h in hosts])
    if not hosts:
        console.print(f"no lab in {lab.root}; start one with `vpool lab up`")
        return
    _show(lab, hosts)
