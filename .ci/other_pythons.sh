#!/usr/bin/env bash
# The suite again on the oldest Python the skill supports (3.10) and the newest on this machine,
# each in a fresh virtual environment with the same install step a user runs. An interpreter that
# is not on the machine is skipped with a printed reason; a failing run fails CI. The real-gateway
# tests run once, in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
newest=$(ls -d /root/.pyenv/versions/3.1[3-9]* 2>/dev/null | sort -V | tail -n 1 | xargs -r basename)
for version in 3.10 ${newest:+${newest%.*}}; do
  python="$(ls -d /root/.pyenv/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$python" ] || python="$(command -v "python$version" || true)"
  if [ -z "$python" ] || ! "$python" -c 'import sys' 2>/dev/null; then
    echo "python$version is not installed here: its run is skipped" >&2
    continue
  fi
  venv="$(mktemp -d)/venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
  echo "== the suite on $("$venv/bin/python" --version)"
  echo "   (without tests/test_openclaw_end_to_end.py and tests/test_gateway_connection.py: the real"
  echo "   gateway is a Node program, the same on every Python, and its minutes ran once in 'make test';"
  echo "   tests/test_gateway_protocol.py and tests/test_gateway_cli.py cover the skill's side on this Python)"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --ignore=tests/test_openclaw_end_to_end.py \
    --ignore=tests/test_gateway_connection.py
  rm -rf "$(dirname "$venv")"
done
