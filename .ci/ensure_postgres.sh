#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the end-to-end history tests, installing them
# with apt-get where they are missing. Where apt-get can install them (root, apt-get present) and
# does not, this fails: a test run beside another must never skip those tests quietly because the
# other run held apt's lock. Only where apt-get cannot be used do the tests skip, saying why.
set -u
find_initdb() {
  command -v initdb 2>/dev/null && return 0
  ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}
if find_initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL's server is missing and apt-get cannot be used here: the end-to-end history tests will skip" >&2
  exit 0
fi
echo "PostgreSQL is missing: installing it with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
# One install at a time from our runs (flock), and apt's own locks waited for, not failed on.
(
  flock -w 900 9 || { echo "waited 900 s for another run's PostgreSQL install" >&2; exit 1; }
  find_initdb >/dev/null && exit 0
  apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql
) 9>/tmp/aria-sessionmanager-postgres-install.lock >"$log" 2>&1
status=$?
if [ "$status" != 0 ] || ! find_initdb >/dev/null; then
  echo "installing PostgreSQL with apt-get failed (exit code $status):" >&2
  tail -n 30 "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
