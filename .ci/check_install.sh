#!/usr/bin/env bash
# Builds the sdist and the wheel from this checkout, installs each with the [app] extra into a
# fresh virtual environment, and uses the installed commands from a folder outside the
# checkout, so that only what the distribution carries can be imported:
#   gwa-diag --version; gwa-diag demo (2 epochs); gwa-diag app, its first page rendered in
#   headless Chromium.
#
#   bash .ci/check_install.sh            # the wheel, then the sdist
#   bash .ci/check_install.sh wheel      # only the wheel
#
# Run it with the dev environment active: `python` needs `build` and Playwright (.[dev]).
# Everything it makes lives in one temporary folder that is removed on exit, pass or fail.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -gt 0 ]; then kinds=("$@"); else kinds=(wheel sdist); fi
for kind in "${kinds[@]}"; do
  case "$kind" in wheel|sdist) ;; *) echo "unknown kind: $kind (wheel or sdist)" >&2; exit 2 ;; esac
done
py="$(command -v python)"

scratch="$(mktemp -d -t gwa-install.XXXXXX)"
server_pid=""
cleanup() {
  # A server still running (a failed check) is stopped with its Streamlit child: it runs in
  # its own process group. Then the venvs (about 6 GB each) and the run go.
  if [ -n "$server_pid" ]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
# A stopped run (time limit, Ctrl-C) exits through the EXIT trap too.
trap 'exit 143' TERM
trap 'exit 130' INT

step() { printf '\n== check_install: %s (%ds)\n' "$*" "$SECONDS"; }

step "building the sdist and the wheel"
# `python -m build` makes the sdist, then the wheel from the unpacked sdist: a file the sdist
# lacks is missing from the wheel too, and the wheel-contents check below catches it.
"$py" -m build --outdir "$scratch/dist" "$repo" >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log"; exit 1; }
# Deprecation warnings from setuptools are shown (they become errors in later releases), not
# fatal: a new setuptools release must not break CI by itself.
grep -i "deprecat" "$scratch/build.log" | sort -u || true
wheel="$(ls "$scratch"/dist/*.whl)"
sdist="$(ls "$scratch"/dist/*.tar.gz)"
ls -l "$scratch/dist"
"$py" "$repo/.ci/install_checks.py" wheel-contents "$wheel" "$repo"

# The commands run from here: not the checkout, and no PYTHONPATH, so a module or data file
# missing from the distribution cannot be picked up from the source tree.
work="$scratch/work"
mkdir -p "$work" "$scratch/tmp"
cd "$work"
unset PYTHONPATH
# The installed commands' temporary files (torch's compile cache, the analysis' spill folders)
# go inside the scratch folder too, so they are removed with it; what they leave behind is
# listed below.
export TMPDIR="$scratch/tmp" TORCHINDUCTOR_CACHE_DIR="$scratch/tmp/torchinductor"

check_one() {
  local kind="$1" dist="$2"
  local venv="$scratch/venv-$kind" run="$work/run-$kind" log="$work/app-$kind.log"
  step "[$kind] fresh venv, pip install gwa-diag[app] from $(basename "$dist")"
  "$py" -m venv "$venv"
  # PEP 508 direct reference: the extra applies to the local file, whichever kind it is.
  # Its output goes to a log shown on failure (the local index makes it long and noisy).
  "$venv/bin/pip" install "gwa-diag[app] @ file://$dist" >"$scratch/pip-$kind.log" 2>&1 \
    || { tail -n 60 "$scratch/pip-$kind.log" >&2; exit 1; }
  # The versions that matter, for the log.
  { grep -E "^Successfully installed" "$scratch/pip-$kind.log" | tr ' ' '\n' \
      | grep -E "^(gwa-diag|torch|torchvision|streamlit)-" | tr '\n' ' '; echo; } || true
  "$venv/bin/python" - "$venv" <<'EOF'
import sys, gwa_diag
# Imported from the fresh environment's site-packages, not from a checkout.
assert gwa_diag.__file__.startswith(sys.argv[1]), gwa_diag.__file__
print("gwa_diag imported from", gwa_diag.__file__)
EOF

  step "[$kind] gwa-diag --version"
  "$venv/bin/gwa-diag" --version

  step "[$kind] gwa-diag demo --epochs 2"
  "$venv/bin/gwa-diag" demo --epochs 2 --out "$run" --quiet | tee "$work/demo-$kind.txt"
  grep -qF "run directory: $run" "$work/demo-$kind.txt" || { echo "demo output does not name $run" >&2; exit 1; }

  step "[$kind] gwa-diag app"
  local port
  port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # setsid: the server and its Streamlit child get their own process group, stopped as one.
  setsid "$venv/bin/gwa-diag" app "$run" --no-browser --port "$port" >"$log" 2>&1 &
  server_pid=$!
  local deadline=$((SECONDS + 180))
  # The launcher prints gwa_diag.cli.app.READY_MESSAGE once the server answers and has run
  # the app once.
  until grep -q "gwa-diag app: ready at" "$log"; do
    if ! kill -0 "$server_pid" 2>/dev/null || [ "$SECONDS" -gt "$deadline" ]; then
      echo "the app server did not get ready:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.5
  done
  grep "ready at" "$log"
  "$py" "$repo/.ci/install_checks.py" first-page "http://127.0.0.1:$port/" "$work/first-page-$kind.png" \
    || { echo "--- server log ---" >&2; cat "$log" >&2; exit 1; }

  # Stopped the way a service manager would: SIGTERM, and the launcher takes Streamlit down.
  kill -TERM "$server_pid"
  local stopped=""
  for _ in $(seq 1 30); do
    if ! kill -0 -- "-$server_pid" 2>/dev/null; then stopped=1; break; fi
    sleep 0.5
  done
  [ -n "$stopped" ] || { echo "the app server did not stop on SIGTERM" >&2; exit 1; }
  server_pid=""

  # Not fatal: a command that leaves a temporary folder behind is a bug to fix, shown here.
  local left
  left="$(find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'gwa-*' -printf '%f ' 2>/dev/null || true)"
  [ -z "$left" ] || echo "warning: [$kind] the commands left temporary folders behind: $left" >&2

  # Removed before the next install: two torch environments at once need about 12 GB.
  rm -rf "$venv" "$run"
}

for kind in "${kinds[@]}"; do
  if [ "$kind" = wheel ]; then check_one wheel "$wheel"; else check_one sdist "$sdist"; fi
done
step "installed distributions work: ${kinds[*]}"
