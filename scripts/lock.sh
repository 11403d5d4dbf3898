#!/usr/bin/env bash
# Regenerate the lock files from ./.venv after `bash scripts/bootstrap.sh test` with
# VIDABLATE_UNLOCKED=1 (newest versions within pyproject.toml's bounds) and a green test run:
#   requirements-test.lock  every package of the test venv (runtime + test + lint), exact
#   requirements.lock       the runtime closure alone, resolved by pip under those pins
set -euo pipefail
cd "$(dirname "$0")/.."
header="# Exact versions the project was tested with (Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'), $(uname -m)). Made by scripts/lock.sh."
{ echo "$header"; .venv/bin/pip freeze --all --exclude-editable | grep -v -E '^(vidablate|pip)=='; } \
  > requirements-test.lock
deps=$(mktemp) report=$(mktemp)
.venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > "$deps"
.venv/bin/pip install -q --dry-run --ignore-installed --report "$report" \
  -c requirements-test.lock -r "$deps" 2>/dev/null
{ echo "$header"; .venv/bin/python -c "
import json, sys
items = json.load(open(sys.argv[1]))['install']
for name, version in sorted((i['metadata']['name'], i['metadata']['version']) for i in items):
    print(f'{name}=={version}')" "$report"; } > requirements.lock
sed -i 's/^decord==\(.*\)$/decord==\1; platform_machine == "x86_64"/' \
  requirements.lock requirements-test.lock  # pyproject.toml's marker: no aarch64 wheels
rm -f "$deps" "$report"
wc -l requirements.lock requirements-test.lock
