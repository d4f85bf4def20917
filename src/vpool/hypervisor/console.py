"""A running VM's serial console as a byte pipe (what `virsh console` attaches to).

Each console has a libvirt connection of its own, so a session that stays open for hours
never holds the host's shared connection (whose calls go one at a time), and a dead host
ends the session through that connection's keepalive. The stream is non-blocking and read in
libvirt's event loop, as virsh reads it: no thread waits inside libvirt while another calls
it (libvirt 9.0's client can crash the process when a keepalive timeout closes a connection
with two calls in flight).
"""

import threading
import time
from collections.abc import Callable

import libvirt
import libvirtmod

from vpool.hypervisor.libvirt_driver import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL_S, _err, start_event_loop
from vpool.model.errors import Conflict, HypervisorError

_EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
_SEND_WAIT_S = 5.0  # a guest that reads nothing for this long has stopped reading its console


class SerialConsole:
    """Bytes from the guest go to ``on_data`` (on libvirt's event thread); ``on_end`` is called
    once, with why, when the guest, the host or ``close`` ends the session."""

    def __init__(self, uri: str, uuid: str, name: str, force: bool,
                 on_data: Callable[[bytes], None], on_end: Callable[[str], None]):
        start_event_loop()
        self.name = name
        self._on_data = on_data
        self._on_end = on_end
        self._ended = False
        self._lock = threading.Lock()  # the event thread's reads against close's free of the stream
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise _err(f"cannot connect to {uri}", e) from e
        try:
            self.conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
            self.conn.registerCloseCallback(lambda *_: self._end(f"the connection to {uri} was lost"), None)
        except libvirt.libvirtError:
            pass  # a driver without an RPC channel (test:///) has no keepalive, and cannot vanish
        try:
            self.stream = self.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom = self.conn.lookupByUUIDString(uuid)
            dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
            self.stream.eventAddCallback(_EVENTS, self._readable, None)
        except libvirt.libvirtError as e:
            self.close()
            if "Active console session" in (e.get_error_message() or ""):
                raise Conflict(f"someone else is on the serial console of {name}; "
                               f"vpool vm console {name} --force takes it over") from e
            raise _err(f"cannot open the serial console of {name}", e) from e

    def _readable(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        """libvirt ends a stream with an I/O error, not an end of file, when another session
        takes the console over, so every way a stream ends is told the same."""
        with self._lock:
            if self.stream is None:
                return  # closed meanwhile
            data = b""
            if events & libvirt.VIR_STREAM_EVENT_READABLE:
                try:
                    while (data := stream.recv(65536)) not in (-2, b""):
                        self._on_data(data)
                except libvirt.libvirtError:
                    data = b""
            if data == b"" or events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                self._end(f"the console of {self.name} closed: another session took it over, or the VM stopped")

    def write(self, data: bytes) -> None:
        """Keystrokes (or pasted text) to the guest; waits a little while the guest reads slowly."""
        deadline = time.monotonic() + _SEND_WAIT_S
        while data:
            with self._lock:  # not while close frees the stream
                if self.stream is None:
                    raise HypervisorError(f"the console of {self.name} is closed")
                try:
                    sent = self.stream.send(data)
                except libvirt.libvirtError as e:
                    raise HypervisorError(f"cannot write to the console of {self.name}: "
                                          f"{e.get_error_message()}") from e
            if sent == -2:
                if time.monotonic() > deadline:
                    raise HypervisorError(f"{self.name} has read nothing from its console for {_SEND_WAIT_S:.0f} s")
                time.sleep(0.01)
                continue
            data = data[sent:]

    def _end(self, why: str) -> None:
        if not self._ended:
            self._ended = True
            self._on_end(why)

    def close(self) -> None:
        """The stream is freed by hand before the connection is closed: libvirt-python frees it
        only when the Python object goes, and the event callback's data, held by libvirt until
        that free, points back at the object, so it never goes and each session would keep its
        connection (a socket and an eventfd) open for good."""
        self._end("closed")
        with self._lock:
            stream, self.stream = getattr(self, "stream", None), None
            if stream is None:
                return _quietly(self.conn.close)  # the stream never opened, or closed already
            _quietly(stream.eventRemoveCallback)
            _quietly(stream.abort)
            libvirtmod.virStreamFree(stream._o)
            stream._o = stream.cb = None
        _quietly(self.conn.unregisterCloseCallback)
        _quietly(self.conn.close)


def _quietly(step: Callable[[], object]) -> None:
    try:
        step()
    except libvirt.libvirtError:
        pass  # already gone with the guest or the host
