import json

import pytest
from typer.testing import CliRunner

from vpool.cli.plan import app
from vpool.placement.htools import read_htools
from vpool.placement.report import htools_text, parse_parameters, plan_report
from vpool.placement.capacity import _Mirrors
from vpool.placement.request import PlacementRequest
from vpool.placement.score import hbal_score
from vpool.placement.state import VMRecord, Workspace

runner = CliRunner()


def test_offline_balance_json_is_the_report_the_api_returns(tiny_file):
    result = runner.invoke(app, ["balance", "--htools", str(tiny_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    state = read_htools(tiny_file.read_text()).to_state()
    assert data == plan_report("balance", state, {"min_gain": "0.01", "ignore_dynu": "false"})
    assert [(m["vm"], m["from"], m["to"], m["stage"]) for m in data["moves"]] == [
        ("vm1", "node1", "node2", 1), ("vm2", "node1", "node3", 2)]
    assert round(data["score_before"], 8) == 7.82236877
    assert round(data["score_after"], 8) == 1.94059638


def test_offline_table_output(tiny_file):
    result = runner.invoke(app, ["balance", "--htools", str(tiny_file)])
    assert result.exit_code == 0
    assert "vm1" in result.stdout and "score 7.82236877 -> 1.94059638" in result.stdout


def test_drbd_moves_name_the_mirror_before_and_after(generate):
    path = generate("-n", "12", "-i", "60", "--seed", "7", "--template", "drbd")
    data = json.loads(runner.invoke(app, ["balance", "--htools", str(path), "--json"]).stdout)
    first = data["moves"][0]     # hbal: vm00010 node0011:node0003 => node0007:node0011
    assert (first["vm"], first["from"], first["secondary_from"], first["to"],
            first["secondary_to"]) == ("vm00010", "node0011", "node0003", "node0007", "node0011")
    assert first["reason"].startswith("replace-disks -n node0007, then failover: ")
    table = runner.invoke(app, ["balance", "--htools", str(path)]).stdout
    assert table.count("(mirror") == 2 * len(data["moves"])


@pytest.mark.parametrize("args", [
    ["consolidate", "--json"], ["ha", "--failures", "2", "--json"],
    ["capacity", "--mix", "medium=3,large=1", "--json"],
])
def test_other_plans_offline(generate, args):
    path = generate("-n", "10", "-i", "60", "--seed", "1")
    result = runner.invoke(app, [args[0], "--htools", str(path), *args[1:]])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == args[0]


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, generate):
    bad = tmp_path / "bad.txt"
    bad.write_text("g|u|preferred||\n\nn1|1024|0|512.5|0|0|1|N|u\n\n\n")
    result = runner.invoke(app, ["balance", "--htools", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {bad}: line 3: f_mem must be an integer, got '512.5'"]
    good = generate("-n", "10", "-i", "60", "--seed", "1")
    result = runner.invoke(app, ["capacity", "--htools", str(good), "--mix", "huge=1"])
    assert result.exit_code == 1 and "unknown flavor 'huge'" in result.output
    result = runner.invoke(app, ["ha", "--htools", str(tmp_path / "missing.txt")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="plan ha takes no parameter 'mix'"):
        parse_parameters("ha", {"mix": "small"})
    with pytest.raises(ValueError, match="parameter max_moves"):
        parse_parameters("balance", {"max_moves": "many"})
    assert parse_parameters("balance", {"ignore_dynu": "true", "max_moves": "3"}) == {
        "ignore_dynu": True, "max_moves": 3}


def test_export_htools_text_reads_back(tiny_file):
    state = read_htools(tiny_file.read_text()).to_state()
    assert read_htools(htools_text(state)).to_state().host_names == state.host_names


def test_live_mode_asks_the_api_and_prints_its_json(monkeypatch, tiny_file):
    """Without --htools the plan comes from GET /plans/KIND, with the options as query."""
    import httpx

    import vpool.cli.client as client

    state = read_htools(tiny_file.read_text()).to_state()
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/plans/export-htools":
            return httpx.Response(200, text=htools_text(state),
                                  headers={"content-type": "text/plain"})
        kind = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json=plan_report(kind, state, dict(request.url.params)))

    monkeypatch.setattr(client, "api_client", lambda timeout=60.0: httpx.Client(
        base_url="http://vpool.test", transport=httpx.MockTransport(handler),
        headers={"Authorization": "Bearer t0ken"}))
    live = runner.invoke(app, ["balance", "--max-moves", "1", "--json"])
    assert live.exit_code == 0, live.output
    assert seen[-1].url.path == "/plans/balance"
    assert dict(seen[-1].url.params) == {"max_moves": "1", "min_gain": "0.01",
                                         "min_gain_limit": "0.1", "migration_cost": "0.0",
                                         "ignore_dynu": "false"}
    assert seen[-1].headers["authorization"] == "Bearer t0ken"
    offline = runner.invoke(app, ["balance", "--max-moves", "1", "--json", "--htools",
                                  str(tiny_file)])
    assert json.loads(live.stdout) == json.loads(offline.stdout)
    exported = runner.invoke(app, ["export-htools"])
    assert exported.exit_code == 0 and exported.stdout == htools_text(state)


def test_capacity_follows_the_files_disk_template(generate):
    path = generate("-n", "12", "-i", "60", "--seed", "1", "--template", "drbd")
    mirrored = json.loads(runner.invoke(app, ["capacity", "--htools", str(path), "--json"]).stdout)
    shared = json.loads(runner.invoke(app, ["capacity", "--htools", str(path), "--json",
                                            "--disk-template", "sharedfile"]).stdout)
    assert (mirrored["disks"], shared["disks"]) == ("mirrored", "shared")
    assert mirrored["fits_without_ha"] < shared["fits_without_ha"]    # each disk twice on nodes
    table = runner.invoke(app, ["capacity", "--htools", str(path)]).stdout
    assert "disks mirrored on a second host" in table


def test_disk_template_errors_are_one_line(generate):
    path = generate("-n", "10", "-i", "60", "--seed", "1")
    result = runner.invoke(app, ["capacity", "--htools", str(path), "--disk-template", "raid"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "error: unknown disk template 'raid'; known: diskless, file, sharedfile, plain, blockdev, "
        "drbd, rbd, ext, gluster"]
    result = runner.invoke(app, ["capacity", "--disk-template", "drbd"])
    assert result.exit_code == 1 and "--disk-template needs --htools" in result.output


def _pair_score(state, primary: str, mirror: str) -> float:
    """Ganeti's cluster score once a medium VM runs on `primary` with its disk mirrored on `mirror`."""
    return hbal_score(state.add(VMRecord("new-vm", primary, 2, 4096, 60, secondary=mirror)))


def test_place_on_an_htools_file_answers_as_a_dry_run_does_host_by_host(generate):
    """`plan place` is hail with its reasons: the chosen host and every other host's verdict, the
    disk on the host for a local template, on shared storage otherwise, and mirrored on a second
    host for drbd; what it cannot place (a VM no host has room for, a mirror with no second host,
    an unknown flavor, a size below zero) is one line and exit 1."""
    plain = generate("-n", "6", "-i", "30", "--seed", "3", "--template", "plain")
    data = json.loads(runner.invoke(app, ["place", "--htools", str(plain), "--flavor", "large", "--json"]).stdout)
    state = read_htools(plain.read_text()).to_state()
    assert data["host"] in state.host_names and data["demand"] == {"cpus": 4, "memory_mib": 8192, "disk_gib": 100}
    assert [h["host"] for h in data["hosts"]][0] == data["host"] and len(data["hosts"]) == state.n_hosts
    totals = [h["total"] for h in data["hosts"] if h["total"] is not None]
    assert totals == sorted(totals, reverse=True) and "mirror" not in data
    shared = json.loads(runner.invoke(app, ["place", "--htools", str(plain), "--disk-template", "sharedfile",
                                            "--memory", "2048", "--json"]).stdout)
    assert shared["demand"] == {"cpus": 2, "memory_mib": 2048, "disk_gib": 0.0}
    table = runner.invoke(app, ["place", "--htools", str(plain), "--name", "web1"])
    assert table.exit_code == 0 and "web1 would go to" in table.stdout

    drbd = generate("-n", "6", "-i", "30", "--seed", "3", "--template", "drbd")
    mirrored = json.loads(runner.invoke(app, ["place", "--htools", str(drbd), "--json"]).stdout)
    assert mirrored["host"] and mirrored["mirror"] not in (None, mirrored["host"])
    drbd_state = read_htools(drbd.read_text()).to_state()
    request = PlacementRequest("new-vm", cpus=2, memory_mib=4096, disk_gib=60)  # medium
    first = _Mirrors(drbd_state).choose(Workspace(drbd_state), drbd_state.host_index[mirrored["host"]], request)

    # weighed, as hail weighs it: here capacity's first choice is not the best-balanced mirror
    chosen = _pair_score(drbd_state, mirrored["host"], mirrored["mirror"])
    assert chosen < _pair_score(drbd_state, mirrored["host"], drbd_state.host_names[first])
    shown = runner.invoke(app, ["place", "--htools", str(drbd)]).stdout
    assert "its disk mirrored on " + mirrored["mirror"] in shown and "leaves Ganeti's cluster score lowest" in shown
    # the pair is weighed whole, as hail weighs it: on this cluster the weighers' first host is
    # in no pair as good as the chosen one, with any mirror it could have
    other = generate("-n", "6", "-i", "30", "--seed", "1", "--template", "drbd")
    pair = json.loads(runner.invoke(app, ["place", "--htools", str(other), "--json"]).stdout)
    other_state = read_htools(other.read_text()).to_state()
    top = next(h["host"] for h in pair["hosts"] if h["total"] is not None)
    ranked = _Mirrors(other_state).ranked(Workspace(other_state), other_state.host_index[top], request)
    assert pair["host"] != top and ranked.size
    chosen = _pair_score(other_state, pair["host"], pair["mirror"])
    assert all(chosen < _pair_score(other_state, top, other_state.host_names[m]) for m in ranked)
    free = Workspace(read_htools(drbd.read_text()).to_state()).free[:, 2]
    roomiest, second = sorted(free)[-1], sorted(free)[-2]
    assert roomiest > second  # one host alone has room for this disk: none for its mirror
    for args, words in ((["--htools", str(drbd), "--disk", f"{roomiest:g}"], "for the mirror of new-vm"),
                        (["--htools", str(plain), "--memory", "900000"], "no host has room"),
                        (["--htools", str(plain), "--flavor", "huge"], "unknown flavor 'huge'"),
                        (["--htools", str(plain), "--cpus", "0"], "--cpus must be above 0")):
        result = runner.invoke(app, ["place", *args])
        assert result.exit_code == 1 and words in result.output, (args, result.output)
