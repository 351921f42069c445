"""Run a script with the network cut to everything but this machine: `python tests/netguard.py LOG SCRIPT ARGS...`.

Every connection (TCP or UDP `connect`) to an address other than loopback, and every name lookup of a host other
than localhost, fails with ENETUNREACH and is appended to LOG (one line each), so a test can assert that the script
tried none: gradio's analytics or version check, a model download, a font.
"""

import errno
import ipaddress
import runpy
import socket
import sys
from pathlib import Path

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


def install(log: Path) -> None:
    def refuse(what: str):
        with open(log, "a", encoding="utf-8") as f:
            f.write(what + "\n")
        raise OSError(errno.ENETUNREACH, f"netguard: no network to {what}")

    def local(address) -> bool:
        if not isinstance(address, tuple):  # a Unix socket path
            return True
        host = str(address[0])
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return host in LOCAL_NAMES

    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded_connect(self, address):
        return connect(self, address) if local(address) else refuse(f"connect {address}")

    def guarded_connect_ex(self, address):
        return connect_ex(self, address) if local(address) else refuse(f"connect {address}")

    def guarded_getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        try:
            ipaddress.ip_address(name.split("%")[0])  # an address, not a name: `connect` decides
        except ValueError:
            if name not in LOCAL_NAMES:
                refuse(f"lookup {name}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo


if __name__ == "__main__":
    log, script, *args = sys.argv[1:]
    install(Path(log))
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")
