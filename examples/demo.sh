#!/usr/bin/env bash
# Run the session manager's main job on a copy of the demo tree: stats, a dry-run prune, a prune.
# The tree is dated 2025-11-25T12:00Z; every time in the copy is shifted so that it reads "as of now".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here/agents" "$work/agents"
python3 "$here/shift_times.py" "$work/agents"

export ARIA_AGENTS_DIR="$work/agents"
export ARIA_API_URL="${ARIA_API_URL:-http://127.0.0.1:9}"   # no history service here: marks are reported, not made
export SESSION_HISTORY_BUDGET_SECONDS="${SESSION_HISTORY_BUDGET_SECONDS:-2}"
run() { echo; echo "\$ run_skill.py session_manager $1 '$2'"; python3 "$here/../run_skill.py" session_manager "$1" "$2" | python3 -m json.tool; }

run get_session_stats '{}'
run prune_sessions '{"max_age_minutes": 60, "dry_run": true}'
run prune_sessions '{"max_age_minutes": 60}'
run list_sessions '{}'
echo; echo "Files left in main/sessions:"; ls "$work/agents/main/sessions"
