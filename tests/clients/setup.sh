#!/usr/bin/env bash
# Install the client SDKs that the scripts in tests/clients/ run under. Idempotent and quiet:
#   tests/.envs/openai028   venv with the legacy openai==0.28.1 (legacy_openai028.py), plus
#                           numpy, which 0.28.1 needs to decode the base64 embeddings it asks for
#   tests/clients/node_modules   the pinned npm `openai` from package-lock.json (node_sdk.mjs)
#   tests/.envs/templates   Qwen3's chat template (with a README naming its source and licence), taken
#                           from the llama-cpp-python source package the lock pins (tests/support/templates.py)
# Needs python3 (with venv and pip) and node/npm >= 20; reaches PyPI and the npm registry only when
# something is missing or stale. PYTHON=... picks another interpreter for the venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(dirname "$here")/.envs/openai028"
python="${PYTHON:-python3}"

if ! "$venv/bin/python" -c 'import numpy, openai; assert openai.version.VERSION == "0.28.1"' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check openai==0.28.1 "numpy<3"
  echo "setup.sh: installed openai 0.28.1 + numpy in tests/.envs/openai028"
fi

"$python" "$(dirname "$here")/support/templates.py"

command -v npm >/dev/null || { echo "setup.sh: npm not found (Node.js >= 20 is needed)" >&2; exit 1; }
cd "$here"
# Fresh when every package in package-lock.json is installed at its locked version.
if ! node -e '
  const want = require("./package-lock.json").packages;
  const have = require("./node_modules/.package-lock.json").packages;
  for (const [path, pkg] of Object.entries(want))
    if (path && have[path]?.version !== pkg.version) process.exit(1);
' 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "setup.sh: npm ci done in tests/clients ($(node -p 'require("./node_modules/openai/package.json").version' 2>/dev/null || echo '?'))"
fi
