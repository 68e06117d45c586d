#!/usr/bin/env bash
# What the project needs outside Python, installed once and quick when all is there:
#   - the npm packages in package-lock.json (the local OAuth server), for `make run` and `make test`;
#   - with --browser: Debian's chromium, for the browser tests (`make test`).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "chromium is missing: run 'sudo apt-get install chromium' (the browser tests need /usr/bin/chromium)" >&2
    exit 1
  fi
fi

if [ -f package-lock.json ] && { [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  npm ci --no-audit --no-fund --loglevel=error
fi
