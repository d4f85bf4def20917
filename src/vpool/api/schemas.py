"""Request bodies. Sizes are accepted as people write them ('1G', '512M') or as numbers."""

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostAdd(Body):
    uri: str = Field(description="libvirt URI, e.g. qemu:///system, qemu+ssh://user@h/system, test:///default")
    name: str | None = None
    virt_type: str = Field("auto", description="auto, kvm or qemu (TCG)")
    network: str | None = Field(None, description="network:NAME or bridge:NAME for guest NICs")


class Policy(Body):
    cpu_ratio: float | None = None
    ram_ratio: float | None = None
    disk_ratio: float | None = None
    reserved_cpus: int | None = None
    reserved_memory_mib: int | None = None
    reserved_disk_gib: int | None = None


class HostPatch(Policy):
    maintenance: bool | None = None


class VMCreate(Body):
    name: str
    cpus: int | None = None
    memory: str | int | None = Field(None, description="e.g. 1G or 512M; a bare number is MiB")
    disk: str | int | None = Field(None, description="e.g. 10G; a bare number is GiB")
    flavor: str | None = None
    image: str | None = None
    host: str | None = None
    group: str | None = Field(None, description="server group the VM joins (see /groups)")
    start: bool = True


class VMResize(Body):
    cpus: int | None = None
    memory: str | int | None = Field(None, description="e.g. 2G or 1536M; a bare number is MiB")
    disk: str | int | None = Field(None, description="the disk's new size, e.g. 20G; a bare number is GiB")


class VMPatch(Body):
    auto_balance: bool | None = Field(None, description="false keeps the VM out of balance and consolidation "
                                                       "plans, and so out of DRS")


class VMStop(Body):
    force: bool = False
    timeout: float = 60.0


class GroupCreate(Body):
    name: str
    policy: str = Field(description="affinity, anti-affinity or soft-anti-affinity")


class GroupChange(Body):
    add: list[str] = Field(default_factory=list, description="VMs (names or ids) that join on the hosts they are on")
    remove: list[str] = Field(default_factory=list, description="VMs that leave the group (first); they stay put")


class FlavorCreate(Body):
    name: str
    cpus: int
    memory: str | int
    disk: str | int
