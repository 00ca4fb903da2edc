"""``gwa-diag app RUN``: open a run directory in the Streamlit app."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gwa_diag.cli.common import int_in_range
from gwa_diag.checks import InputError, MissingFileError

__all__ = ["register", "app_script", "streamlit_command", "run_app", "READY_MESSAGE"]

#: Printed (followed by the URL) once the server answers and the app has run once.
READY_MESSAGE = "gwa-diag app: ready at"
#: Where the app is served when --port / --host are not given: this machine only.
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
_START_TIMEOUT_S = 90.0
_WARMUP_TIMEOUT_S = 120.0


def app_script() -> Path:
    """The Streamlit script ``gwa-diag app`` serves, found through the installed package
    (``gwa_diag.app``; in a source checkout that is the top-level ``app/`` folder).

    Raises:
        FileNotFoundError: when the installed package lacks the app.
    """
    import importlib.resources

    try:
        script = Path(str(importlib.resources.files("gwa_diag.app") / "streamlit_app.py"))
    except ModuleNotFoundError:
        script = None
    if script is None or not script.is_file():
        raise MissingFileError(
            "the app is not installed: gwa_diag.app/streamlit_app.py is missing from this "
            "installation of gwa-diag; reinstall it with `pip install gwa-diag[app]` (or, from a "
            "checkout, `pip install -e .[app]`)"
        )
    return script


def streamlit_command(run: str | os.PathLike, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> list[str]:
    """The ``python -m streamlit run ...`` command line that serves the app for ``run``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.port", str(int(port)),
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # Lets the launcher run the app once before anyone opens it (see _warm_up).
        "--server.scriptHealthCheckEnabled", "true",
        "--", str(Path(run).resolve()),
    ]


def _check_run(run: Path) -> None:
    from gwa_diag.store import open_run

    if not run.exists():
        raise MissingFileError(f"run directory not found: {run}: pass the --out directory of `gwa-diag train`")
    open_run(run)  # RunDirError with a clear message when it is not a run directory


