"""Serial consoles: an operator's way into a guest that has no network yet, or has lost it
(Proxmox's xterm.js console, `virsh console`). vpool VMs have a serial port and their kernels
write to it; whatever the guest runs there (a login, a shell) answers.

A console is a session, not a task: it lasts as long as the operator stays, and moves no
resources. It needs the VM running, and its host connected."""

from collections.abc import Callable

from vpool.hypervisor.console import SerialConsole
from vpool.model.errors import Conflict
from vpool.model.states import ACTIVE, VMState


class ConsoleService:
    def __init__(self, cp):
        self.cp = cp

    def open(self, ref: str, force: bool, on_data: Callable[[bytes], None],
             on_end: Callable[[str], None]) -> SerialConsole:
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            if vm.state == VMState.creating:
                raise Conflict(f"VM {vm.name} is still being created")
            name, uuid, host_id = vm.name, vm.uuid, vm.host_id
        drv = self.cp.connections.driver(host_id)  # refuses at once when the host is down
        state = drv.state(uuid)
        if state not in ACTIVE:
            raise Conflict(f"VM {name} is {state}, and a serial console needs it running (vpool vm start {name})")
        return SerialConsole(drv.uri, uuid, name, force, on_data, on_end)
