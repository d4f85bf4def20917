"""The issue-5 commands against a real server on loopback (simulated host): output, --json, errors."""

import json

from vpool.lab.simhost import write_sim_host
from tests.core.test_cli import server, vpool

__all__ = ["server"]


def test_schedule_commands_and_one_line_errors(server, tmp_path):
    assert vpool("host", "add", write_sim_host(tmp_path, "clip", cpus=2, memory_mib=2048), "--name", "clip").exit_code == 0
    assert vpool("vm", "create", "p1", "--memory", "256M").exit_code == 0
    r = vpool("schedule", "create", "backup", "p1", "--cron", "0 2 * * *", "--keep-daily", 7)
    assert r.exit_code == 0 and "next" in r.stdout
    [sc] = json.loads(vpool("schedule", "list", "--json").stdout)
    assert sc["vm"] == "p1" and sc["cron"] == "0 2 * * *" and sc["keep_daily"] == 7
    assert "Runs" in vpool("schedule", "show", sc["id"]).stdout
    for args, words in ((["schedule", "create", "backup", "p1", "--cron", "0 2 * *"], "5 fields"),
                        (["snapshot", "revert", "p1", "nope"], "no snapshot"),
                        (["backup", "restore", "p1"], "no backups"),
                        (["vm", "clone", "p1", "p2", "--linked"], "template first"),
                        (["vm", "clone", "p1", "p2", "--linked", "--full"], "not both"),
                        (["dr", "drill", "--vms", "zzz*"], "no VM with a valid backup")):
        r = vpool(*args)
        assert r.exit_code == 1 and words in r.output, (args, r.output)
    assert vpool("schedule", "delete", sc["id"]).exit_code == 0
    assert json.loads(vpool("dr", "drills", "--json").stdout) == []
    assert json.loads(vpool("backup", "list", "--json").stdout) == []
