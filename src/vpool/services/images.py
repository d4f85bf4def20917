"""Images: base disks kept by the control plane, copied to a host's pool the first time a VM needs them."""

import hashlib
import json
import shutil
import subprocess
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.names import check_name
from vpool.store.lookup import by_ref
from vpool.store.tables import VM, Host, Image, ImageCopy

ALLOWED_FORMATS = ("qcow2", "raw")
SENTINEL = "vpool-vm-name"  # a valid hostname that marks where each VM's name goes in a cmdline


def files_digest(*paths: Path) -> str:
    """Names an image's copies by content: hosts sharing storage then share one copy, and a
    changed image never overwrites a file running VMs are linked clones of."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def inspect_image(path: Path) -> dict:
    """qemu-img tells the format; a file that points at a backing file elsewhere is refused,
    because it could make a host read any file it can reach."""
    try:
        out = subprocess.run(["qemu-img", "info", "--output=json", "--", str(path)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise Invalid(f"the file is not a disk image qemu-img can read: {e.stderr.strip()}") from None
    info = json.loads(out)
    fmt = info.get("format")
    if fmt not in ALLOWED_FORMATS:
        raise Invalid(f"image format {fmt!r} is not supported; use qcow2 or raw")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise Invalid("the image has a backing file; flatten it first (qemu-img convert -O qcow2 IN OUT)")
    size = path.stat().st_size
    if fmt == "raw" and (size == 0 or size % 512):
        # qemu-img takes any file for raw; a disk is whole 512-byte sectors (a text file is not)
        raise Invalid(f"the file is {size} bytes, which is no disk: a raw image is whole 512-byte sectors; "
                      "is it the right file?")
    return {"format": fmt, "virtual_size": int(info["virtual-size"]), "size": size}


class ImageService:
    def __init__(self, cp):
        self.cp = cp
        self._copy_locks: dict[tuple[int, str | None], threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, s, ref: str) -> Image:
        image = by_ref(s, Image, ref)
        if image is None:
            raise NotFound(f"there is no image {ref!r}")
        return image

    def listing(self) -> list[dict]:
        with self.cp.store.session() as s:
            return [describe(i) for i in s.scalars(select(Image).order_by(Image.name))]

    def show(self, ref: str) -> dict:
        with self.cp.store.session() as s:
            return describe(self.get(s, ref))

    def _reserve_name(self, name: str) -> None:
        check_name(name, "image name")
        with self.cp.store.session() as s:
            if s.scalar(select(Image.id).where(Image.name == name)):
                raise Conflict(f"an image named {name!r} already exists")

    def import_file(self, name: str, upload: Path) -> dict:
        """Takes ownership of an uploaded temp file: validated, then moved under the data dir."""
        try:
            self._reserve_name(name)
            info = inspect_image(upload)
            dest_dir = self.cp.settings.images_dir
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / f"{name}.{info['format']}"
            shutil.move(upload, dest)
        finally:
            upload.unlink(missing_ok=True)
        with self.cp.store.session() as s:
            image = Image(name=name, kind="disk", format=info["format"], path=str(dest), size_bytes=info["size"],
                          virtual_size_bytes=info["virtual_size"], digest=files_digest(dest))
            s.add(image)
            try:
                s.commit()
            except IntegrityError:
                dest.unlink(missing_ok=True)
                raise Conflict(f"an image named {name!r} already exists") from None
            return describe(image)

    def build_tiny(self, name: str = "tiny", requested_by: str = "admin"):
        """Asking again for a tiny image that is there is no error (the README's first steps ask
        for it after `make run` built it): the task ends at once and says so. Another kind of
        image under the name is a conflict."""
        check_name(name, "image name")
        with self.cp.store.session() as s:
            built = s.scalar(select(Image.id).where(Image.name == name, Image.kind == "kernel")) is not None
        if built:
            return self.cp.runner.submit("image.build-tiny", name, {}, lambda ctx: {
                "image": name, "note": f"image {name} is built already"}, requested_by=requested_by)
        self._reserve_name(name)

        def body(ctx):
            from vpool.lab.tiny_image import build_tiny

            ctx.progress(5, "building the tiny guest from Debian packages (cached after the first time)")
            tiny = build_tiny()
            info = inspect_image(Path(tiny.base_disk))
            with self.cp.store.session() as s:
                s.add(Image(name=name, kind="kernel", format=info["format"], path=str(tiny.base_disk),
                            size_bytes=info["size"], virtual_size_bytes=info["virtual_size"],
                            kernel_path=str(tiny.kernel), initrd_path=str(tiny.initrd),
                            cmdline=tiny.cmdline(SENTINEL).replace(SENTINEL, "{name}"),
                            digest=files_digest(Path(tiny.base_disk), Path(tiny.kernel), Path(tiny.initrd))))
                try:
                    s.commit()
                except IntegrityError:
                    raise Conflict(f"an image named {name!r} already exists") from None
            return {"image": name, "kernel_version": tiny.kernel_version}

        return self.cp.runner.submit("image.build-tiny", name, {}, body, requested_by=requested_by)

    def delete(self, ref: str) -> None:
        with self.cp.store.session() as s:
            image = self.get(s, ref)
            user = s.scalar(select(VM.name).where(VM.image_id == image.id))
            if user:
                raise Conflict(f"image {image.name} is the base of VM {user}; delete the VM first")
            copies = list(s.scalars(select(ImageCopy).where(ImageCopy.image_id == image.id)))
            for c in copies:
                drv = self.cp.connections.drivers.get(c.host_id)
                if drv:
                    for path in (c.disk_path, c.kernel_path, c.initrd_path):
                        if path:
                            drv.delete_volume(path)
            if image.kind == "disk":
                Path(image.path).unlink(missing_ok=True)
            s.delete(image)  # its image_copies rows go with it (ON DELETE CASCADE)
            s.commit()

    def ensure_copy(self, image_id: int, host_id: int, progress=None) -> ImageCopy:
        """The image's files in the host's storage pool: uploaded over libvirt the first time, or
        found there when the host shares storage with one that already has them.

        One copy of an image at a time per storage: two hosts that share it would upload the same
        file at once (the second fails, or deletes the first one's file under it), while hosts
        with storage of their own copy side by side. A host whose storage is not known yet
        counts as sharing with every other such host."""
        with self.cp.store.session() as s:
            storage = s.get(Host, host_id).storage
        with self._locks_lock:
            lock = self._copy_locks.setdefault((image_id, storage), threading.Lock())
        with lock:
            with self.cp.store.session() as s:
                copy = s.scalar(select(ImageCopy).where(ImageCopy.image_id == image_id, ImageCopy.host_id == host_id))
                image = s.get(Image, image_id)
                host_pool = s.get(Host, host_id).storage_pool
                complete = {p for c in s.scalars(select(ImageCopy).where(ImageCopy.image_id == image_id))
                            for p in (c.disk_path, c.kernel_path, c.initrd_path) if p}
            drv = self.cp.connections.driver(host_id)
            if copy is not None and drv.volume_exists(copy.disk_path):
                return copy
            stem = f"img-{image.name}-{image.digest[:12]}"
            files = [("disk", f"{stem}.{image.format}", image.path)]
            if image.kind == "kernel":
                files += [("kernel", f"{stem}.kernel", image.kernel_path), ("initrd", f"{stem}.initrd", image.initrd_path)]
            paths = {}
            for what, vol, source in files:
                found = drv.volume_path(host_pool, vol)
                # A volume another host's copy points at is complete; any other may be a torn upload.
                paths[what] = found if found in complete else drv.upload_volume(
                    host_pool, vol, Path(source), progress if what == "disk" else None)
            with self.cp.store.session() as s:
                if copy is not None:
                    copy = s.merge(copy)
                else:
                    copy = ImageCopy(image_id=image_id, host_id=host_id)
                    s.add(copy)
                copy.disk_path, copy.kernel_path, copy.initrd_path = (
                    paths["disk"], paths.get("kernel"), paths.get("initrd"))
                s.commit()
                return copy


def describe(image: Image) -> dict:
    return {"id": image.id, "name": image.name, "kind": image.kind, "format": image.format,
            "size_bytes": image.size_bytes, "virtual_size_bytes": image.virtual_size_bytes,
            "created_at": image.created_at}