def _bind_error(host: str, port: int) -> OSError | None:
    """The error a server binding ``host:port`` would get now, or None when the bind works.

    The probe binds the way Streamlit's server does (tornado, and its Starlette server
    since): with SO_REUSEADDR on POSIX, where it only lets a port whose last server just
    stopped (connections in TIME_WAIT) be bound again, while a port a server still listens
    on stays refused. Without it, a restart of the app within a minute would be refused
    although Streamlit could bind. Windows gets no SO_REUSEADDR, as in Streamlit: there it
    would let the bind take a port that a server listens on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return exc
    return None


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port that a server already listens on. Otherwise that server would answer
    the readiness check and the browser would open its page, not this run's.

    Raises:
        ValueError: the port is in use (with a free port to pass instead), or the address
            cannot be bound at all.
    """
    exc = _bind_error(host, port)
    if exc is None:
        return
    if exc.errno == errno.EADDRINUSE:
        free = next((p for p in range(int(port) + 1, min(int(port) + 50, 65535) + 1)
                     if _bind_error(host, p) is None), None)
        hint = f"pass --port {free}" if free is not None else "pass --port with a free port"
        raise InputError(f"port {port} on {host} is not available: it is in use (another gwa-diag app?); {hint}")
    if exc.errno == errno.EACCES:
        raise InputError(f"port {port} on {host} is not available: ports below 1024 need administrator "
                         f"rights; pass --port 1024 or above (default {DEFAULT_PORT})")
    raise InputError(f"cannot serve on {host}:{port} ({exc.strerror or exc}): pass --host with an address "
                     "of this machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (Linux: from /proc);
    None where that cannot be told (another OS, no access)."""
    proc = Path("/proc")
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing: a starting server opens and closes many files
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    try:
        for table in ("tcp", "tcp6"):
            path = proc / "net" / table
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                cols = line.split()
                # local_address is ADDR:PORT in hex; state 0A is LISTEN; column 9 the inode.
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] in inodes:
                    return True
    except (OSError, ValueError, IndexError):
        return None
    return False


def _wait_until_up(proc: subprocess.Popen, base: str) -> bool:
    """Poll the server's health endpoint until *our* server answers (False if it exits).

    An answer alone does not prove that: a server that took the port after
    :func:`_check_port_free` answers too, while ours is still starting and about to fail
    its bind. So the answer counts only while our process is alive and, where the OS tells
    (Linux), holds the listening socket of ``base``'s port.
    """
    port = urllib.parse.urlsplit(base).port
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            answered = _get(f"{base}/_stcore/health", 2.0)[0] == 200
        except OSError:
            answered = False
        if answered and proc.poll() is None and (port is None or _listens(proc.pid, port) is not False):
            return True
        time.sleep(0.2)
    return False


def _warm_up(base: str) -> None:
    """Run the app once inside the server before the first visit.

    The first run imports the analysis stack (pandas, pyarrow, DuckDB, torch) and starts
    computing the run's per-sample scores in the background; done here, the first page a
    person opens is drawn from warm caches. Best effort: a server without the health-check
    route, or an app error (which the app itself will show), only skips the warm-up.
    """
    try:
        status, body = _get(f"{base}/_stcore/script-health-check", _WARMUP_TIMEOUT_S)
    except OSError as exc:
        print(f"gwa-diag app: warm-up skipped ({exc})", file=sys.stderr, flush=True)
        return
    if status != 200:
        print(f"gwa-diag app: warm-up run reported {status} {body.strip()!r}; the page will show why",
              file=sys.stderr, flush=True)


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_app(run: str | os.PathLike, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
            open_browser: bool = True) -> int:
    """Serve the app for ``run`` until interrupted; returns the server's exit status."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("gwa-diag app needs Streamlit: pip install -e .[app]  (or pip install streamlit)", file=sys.stderr)
        return 2
    run_path = Path(run)
    _check_run(run_path)
    _check_port_free(host, port)
    # A wildcard bind address is not something a browser (or the warm-up) can open.
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{int(port)}"
    print(f"gwa-diag app: starting the server for {run_path} ...", flush=True)
    proc = subprocess.Popen(streamlit_command(run_path, port=port, host=host))

    def on_term(signum: int, frame: Any) -> None:
        # Stopped by a signal (a service manager, a test): take the server down too. Only
        # signal it here; the proc.wait() below returns once it has stopped (waiting inside
        # a signal handler that interrupted that wait would deadlock).
        proc.terminate()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        if not _wait_until_up(proc, base):
            # Never served a page: a failure, whatever the exit status (a server that exits 0
            # at once, or one that never answers, is no app).
            status = proc.poll()
            why = f"stopped (exit {status})" if status is not None else f"did not answer within {_START_TIMEOUT_S:g} s"
            print(f"gwa-diag app: error: the server {why} before it served a page; see its messages above",
                  file=sys.stderr, flush=True)
            return status or 1
        _warm_up(base)
        if proc.poll() is not None:
            # Ours stopped during the warm-up: whatever answered was not this run's app.
            print(f"gwa-diag app: error: the server stopped (exit {proc.returncode}) before it was "
                  "ready; see its messages above", file=sys.stderr, flush=True)
            return proc.returncode or 1
        print(f"{READY_MESSAGE} {base}/  (Ctrl+C to stop)", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(f"{base}/")
        return proc.wait()
    except KeyboardInterrupt:
        return _stop(proc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            _stop(proc)


def _cmd_app(args: argparse.Namespace) -> int:
    return run_app(args.run, port=args.port, host=args.host, open_browser=not args.no_browser)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``app`` subcommand to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "app", help="explore a run in the browser: most suspicious images, trajectories, relabeling",
        description="Serve the Streamlit app for a run directory (it can still be training).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (the --out of gwa-diag train)")
    p.add_argument("--port", type=int_in_range(1, 65535, what="port"), default=DEFAULT_PORT,
                   help=f"port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 to share)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.set_defaults(func=_cmd_app)
    return p
