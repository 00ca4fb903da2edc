"""``gwa-diag app RUN``: open a run directory in the Streamlit app."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["register", "app_script", "streamlit_command", "run_app"]


def app_script() -> Path:
    """``app/streamlit_app.py`` of the source checkout (next to the ``gwa_diag`` package).

    Raises:
        FileNotFoundError: when gwa_diag was installed without the ``app/`` folder.
    """
    import gwa_diag

    script = Path(gwa_diag.__file__).resolve().parent.parent / "app" / "streamlit_app.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"the app is not installed: {script} is missing. The app ships in the source checkout's "
            "app/ folder: install gwa-diag from a checkout with `pip install -e .[app]`"
        )
    return script


def streamlit_command(run: str | os.PathLike, *, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``python -m streamlit run ...`` command line that serves the app for ``run``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.port", str(int(port)),
        "--server.address", host,
        "--server.headless", "true",
        # Headless mode never opens a browser itself; we open one below when asked.
        "--browser.gatherUsageStats", "false",
        "--", str(Path(run).resolve()),
    ]


def _check_run(run: Path) -> None:
    from .store import open_run

    if not run.exists():
        raise FileNotFoundError(f"run directory not found: {run}: pass the --out directory of `gwa-diag train`")
    open_run(run)  # RunDirError with a clear message when it is not a run directory


def _open_browser_later(url: str) -> None:
    import threading
    import webbrowser

    # Give the server a moment to bind before the browser asks for the page.
    threading.Timer(1.5, lambda: webbrowser.open(url)).start()


def run_app(run: str | os.PathLike, *, port: int = 8501, host: str = "127.0.0.1", open_browser: bool = True) -> int:
    """Serve the app for ``run`` until interrupted; returns the server's exit status."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("gwa-diag app needs Streamlit: pip install -e .[app]  (or pip install streamlit)", file=sys.stderr)
        return 2
    run_path = Path(run)
    _check_run(run_path)
    cmd = streamlit_command(run_path, port=port, host=host)
    # A wildcard bind address is not something a browser can open.
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    print(f"gwa-diag app: serving {run_path} at {url}  (Ctrl+C to stop)", flush=True)
    if open_browser:
        _open_browser_later(url)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _cmd_app(args: argparse.Namespace) -> int:
    return run_app(args.run, port=args.port, host=args.host, open_browser=not args.no_browser)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``app`` subcommand to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "app", help="explore a run in the browser: most suspicious images, trajectories, relabeling",
        description="Serve the Streamlit app for a run directory (it can still be training).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (the --out of gwa-diag train)")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 to share)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.set_defaults(func=_cmd_app)
    return p
