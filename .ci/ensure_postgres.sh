#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the end-to-end history test, installing them
# with apt-get where they are missing. Never fails: without them that one test skips and says why.
set -u
find_initdb() {
  command -v initdb 2>/dev/null && return 0
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}
if find_initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL is missing: installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 || true
fi
if ! find_initdb >/dev/null; then
  echo "PostgreSQL server binaries could not be installed here; the end-to-end history test will skip" >&2
fi
exit 0
