"""What the reconciler's periodic full sync costs the API process at N VMs on one host.

libvirtd simulates the host (`test+unix:///default`, its domains kept alive by this script's
connection), so every read is a real round trip. The store holds one VM row per domain. Timed
per round, median of --rounds: `Reconciler.sync_host` (the bulk state read, the store query and
the comparison; nothing changed, so nothing is written) beside the bare `getAllDomainStats`
call it is built on, in the same run; wall and this process's CPU, which is what the API's
requests compete with. Prints JSON.

    .venv/bin/python benchmarks/sync.py [--vms 10000] [--rounds 5]
"""

import argparse
import json
import statistics
import tempfile
import time
import uuid

import libvirt
from sqlalchemy import insert

from vpool.hypervisor.domain_xml import DomainSpec, domain_xml
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.services.reconciler import Reconciler
from vpool.store.db import Store
from vpool.store.tables import VM, Host

URI = "test+unix:///default"


def timed(fn, rounds: int) -> dict:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": round(statistics.median(walls), 4), "cpu_s": round(statistics.median(cpus), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    drv = LibvirtDriver(URI)  # holds the daemon's test:///default, and its domains, until the end
    made = []
    work = tempfile.TemporaryDirectory(prefix="vpool-bench-sync-")
    try:
        for i in range(args.vms):
            made.append(drv.conn.defineXML(domain_xml(DomainSpec(
                f"sync{i}", str(uuid.uuid4()), 1, 64, "test", f"/default-pool/sync{i}.qcow2", "network:default"))))
        store = Store(f"sqlite:///{work.name}/vpool.db")
        with store.session() as s:
            host = Host(name="sim", uri=URI, cpus=16, memory_mib=2**20, disk_gib=10**4, arch="x86_64",
                        hypervisor="test", hypervisor_version="0", hostname="sim", host_uuid=str(uuid.uuid4()),
                        virt_type="test", network="network:default", storage_pool="default-pool")
            s.add(host)
            s.commit()
            s.execute(insert(VM), [{"name": f"sync{i}", "uuid": u, "host_id": host.id, "ownership": "managed",
                                    "state": state, "cpus": 1, "memory_mib": 64, "disk_gib": 1}
                                   for i, (u, state) in enumerate(drv.domain_states().items())])
            s.commit()

        class Connections:
            drivers = {host.id: drv}

        reconciler = Reconciler(store, Connections())
        reconciler.sync_host(host.id)  # warm
        bulk = timed(lambda: drv.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0), args.rounds)
        sync = timed(lambda: reconciler.sync_host(host.id), args.rounds)
        store.close()
    finally:
        work.cleanup()
        for dom in made:
            dom.undefine()
        drv.close()
    print(json.dumps({"vms": args.vms, "domains_on_host": len(made), "rounds": args.rounds,
                      "get_all_domain_stats": bulk, "sync_host": sync,
                      "sync_vs_bulk_read_wall": round(sync["wall_s"] / bulk["wall_s"], 2)}, indent=2))


if __name__ == "__main__":
    main()
