"""`vpool vm console NAME`: the terminal joined to a VM's serial console through the API's
WebSocket, as `virsh console` joins it through libvirtd. Ctrl-] leaves, as in virsh and telnet.

From a terminal, keys go to the guest as typed (raw mode) and the terminal is put back however
the session ends. From a pipe, the input is sent and the session ends once the guest has been
quiet for a second after its answer: `echo uptime | vpool vm console web1` is a one-shot command."""

import json
import os
import sys
import termios
import threading
import time
import tty

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from vpool.cli.client import api_path, api_token, api_urls, err, fail

ESCAPE = b"\x1d"  # Ctrl-]
QUIET_S = 1.0
FIRST_ANSWER_S = 15.0  # a guest that echoes nothing at all still lets a pipe end
LONGEST_S = 60.0  # a guest that never goes quiet (a log running by) still lets a pipe end


def attach(name: str, force: bool) -> None:
    path = api_path("/vms/{}/console", name) + ("?force=true" if force else "")
    token = api_token()
    urls = api_urls()
    for url in urls:  # the next only when one refuses (a standby serves nothing until it takes over)
        try:
            ws = connect("ws" + url.removeprefix("http") + path, open_timeout=10, max_size=None,
                         additional_headers={"Authorization": f"Bearer {token}"} if token else None)
            break
        except (OSError, InvalidHandshake, InvalidURI) as e:
            if url == urls[-1]:
                fail(f"cannot reach vpool's console at {', '.join(urls)} ({e}); is 'vpool serve' running?")
    with ws:
        first = json.loads(ws.recv(timeout=30))
        if "console" not in first:
            fail(first.get("detail") or str(first))
        interactive = sys.stdin.isatty()
        if interactive:
            err.print(f"Connected to the serial console of {first['console']}: Ctrl-] leaves, Enter wakes a prompt",
                      highlight=False)
        session = _Output(ws)
        try:
            (_type if interactive else _pipe)(ws, session)
        finally:
            ws.close()
        session.thread.join(5)
    if session.ended:
        err.print(f"\n{session.ended}", highlight=False)


class _Output:
    """The guest's bytes to stdout as they come, on a thread; the server's last word kept for after."""

    def __init__(self, ws):
        self.ws = ws
        self.ended = ""
        self.last = time.monotonic()
        self.thread = threading.Thread(target=self._show, daemon=True)
        self.thread.start()

    def _show(self) -> None:
        out = sys.stdout.buffer
        try:
            for message in self.ws:
                if isinstance(message, bytes):
                    out.write(message)
                    out.flush()
                    self.last = time.monotonic()
                else:
                    self.ended = json.loads(message).get("ended", message)
        except ConnectionClosed:
            pass


def _type(ws, session: _Output) -> None:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        while session.thread.is_alive():
            data = os.read(fd, 1024)
            keys = data.split(ESCAPE)[0]
            if keys:
                ws.send(keys)
            if not data or ESCAPE in data:
                return
    except ConnectionClosed:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pipe(ws, session: _Output) -> None:
    sent = time.monotonic()
    try:
        while data := sys.stdin.buffer.read1(65536):
            ws.send(data)
            sent = time.monotonic()
    except ConnectionClosed:
        return
    # The answer to the last line takes a moment, and longer on a busy host (a TCG guest can take
    # seconds): wait for the guest's first bytes (its tty echoes what was sent), then until it has
    # been quiet a while.
    while session.thread.is_alive() and (now := time.monotonic()) - sent < LONGEST_S:
        if now - session.last >= QUIET_S and (session.last > sent or now - sent >= FIRST_ANSWER_S):
            return
        time.sleep(0.1)
