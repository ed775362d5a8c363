"""Run a command in a network namespace of its own whose only ways out are chosen TCP ports
of 127.0.0.1, each bridged through a Unix socket to the same port on the host.

    python netns_jail.py host --sock-dir D --port P [--port Q ...]
        in the host's namespace: D/P.sock leads to 127.0.0.1:P; prints "ready" once listening
    python netns_jail.py jail --sock-dir D --port P [--port Q ...] -- COMMAND ...
        a new network namespace with only ``lo`` (brought up), where 127.0.0.1:P leads to
        D/P.sock; then COMMAND in it (exec: the same process)

A pathname Unix socket is a file, reached through the file system from any network
namespace, so the host side's sockets are the jail's only exits. Nothing but the Python
standard library is used (no ``ip``, no ``socat``). The jail's forwarder is a child process
that dies with COMMAND (PR_SET_PDEATHSIG) and ignores SIGTERM and SIGINT, so a command that
shuts down gracefully still reaches the host meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
PR_SET_PDEATHSIG = 1

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unshare_network() -> None:
    """A new network namespace for this process: as root directly, else inside a new user
    namespace that maps the caller's ids to themselves (so files stay theirs)."""
    try:
        _unshare(CLONE_NEWNET)
        return
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def loopback_up() -> None:
    """``ip link set lo up``, with the ioctls (struct ifreq: 16-byte name, then the flags)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


def _bridge(connect: Connect) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                          Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await connect()
        except OSError:
            writer.transport.abort()  # the client sees a reset, as with no listener
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for w in (writer, upstream_writer):
                w.close()
    return handle


async def _host(sock_dir: Path, ports: list[int]) -> None:
    servers = []
    for port in ports:
        def connect(port: int = port) -> Awaitable[tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]]:
            return asyncio.open_connection("127.0.0.1", port)
        servers.append(await asyncio.start_unix_server(_bridge(connect),
                                                       path=str(sock_dir / f"{port}.sock")))
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


async def _jail(sock_dir: Path, listeners: list[socket.socket]) -> None:
    servers = []
    for listener in listeners:
        path = str(sock_dir / f"{listener.getsockname()[1]}.sock")

        def connect(path: str = path) -> Awaitable[tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]]:
            return asyncio.open_unix_connection(path)
        servers.append(await asyncio.start_server(_bridge(connect), sock=listener))
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str]) -> None:
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("host", "jail"))
    parser.add_argument("--sock-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    if args.mode == "host":
        asyncio.run(_host(args.sock_dir, args.port))
        return
    if not command:
        parser.error("jail needs a command after --")
    unshare_network()
    loopback_up()
    listeners = []
    for port in args.port:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listeners.append(listener)
    parent = os.getpid()
    if listeners and os.fork() == 0:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # COMMAND already ended
                os._exit(0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with contextlib.suppress(BaseException):
                asyncio.run(_jail(args.sock_dir, listeners))
        finally:
            os._exit(0)
    for listener in listeners:
        listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
