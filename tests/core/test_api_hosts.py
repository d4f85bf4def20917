from sqlalchemy import update

from vpool.store.tables import VM, Host, Image


def test_healthz_needs_no_token_and_everything_else_does(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/hosts")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert "bearer token" in r.json()["detail"]
    assert api.client.get("/hosts", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_add_host_reads_capacity(api, tmp_path):
    host = api.add_sim_host(tmp_path, "h1", cpus=16, memory_mib=65536)
    assert host["state"] == "up"
    assert host["hypervisor"] == "TEST"
    assert host["capacity"]["cpus"]["capacity"] == 16
    assert host["capacity"]["memory_mib"]["capacity"] == 65536
    assert host["capacity"]["cpus"]["usable"] == 16 * 4  # pool default cpu_ratio 4
    assert host["capacity"]["memory_mib"]["usable"] == 65536 - 512  # default reservation
    assert host["virt_type"] == "test"
    task = api.get("/tasks", params={"kind": "host.add"}).json()["items"][0]
    assert task["state"] == "succeeded" and task["requested_by"] == "admin"


def test_duplicate_and_bad_hosts_are_refused(api, tmp_path):
    host = api.add_sim_host(tmp_path, "h1")
    r = api.post("/hosts", json={"uri": host["uri"], "name": "other"})
    assert r.status_code == 409 and "already in the pool" in r.json()["detail"]
    r = api.post("/hosts", json={"uri": "test:///default", "name": "h1"})
    assert r.status_code == 409
    r = api.post("/hosts", json={"uri": "not a uri"})
    assert r.status_code == 422 and "libvirt URI" in r.json()["detail"]
    r = api.post("/hosts", json={"uri": "test:///default", "name": "a b"})
    assert r.status_code == 422
    marker = tmp_path / "ran"
    for uri in (f"qemu+ssh://h2/system?command=/usr/bin/touch%20{marker}",
                "qemu+ssh://h2/system?keyfile=/k&Command=/usr/bin/touch", "qemu+ext:///system"):
        r = api.post("/hosts", json={"uri": uri, "name": "h2"})
        assert r.status_code == 422 and "run a local command" in r.json()["detail"], uri
    assert not marker.exists()
    assert [h["name"] for h in api.get("/hosts").json()["items"]] == ["h1"]


def test_unreachable_host_fails_its_task_and_adds_nothing(api):
    task = api.task(api.post("/hosts", json={"uri": "qemu+tcp://127.0.0.1:1/system", "name": "ghost"}),
                    expect="failed")
    assert "cannot connect" in task["error"]
    assert api.get("/hosts").json()["total"] == 0


def test_ratios_have_pool_defaults_and_host_overrides(api, tmp_path):
    api.add_sim_host(tmp_path, "h1", cpus=10, memory_mib=10240)
    assert api.patch("/pool/defaults", json={"cpu_ratio": 2.0}).json()["cpu_ratio"] == 2.0
    assert api.get("/hosts/h1").json()["capacity"]["cpus"]["usable"] == 20
    h = api.patch("/hosts/h1", json={"cpu_ratio": 8.0, "reserved_memory_mib": 1024}).json()
    assert h["capacity"]["cpus"]["usable"] == 80
    assert h["capacity"]["memory_mib"]["usable"] == 10240 - 1024
    assert api.patch("/hosts/h1", json={"cpu_ratio": 0}).status_code == 422
    assert api.patch("/pool/defaults", json={"ram_ratio": -1}).status_code == 422
    # beyond any host: refused, where it was stored and then broke every description of the host
    for bad in ({"cpu_ratio": 1e308}, {"reserved_memory_mib": 10**30}, {"reserved_cpus": 10**6},
                {"reserved_cpus": "9" * 400},  # an int too large for a float
                {"cpu_ratio": 2.0, "reserved_disk_gib": 10**9}):
        for path in ("/hosts/h1", "/pool/defaults"):
            r = api.patch(path, json=bad)
            assert r.status_code == 422 and "at most" in r.json()["detail"], (path, bad, r.text)
    h = api.get("/hosts/h1").json()
    assert (h["capacity"]["cpus"]["usable"], h["policy"]["cpu_ratio"]) == (80, 8.0)
    assert api.get("/pool/defaults").json()["cpu_ratio"] == 2.0
    # JSON merge patch: null gives the host the pool's default back, and the pool vpool's own
    h = api.patch("/hosts/h1", json={"cpu_ratio": None}).json()
    assert (h["policy"]["cpu_ratio"], h["policy"]["reserved_memory_mib"]) == (2.0, 1024)
    assert api.patch("/pool/defaults", json={"cpu_ratio": None}).json()["cpu_ratio"] == 4.0
    assert api.get("/hosts/h1").json()["capacity"]["cpus"]["usable"] == 40


def test_remove_host(api, tmp_path):
    api.add_sim_host(tmp_path, "h1")
    assert api.delete("/hosts/h1").status_code == 204
    assert api.get("/hosts/h1").status_code == 404
    assert api.delete("/hosts/h1").status_code == 404


def test_hosts_say_which_share_storage_and_vms_move_only_within_it(api, tmp_path):
    for name, storage in (("n1", "nas"), ("n2", "nas"), ("own", None)):
        api.add_sim_host(tmp_path, name, storage=storage)
    hosts = {h["name"]: h for h in api.get("/hosts").json()["items"]}
    assert hosts["n1"]["storage"] == hosts["n2"]["storage"] == "nas" and hosts["n2"]["shares_storage_with"] == ["n1"]
    assert hosts["own"]["storage"] not in (None, "nas") and hosts["own"]["shares_storage_with"] == []
    api.task(api.post("/vms", json={"name": "v", "memory": "1G", "disk": "1G", "host": "own"}))
    r = api.post("/vms/v/migrate", json={})
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == ("cannot migrate v: the hosts with room (such as n1) cannot see its disk, which is on "
                                  "other storage; migrate with --copy-storage")
    r = api.post("/vms/v/migrate", json={"to": "n2"})
    assert r.status_code == 409 and "n2 cannot see its disk" in r.json()["detail"]
    assert api.get("/vms/v").json()["state"] == "running"  # refused with nothing changed
    assert api.get("/plans/ha").json()["unplaced"] == ["v"]  # nothing else sees its disk
    # n1 and n2 carry one storage's marker, but their simulated pools are apart: the last check,
    # that the destination sees the disk, still refuses
    api.task(api.post("/vms", json={"name": "w", "memory": "1G", "disk": "1G", "host": "n1"}))
    r = api.post("/vms/w/migrate", json={"to": "n2"})
    assert r.status_code == 409 and "n2 does not see w's disk" in r.json()["detail"]


def test_hosts_on_one_storage_share_its_room(api, tmp_path):
    """Counted per host, two hosts on one storage offered twice its room, and a VM moving
    between them needed room for a disk that does not move."""
    for name in ("s1", "s2"):
        api.add_sim_host(tmp_path, name, storage="nas")
    room = api.get("/hosts/s1").json()["capacity"]["disk_gib"]["usable"]
    plan = api.get("/plans/capacity", params={"mix": "tiny", "failures": 0}).json()   # 20 GiB disks
    assert plan["fits_without_ha"] == room // 20, (room, plan)
    api.task(api.post("/vms", json={"name": "big", "memory": "512M", "disk": f"{room - 2}G", "host": "s1"}))
    assert api.get("/hosts/s2").json()["capacity"]["disk_gib"]["free"] == 2
    assert api.get("/pool").json()["capacity"]["disk_gib"] == {"usable": room, "allocated": room - 2, "free": 2}
    r = api.post("/vms", json={"name": "more", "memory": "512M", "disk": "5G", "host": "s2"})
    assert r.status_code == 409 and r.json()["detail"].endswith("s2 is short 3 GiB disk"), r.text
    api.task(api.post("/vms", json={"name": "fits", "memory": "512M", "disk": "2G", "host": "s2"}))
    r = api.post("/vms/fits/resize", json={"disk": "3G"})  # a disk grows on the storage, full now
    assert r.status_code == 409 and "s2 is short 1 GiB disk" in r.json()["detail"], r.text
    r = api.post("/vms/big/migrate", json={"to": "s2"})  # placement lets it go; the sim's pools are apart
    assert r.status_code == 409 and r.json()["detail"].startswith("s2 does not see big's disk"), r.text


def test_a_disk_copied_into_a_pool_no_host_offers_counts_on_its_hosts_storage(api, tmp_path):
    """What `migrate --copy-storage --storage-pool P` leaves when P is no host's own pool: its
    storage has no room of its own in the pool, so the disk counts where its host's does."""
    for name in ("s1", "s2"):
        api.add_sim_host(tmp_path, name, storage="nas")
    api.task(api.post("/vms", json={"name": "w", "memory": "512M", "disk": "7G", "host": "s1", "start": False}))
    with api.cp.store.session() as s:
        s.execute(update(VM).where(VM.name == "w").values(storage="a-pool-of-s1s-own"))
        s.commit()
    assert [api.get(f"/hosts/{h}").json()["capacity"]["disk_gib"]["allocated"] for h in ("s1", "s2")] == [7, 7]
    assert api.get("/pool").json()["capacity"]["disk_gib"]["allocated"] == 7
    assert api.get("/plans/capacity", params={"mix": "tiny", "failures": 0}).status_code == 200


def test_plans_on_the_live_pool(api, tmp_path):
    api.add_sim_host(tmp_path, "h1", cpus=8, memory_mib=16384, storage="nas")
    api.add_sim_host(tmp_path, "h2", cpus=8, memory_mib=16384, storage="nas")
    api.add_sim_host(tmp_path, "own", cpus=64, memory_mib=262144)  # the emptiest, on storage of its own
    for i in range(4):
        api.task(api.post("/vms", json={"name": f"v{i}", "cpus": 1, "memory": "2G", "disk": "1G", "host": "h1"}))
    plan = api.get("/plans/balance").json()
    assert plan["moves"] and all(m["from"] == "h1" and m["to"] == "h2" for m in plan["moves"])
    assert plan["score_after"] < plan["score_before"]
    api.task(api.post("/vms/v0/stop", json={"force": True}))
    with api.cp.store.session() as s:
        s.execute(update(VM).where(VM.name == "v1").values(ownership="unmanaged"))
        s.commit()
    moved = {m["vm"] for m in api.get("/plans/balance").json()["moves"]}
    assert moved and not moved & {"v0", "v1"}  # a plan moves what vpool can live-migrate: its own running VMs
    assert api.get("/plans/ha", params={"failures": 1}).status_code == 200
    # DPM: "own" sees none of the VMs' disks, so it stays on only as the control plane's own machine
    assert sorted(api.get("/plans/consolidate").json()["power_off"]) == ["h2", "own"]
    with api.cp.store.session() as s:
        s.execute(update(Host).where(Host.name == "own").values(uri="qemu:///system"))
        s.commit()
    assert api.get("/plans/consolidate").json()["power_off"] == ["h2"]
    r = api.get("/plans/balance", params={"bogus": 1})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    assert api.get("/plans/sideways").status_code == 422
    text = api.get("/plans/export-htools").text
    assert "h1|" in text and "v0|" in text


def test_building_the_tiny_image_again_is_no_error(api):
    """The README's first steps run `vpool image build-tiny` after `make run` has built it: the
    task ends at once and says so. The name taken by another kind of image is a conflict."""
    with api.cp.store.session() as s:
        for name, kind in (("tiny", "kernel"), ("plain", "disk")):
            s.add(Image(name=name, kind=kind, format="qcow2", path=f"/nowhere/{name}", size_bytes=1,
                        virtual_size_bytes=1))
        s.commit()
    task = api.task(api.post("/images/build-tiny"))
    assert task["message"] == "image tiny is built already", task
    r = api.post("/images/build-tiny", params={"name": "plain"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert api.get("/images").json()["total"] == 2


def test_a_file_that_is_no_disk_is_not_imported_as_a_raw_image(api):
    """qemu-img calls any file raw: a text file became an image of 0 MiB."""
    r = api.put("/images/notes", content=b"not an image\n")
    assert r.status_code == 422 and "13 bytes, which is no disk" in r.json()["detail"], r.text
    assert api.put("/images/empty", content=b"").status_code == 422
    assert api.get("/images").json()["total"] == 0
    r = api.put("/images/zeros", content=b"\0" * 4096)
    assert r.status_code == 201 and r.json()["format"] == "raw", r.text
