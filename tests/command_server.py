"""Run many ``attnlab`` command lines without paying Python's and torch's start-up for each
(about 2.5 CPU seconds a process, most of tests/test_readme_commands.py's time): a server
process imports attnlab's modules once, then forks one child per command line; the child
takes the caller's standard input, output and error, working folder and environment, and
runs ``attnlab.cli.main`` on the arguments, as ``python -m attnlab.cli`` does.

    python tests/command_server.py SOCKET          # serve (until killed)
    python tests/command_server.py SOCKET ARGS...  # run `attnlab ARGS...` there, exit as it

The client imports nothing heavy: it passes its file descriptors 0, 1 and 2 over the Unix
socket (SCM_RIGHTS), with its folder, environment and arguments, and exits with the
command's status (1 when the child died without one). Commands that start processes of
their own (``train --nproc 2`` through torchrun) start them as usual."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

_PRELOAD = (  # what the verbs import; a fresh process would import them per command
    "torch",
    "attnlab.cli",
    "attnlab.training",
    "attnlab.tasks",
    "attnlab.interop",
    "attnlab.inspect",
    "attnlab.evaluation",
    "attnlab.generation",
    "matplotlib.pyplot",
)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, more, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if not chunk:
            raise ConnectionError("the client left before its request was complete")
        data += chunk
        fds += more
    return json.loads(data), fds


def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the command's process, run it, report its status."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.executable, *request["argv"]]
        from attnlab.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as stop:  # argparse and --help
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as a traceback, like python would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe
                stream.flush()
        try:
            conn.sendall(f"{code}\n".encode())
        finally:
            os._exit(code)


def serve(path: str) -> None:
    import importlib

    for name in _PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            request, fds = _receive(conn)
        except (ConnectionError, ValueError):
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            _child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


def run(path: str, argv: list[str]) -> int:
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        answer = b""
        while chunk := conn.recv(64):
            answer += chunk
    return int(answer) if answer.strip() else 1


if __name__ == "__main__":
    if len(sys.argv) == 2:
        serve(sys.argv[1])
    else:
        sys.exit(run(sys.argv[1], sys.argv[2:]))
