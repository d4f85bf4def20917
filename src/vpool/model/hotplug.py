"""Hot-plug room: how far a running VM may grow without a restart (vCenter's CPU and memory hot add).

A guest learns of more vCPUs or memory only through slots its definition had when it booted:
vCPU slots up to a maximum, and a memory range with DIMM slots above its boot memory. Empty
slots cost the host nothing (qemu makes neither a thread nor memory for them). The guest pays
about 250 KiB per possible vCPU, so every VM vpool defines may grow to four times its vCPUs,
and to at least 8. Memory room lies above 4 GiB, and a Linux guest that can address memory
there sets aside 64 MiB of DMA bounce buffers (swiotlb): a quarter of a 256 MiB VM. A VM with
3.5 GiB or more has memory above 4 GiB anyway, so vpool gives memory room (four times its
memory, 16 DIMMs) to those only, where it is free; a smaller VM grows its memory while stopped.

A running VM only grows: a guest cannot be made to give a vCPU or memory back safely, so
shrinking waits for a stop, which also folds added memory into the boot memory and frees the
slots.

Under QEMU's emulator (TCG, where KVM cannot run guests) vCPUs are not plugged live: each
vCPU's thread takes a region of the translation cache when it starts, QEMU 7.2 asserts when none
is free, and once a guest has run a while every region is often taken until the next flush, so
the plug would crash the guest (seen in this project's CI). Its memory still grows live.
"""

from dataclasses import dataclass

# Linux on x86 onlines memory in 128 MiB blocks: a smaller DIMM, or one off that step, is partly lost.
MEMORY_STEP_MIB = 128
DIMM_SLOTS = 16
MAX_HOTPLUG_CPUS = 255  # qemu's pc machine without an interrupt remapper
GROWTH = 4
# From here qemu's pc machine (and q35 well before) puts part of the boot memory above 4 GiB.
FREE_MEMORY_ROOM_MIB = 3584


@dataclass(frozen=True)
class Room:
    """What a definition lets a running guest grow to: vCPU and memory ceilings, DIMM slots left."""
    max_cpus: int
    max_memory_mib: int
    free_slots: int
    vcpus_live: bool = True  # False under TCG (see above): its vCPUs grow while it is stopped


def room(cpus: int, memory_mib: int) -> Room:
    """The room vpool gives a VM of this size when it defines it."""
    max_cpus = max(cpus, min(max(GROWTH * cpus, 8), MAX_HOTPLUG_CPUS))
    if memory_mib < FREE_MEMORY_ROOM_MIB:
        return Room(max_cpus, memory_mib, 0)
    return Room(max_cpus, GROWTH * memory_mib, DIMM_SLOTS)


def refusal(name: str, cpus: tuple[int, int], memory_mib: tuple[int, int], have: Room) -> str | None:
    """Why a running VM cannot go from (old, new) vCPUs and memory with the room it has, or None."""
    (old_cpus, new_cpus), (old_mib, new_mib) = cpus, memory_mib
    if new_cpus < old_cpus or new_mib < old_mib:
        return (f"VM {name} is running, and a running guest cannot give vCPUs or memory back: stop it first "
                f"(vpool vm stop {name}) to shrink it")
    stop = f"stop {name} and resize it once: vpool then defines it with room to grow while it runs"
    if new_cpus > old_cpus and not have.vcpus_live:
        return (f"VM {name} runs under QEMU's emulator (TCG), where a vCPU plugged into a running guest can "
                f"crash it (QEMU finds no free translation-cache region for the new vCPU's thread); stop it to "
                f"give it vCPUs (vpool vm stop {name}); memory still grows while it runs")
    if new_cpus > have.max_cpus:
        return (f"VM {name} has room for {have.max_cpus} vCPUs while it runs, not {new_cpus}; {stop}"
                if have.max_cpus > old_cpus else f"VM {name} was defined without room for more vCPUs; {stop}")
    if new_mib == old_mib:
        return None
    if have.max_memory_mib <= old_mib:
        return (f"VM {name} has no room to add memory while it runs: vpool gives that room to VMs of "
                f"{FREE_MEMORY_ROOM_MIB} MiB and more, whose guests pay nothing for it; stop it to resize it "
                f"(vpool vm stop {name})")
    if have.free_slots == 0:
        return f"VM {name} has used all its memory slots; {stop}"
    if (new_mib - old_mib) % MEMORY_STEP_MIB:
        return (f"memory is added to a running VM in steps of {MEMORY_STEP_MIB} MiB, the guest's memory block; "
                f"ask for {old_mib + _steps(new_mib - old_mib) * MEMORY_STEP_MIB} MiB")
    if new_mib > have.max_memory_mib:
        return f"VM {name} has room for {have.max_memory_mib} MiB of memory while it runs, not {new_mib}; {stop}"
    return None


def _steps(mib: int) -> int:
    return -(-mib // MEMORY_STEP_MIB)
