"""What an installed gwa-diag needs: the analysis commands start without torch, and the
wheel carries every module, the app and the sample data under their installed names.

CI also installs the built wheel and sdist into fresh environments and runs the commands
from outside the checkout (.ci/check_install.sh); these tests are the fast part of that.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Imported only by training (and `demo`); rank, score and report read Parquet and must not
# pay its import time (several seconds on a cold disk) or need it installed. scipy and
# scikit-learn: only a run with a verified sample (gwa-diag audit) needs them.
HEAVY = ["torch", "torchvision", "scipy", "sklearn"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from synthetic import write_synthetic_run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return write_synthetic_run(tmp_path_factory.mktemp("packaging") / "run", samples=300, epochs=6)


def _run_cli_without(args: list[str], modules: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``gwa_diag.cli.main(args)`` in a fresh interpreter; exit 3 if it imported any of ``modules``."""
    code = (
        "import sys\n"
        "from gwa_diag.cli import main\n"
        f"rc = main({args!r})\n"
        f"loaded = [m for m in {modules!r} if m in sys.modules]\n"
        "if loaded:\n"
        "    print('imported:', loaded, file=sys.stderr)\n"
        "    sys.exit(3)\n"
        "sys.exit(rc or 0)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [
    ["rank", "--show", "3"],
    ["score"],
    ["report"],
    ["labels", "--out", "corrected.csv", "--auto", "drop"],
])
def test_analysis_commands_do_not_import_torch(small_run: Path, command: list[str], tmp_path: Path) -> None:
    args = [command[0], str(small_run), *command[1:]]
    proc = _run_cli_without(args, HEAVY, tmp_path)
    assert proc.returncode == 0, f"gwa-diag {' '.join(command)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def test_the_torch_check_can_fail(small_run: Path, tmp_path: Path) -> None:
    # The same check on a module the analysis does import must report it, or the test above
    # would pass whatever gets imported.
    proc = _run_cli_without(["score", str(small_run)], ["pyarrow"], tmp_path)
    assert proc.returncode == 3 and "imported: ['pyarrow']" in proc.stderr, proc.stderr


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_source_package_is_listed_in_pyproject() -> None:
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    mapping = setuptools_cfg["package-dir"]
    found = set()
    # Each mapped folder (gwa_diag/, app/, sample_data/) is walked for folders with an
    # __init__.py, named as they install (app/views -> gwa_diag.app.views).
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join((name, *init.parent.relative_to(ROOT / folder).parts)))
    assert found - listed == set(), f"folders with an __init__.py missing from [tool.setuptools] packages: {found - listed}"
    assert listed - found == set(), f"packages listed without a folder: {listed - found}"


def test_wheel_carries_app_and_sample_data(tmp_path: Path) -> None:
    """Build the wheel (no dependencies, no isolated build environment: a few seconds) from
    a copy of the sources and check its file list as CI does."""
    # Without an isolated build environment the build uses this environment's setuptools;
    # pyproject's SPDX licence string needs 77 or later ([dev] installs it).
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build this pyproject.toml")
    src = tmp_path / "src"
    src.mkdir()
    # A copy, so the build's build/ and egg-info folders never land in the checkout.
    for name in ["gwa_diag", "app", "sample_data"]:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ["pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"]:
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("gwa_diag-*.whl")
    # The version is written once (gwa_diag.__version__): the wheel carries that one.
    import gwa_diag

    assert wheel.name.startswith(f"gwa_diag-{gwa_diag.__version__}-")

    spec = importlib.util.spec_from_file_location("install_checks", ROOT / ".ci" / "install_checks.py")
    install_checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install_checks)
    assert install_checks.wheel_contents(wheel, ROOT) == 0

    names = zipfile.ZipFile(wheel).namelist()
    views = sorted(p.name for p in (ROOT / "app" / "views").glob("*.py"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("gwa_diag/app/views/")) == views
