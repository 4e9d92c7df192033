"""Session manager for an agent gateway: list, prune, delete and restore sessions.

Every deletion has two layers. The session's keys leave ``<agent>/sessions/sessions.json`` under
the gateway's own lock and its transcripts are archived beside it; then its row in the history
service (aria-api) is marked ended. An agent of the SQLite-era gateway (OpenClaw 2026.8 and later,
``<agent>/agent/openclaw-agent.sqlite``) is read and changed only through the running gateway,
over one connection per call in its documented WebSocket protocol (GatewayClient) or, where that
cannot serve and the CLI can, OpenClaw's CLI; the gateway deletes and archives itself, and the
history layer is the same. The functions raise
``SessionManagerError`` subclasses or return plain dicts; only ``run_skill.py`` prints and picks
exit codes. The files, the lock, the CLI and the history service are described in
docs/FORMATS.md (cited below as §N).

Contents, in reading order: the public functions first, then one section per noun, then the
shared primitives and errors. Each item is a section's ``# --- `` header, then what to open in it
(tests/test_layout.py keeps the two equal):

- The public functions -> list_sessions, delete_session, prune_sessions, get_session_stats,
  cleanup_after_delegation (the seed's five), cleanup_orphans, list_deleted, restore_session,
  sync_pending, reconcile_history
- Names, limits and defaults -> INDEX_NAME, ANSWER_BUDGET_BYTES, TEST_HOOKS
- The call's context: configuration, argument checks -> Call, Config
- Listings and stats -> SessionPage, SessionStats
- Prunes -> Prune, _prune_answer
- One deletion: the search for a session, its answer -> Search
- Reconciling the history with the stores -> Reconciliation
- Answers: the size budget, items -> _fit_answer, _session_item
- Sessions: types, protection, grouping, transcripts -> Session, Protection, FolderListing
- Stores: AgentStore, what every kind does, AgentWalk -> AgentStore, AgentWalk, Removal, Skip
- The JSON store: JsonStore, reading sessions.json -> JsonStore, IndexDocument
- The JSON store: the gateway's lock -> gateway_lock, HeldLock
- The JSON store: rewriting, removing, restoring -> rewrite_index
- The SQLite store: SqliteStore, the gateway's own deletes -> SqliteStore, STORE_KINDS
- The SQLite-era gateway: its protocol, one connection per call -> GatewayClient
- The SQLite-era gateway: its CLI -> OpenClawCli
- The audit log -> AuditLog, AuditTransaction, Deletion
- The history layer: History, the outbox, marks -> History, Outbox, Mark, MarkStatus, HistoryReport
- The history layer: the delivery process -> deliver_in_background
- The history service's client: pace, requests, row lookups -> Pace, HistoryClient
- Transcripts: archives -> archive_transcript
- Shared primitives: the skill's own files, atomic writes, paths -> StateFolder, write_atomic, AgentPaths
- Shared primitives: clock, ids, times, texts, garbage collection -> _utc_now, _cut
- Errors -> SessionManagerError
- What run_skill.py reads: the functions, their arguments, help -> FUNCTIONS, PARAMETERS, HELP

A public function is a short list of steps, each a call on a noun: a Call is the call's context
(its configuration, read once, and its one gateway connection, opened when first needed); an
AgentWalk reads the selected agents' stores one at a time; each store does what its kind does
(AgentStore.open chooses the kind, the one place that does); History delivers the marks. How a
JSON-era delete works is JsonStore.remove_from_index; a SQLite-era one, SqliteStore.remove_through_gateway.

Three ideas each have one place: the kind of store (AgentStore, its subclasses and STORE_KINDS;
code outside them calls methods and never compares kinds), protection (the Protection table and
AgentStore.protection_by_rules / transcript_protection, used by every path), and a mark's status
(MarkStatus and MARK_RULES). docs/HOW_TO.md lists the places to touch to add one more of each.

The life of one deletion (AgentStore.remove): the audit intent records each entry's exact text;
the history marks are queued in the outbox, unconfirmed; under the gateway's lock the commit
record is flushed and sessions.json is replaced atomically; the marks are confirmed; the
transcripts are renamed to archives and recorded; then History.mark PATCHes the history rows,
and whatever it cannot deliver waits in the outbox for the next call. AuditTransaction says
what a crash leaves after each step.

Imports: a listing must not pay for what only a deletion uses. httpx, concurrent.futures, ctypes,
urllib.parse and python-dateutil are imported inside the functions that need them;
tests/test_speed_rules.py fails if a listing, stats or a dry-run prune loads any of them.
subprocess, shutil and websockets are imported only where an agent is SQLite-era.

Test hooks: the crash harness (tests/skill_harness.py) and the golden record
(tests/same_answers.py) replace the names in TEST_HOOKS, and only those.
"""

from __future__ import annotations

import errno
import gc
import heapq
import json
import math
import os
import re
import stat
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, ClassVar, NamedTuple, TypeAlias, TypeVar

# --- The public functions -------------------------------------------------------------------------


def list_sessions(
    agent: str | None = None,
    session_type: str | None = None,
    limit: int | str = 50,
    offset: int = 0,
    min_idle_minutes: float | None = None,
    detail: str = "summary",
) -> dict[str, Any]:
    """List sessions a page at a time, newest first, one item per sessionId with its alias keys.

    session_count counts every session that matches the filters; page on with next_offset until
    has_more is false. A page holds at most limit sessions, fewer if they would not fit 32 KiB.
    """
    session_type = _check_session_type(session_type)
    page_size = _check_limit(limit)
    _check_count("offset", offset, 0, 10**9)
    min_idle = None if min_idle_minutes is None else _check_minutes("min_idle_minutes", min_idle_minutes, 0)
    full = _check_detail(detail)
    with Call.begin() as call:
        walk = AgentWalk(call, agent)
        page = SessionPage(session_type, min_idle, page_size, offset, full)
        for store in walk:
            page.take(store)
        return call.answer(page.answer(walk))


def delete_session(
    session_id: str,
    agent: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    detail: str = "summary",
) -> dict[str, Any]:
    """Delete one session (by sessionId or key): its keys, its transcripts, then its history row."""
    full = _check_detail(detail)
    reference = _checked_deletion(session_id, agent, dry_run, force)
    with Call.begin() as call:
        answer = Search.delete(call, reference, agent, dry_run, force, "delete")
        return call.answer(
            _fit_answer(answer, DELETE_GROWING, full, FULL_ON_REQUEST if dry_run else AFTER_A_DELETION)
        )


def prune_sessions(
    max_age_minutes: float | None = None,
    dry_run: bool = False,
    agent: str | None = None,
    session_type: str | None = None,
    detail: str = "summary",
) -> dict[str, Any]:
    """Delete every unprotected session idle for longer than the threshold (two layers each)."""
    _check_flag("dry_run", dry_run)
    session_type = _check_session_type(session_type)
    full = _check_detail(detail)
    with Call.begin() as call:
        config = call.config
        threshold = _check_minutes("max_age_minutes", max_age_minutes, config.stale_minutes)
        walk = AgentWalk(call, agent, for_change=not dry_run, complete=True)
        prune = Prune(walk, session_type, threshold, dry_run)
        removals = prune.run()
        marks = [r.mark for r in removals if r.removed_keys]
        report = HistoryReport() if dry_run else History(call).mark(marks)
        return call.answer(prune.answer(report, full))


def get_session_stats(
    agent: str | None = None, stale_threshold_minutes: float | None = None, detail: str = "summary"
) -> dict[str, Any]:
    """Counts of sessions (stale, active, by agent and type), the oldest one, and disk use."""
    full = _check_detail(detail)
    with Call.begin() as call:
        config = call.config
        threshold = _check_minutes("stale_threshold_minutes", stale_threshold_minutes, config.stale_minutes)
        walk = AgentWalk(call, agent)
        stats = SessionStats(threshold, full)
        for store in walk:
            stats.take(store)
        return call.answer(stats.answer(walk, History(call)))


def cleanup_after_delegation(session_id: str, detail: str = "summary") -> dict[str, Any]:
    """Delete a finished sub-agent's session after a delegation; protections apply, no force."""
    full = _check_detail(detail)
    reference = _checked_deletion(session_id, None, False, False)
    with Call.begin() as call:
        answer = Search.delete(call, reference, None, False, False, "delegation_cleanup")
        return call.answer(_fit_answer(answer, DELETE_GROWING, full, AFTER_A_DELETION))


def cleanup_orphans(
    dry_run: bool = False, archive_retention_days: float = 30, detail: str = "summary"
) -> dict[str, Any]:
    """Archive transcripts no key points to, drop stale keys without transcripts, expire archives."""
    _check_flag("dry_run", dry_run)
    full = _check_detail(detail)
    retention = _check_retention(archive_retention_days)
    with Call.begin() as call:
        now = _utc_now()
        turns = None if dry_run else StateFolder(call.config).transcripts_turn
        walk = AgentWalk(call, None, for_change=not dry_run, hold=turns)
        result: dict[str, Any] = {"dry_run": dry_run, "archive_retention_days": archive_retention_days}
        result.update({name: [] for name in CLEANUP_LISTS}, errors=walk.errors)
        removed = walk.clean(now, dry_run, retention, result)
        if not dry_run:
            result["audit_records_expired"] = call.audit.trim(now - timedelta(days=retention))
        report = History(call).mark(removed) if not dry_run else HistoryReport()
        result["history"] = report.summary()
        growing = (*CLEANUP_LISTS, "errors", "history_gave_up")
        hint = FULL_ON_REQUEST if dry_run else AFTER_A_DELETION
        return call.answer(_fit_answer(report.annotate(result), growing, full, hint))


def list_deleted(
    agent: str | None = None, limit: int | str = 50, offset: int = 0, detail: str = "summary"
) -> dict[str, Any]:
    """Recorded deletions, newest first, a page at a time; restore_session undoes those of sessions.json."""
    if agent is not None:
        _check_agent_name(agent)
    page = _check_limit(limit)  # "all" too, as for list_sessions (the PARAMETERS table has one limit)
    _check_count("offset", offset, 0, 10**9)
    full = _check_detail(detail)
    with Call.begin(connects=False) as call:
        deletions = call.audit.standing_deletions(agent)
        return _page_of_deletions(deletions, offset, page, full)


def restore_session(session_id: str, detail: str = "summary") -> dict[str, Any]:
    """Undo a deletion: put its keys back, rename its transcripts back, mark its history active."""
    reference = _check_session_reference(session_id)
    full = _check_detail(detail)
    with Call.begin(connects=False) as call:
        deletion = call.audit.latest_deletion(reference)
        restored = deletion.undo(call)
        report = History(call).mark([restored.mark])
        return _fit_answer(restored.answer(report), RESTORE_GROWING, full, FULL_ON_REQUEST)


def sync_pending(detail: str = "summary", reassign: bool = False) -> dict[str, Any]:
    """Deliver the history marks waiting in the outbox; report delivered, pending and given up.
    ``reassign``: send those queued under another ARIA_API_URL/ARIA_API_KEY with this one."""
    full = _check_detail(detail)
    _check_flag("reassign", reassign)
    with Call.begin(connects=False) as call:
        report = History(call).mark([], include_pending=True, reassign=reassign)
        hint = "the counts in the message are exact; the outbox keeps what is still pending"
        return _fit_answer(report.sync_answer(), ("delivered", "still_pending", "gave_up"), full, hint)


def reconcile_history(
    agent: str | None = None, dry_run: bool = False, detail: str = "summary"
) -> dict[str, Any]:
    """Mark ended the history rows of sessions that no store holds any more, whoever removed them."""
    if agent is not None:
        _check_agent_name(agent)
    _check_flag("dry_run", dry_run)
    full = _check_detail(detail)
    with Call.begin() as call:
        answer = History(call).reconcile(agent, dry_run)
        growing = ("sessions", "by_agent", "by_type", "unreadable_agents", "history_gave_up")
        hint = FULL_ON_REQUEST if dry_run else "the audit log records each row ended"
        return call.answer(_fit_answer(answer, growing, full, hint))


# --- Names, limits and defaults -------------------------------------------------------------------


# The gateway's files (§1-§4).
INDEX_NAME = "sessions.json"
LOCK_SUFFIX = ".lock"
TRANSCRIPT_SUFFIX = ".jsonl"
TOPIC_MARK = "-topic-"
SQLITE_DATABASE = os.path.join("agent", "openclaw-agent.sqlite")
# <file>.deleted.<stamp> (§4); the SQLite-era gateway adds .<32 hex>.zst (§7).
ARCHIVE_PATTERN = re.compile(
    r"\.(deleted|reset)\.(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d{3})?Z)(?:\.[0-9a-f]{32})?(?:\.zst)?$"
)
SESSION_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$", re.IGNORECASE)
SESSION_KEY_PATTERN = re.compile(r"^agent:[a-z0-9][a-z0-9_-]{0,63}:[^\x00-\x1f]{1,512}$")
AGENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The two kinds of store (AgentStore), by the names answers and the audit log give them.
JSON_STORE = "json"
SQLITE_STORE = "sqlite"
# The SQLite-era gateway (§7): its stores are read and changed only through its CLI.
DEFAULT_OPENCLAW_CLI = "openclaw"
DEFAULT_OPENCLAW_TIMEOUT_SECONDS = 60.0
#: How long a call starts deletes through the gateway connection (each takes about 0.5 s, §7).
DEFAULT_GATEWAY_BUDGET_SECONDS = 60.0
# What one CLI call may print (a listing of about 90,000 sessions), and how long its output is read
# after it exited (a child it left behind may keep the pipe open).
CLI_OUTPUT_CAP = 64 << 20
CLI_EXIT_GRACE_SECONDS = 1.0
# How many lines printed before the CLI's JSON answer are passed over to find it.
CLI_PREAMBLE_LINES = 20
# A delete call may take this much longer per key: the gateway deletes about one a second (§7).
OPENCLAW_SECONDS_PER_KEY = 5.0
# The gateway's protocol (§7; OpenClaw's docs/gateway/protocol): the version both sides speak, the
# scope a delete needs, a listing's page, the cap on one frame (the documented default), and how long
# opening a connection may take.
GATEWAY_PROTOCOL = 4
GATEWAY_ADMIN_SCOPE = "operator.admin"
GATEWAY_PAGE = 500
GATEWAY_PAGES_CAP = 10_000
GATEWAY_LIST_OPTIONS = {"archived": "all", "includeGlobal": True, "includeUnknown": True}
GATEWAY_PAYLOAD_CAP = 25 << 20
GATEWAY_CONNECT_SECONDS = 10.0
SKILL_VERSION = "0.1.0"
#: A cron run's key, as the gateway tells one (its sessions.list hides them, §7).
CRON_RUN_KEY = re.compile(r"^agent:[^:]+:cron:[^:]+:run:[^:]+(?::|$)")
CRON_RUNS_UNLISTED = (
    "cron runs not listed: the gateway's protocol hides them (sessions.list leaves out :run: keys); a "
    "prune reads them with the openclaw CLI, and the gateway's own retention removes finished runs after 24 h"
)
# The keys of one delete call, in bytes: well under what Linux takes on one command line (2 MiB).
OPENCLAW_KEY_BYTES_PER_CALL = 64 * 1024

# Defaults of the environment (README, Configuration) and the gateway's lock (§3). No number in the
# environment may exceed ENVIRONMENT_NUMBER_MAX (115 days in seconds): beyond, timeouts overflow.
ENVIRONMENT_NUMBER_MAX = 10_000_000
DEFAULT_AGENTS_DIR = "/app/agents"  # Aria's container; elsewhere, where OpenClaw keeps its agents
OPENCLAW_DEFAULT_STATE_DIR = "~/.openclaw"
DEFAULT_API_URL = "http://aria-api:8000"
# ARIA_API_URL=none: no history service. No mark is queued or sent, no delivery process starts.
HISTORY_OFF = "none"
MAYBE_SENT_MARKED = "its row was marked by an earlier delivery that stopped before recording it"
HISTORY_OFF_TEXT = "the history layer is off (ARIA_API_URL=none): no history row is marked or queued"
DEFAULT_STALE_MINUTES = 60
DEFAULT_LOCK_TIMEOUT_SECONDS = 10.0
LOCK_STALE_SECONDS = 30.0
LINKLESS_ERRNOS = (
    errno.EPERM,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.EMLINK,
    errno.ENOSYS,  # no link() at all (some FUSE and network file systems)
    errno.EACCES,  # protected_hardlinks, or a mount that refuses links but allows an O_EXCL create
    errno.EIO,  # a file system that fails links only
    errno.EXDEV,  # a temporary that landed on another mount (an overlay's upper and lower layers)
)
LOCK_RETRY_STEP_SECONDS = 0.05
LOCK_RETRY_MAX_SECONDS = 1.0
# A held lock is rewritten this often, well within the 30 s after which the gateway breaks it.
LOCK_REFRESH_SECONDS = 10.0
# A transcript written to this recently may belong to a run that has not added its key yet.
ORPHAN_MIN_AGE_SECONDS = 600

# The skill's own files, in SESSION_MANAGER_STATE_DIR.
STATE_DIR_NAME = ".session-manager"
AUDIT_LOG_NAME = "audit.jsonl"
HISTORY_OUTBOX_NAME = "history-outbox.jsonl"
HISTORY_ABANDONED_NAME = "history-abandoned.jsonl"
HISTORY_PACE_NAME = "history-pace.json"
# history-pace.json holds at most the largest window's count of send times (Pace._state): its
# size, and the most a read takes in, follows from that.
PACE_BYTES_PER_SEND = 24
PACE_FILE_SLACK = 64 << 10
DELIVERY_LOG_NAME = "history-delivery.log"
DELIVERY_FAILED_NAME = "history-delivery.failed"
DELIVERER_LOCK_NAME = "history-deliverer"

# The history service (§5) and the history step.
HISTORY_PAGE_LIMIT = 100
HISTORY_LOOKUP_MIN_PAGES = 50
HISTORY_CONNECT_TIMEOUT = 1.0
HISTORY_READ_TIMEOUT = 3.0
# No answer of the history service is held beyond this many bytes (decompressed).
HISTORY_ANSWER_CAP = 8 << 20
HISTORY_CONCURRENCY = 8
HISTORY_BUDGET_SECONDS = 5.0
HISTORY_RETRIES = 2
# No request starts after the budget's deadline; one already sent may take this long past it to
# finish, so that a slow but working service completes (and is not sent again) what it began.
HISTORY_GRACE_SECONDS = 1.0
# A mark is given up only after its deliveries have really failed (no answer, a rejection) for this
# long; one that only waited (its budget, the pace, the service's 429 or 503) is never given up.
HISTORY_GIVE_UP_DAYS = 7.0
# What the skill sends at most, whoever sends (its calls and its delivery process share it): well
# inside the service's limiter (50 in 5 s, 120 a minute, 2,000 an hour, per client IP, §5), so
# that the other clients behind the same IP keep their share. (marks, seconds) per window.
DEFAULT_HISTORY_PACE = ((20, 5.0), (60, 60.0), (1500, 3600.0))
# How long to wait after a 429 or 503 that names no Retry-After (the service says 60).
DEFAULT_RETRY_AFTER_SECONDS = 60.0
#: The longest wait the service may ask for that is honoured; a block read back is never longer.
LONGEST_RETRY_AFTER_SECONDS = 3600.0
# The delivery process (deliver_in_background): one round's time, the read timeout of its lookups
# (the service's sync runs inside the first GET: seconds at 2,000 sessions, §5), and how long it
# goes on without delivering anything before it stops (the next call starts a new one).
DELIVERY_ROUND_SECONDS = 20.0
DELIVERY_READ_TIMEOUT = 60.0
DELIVERY_IDLE_SECONDS = 600.0
DELIVERY_LOG_CAP = 1 << 20
# reconcile_history reads every active row within this time (its pages run the service's sync)...
RECONCILE_BUDGET_SECONDS = 60.0
HISTORY_LISTING_MAX_PAGES = 2000
# ...and leaves a row whose session started this recently: the service's sync also lists sessions
# the gateway holds in memory before they reach its store, and such a row is no vanished session.
RECONCILE_MIN_AGE_SECONDS = 600
# A deletion's marks wait unconfirmed in the outbox only while its call is between queuing them and
# writing the index (at most the lock timeout). One left longer belongs to a call that died there:
# the index then says whether its deletion happened.
UNCONFIRMED_GRACE_SECONDS = 300.0

# Every answer lands in a language model's context: with default arguments it stays under
# ANSWER_BUDGET_BYTES at any index size. Counts are always exact; lists that grow with the index
# show at most LIST_CAP items (fewer if the answer would still be too large), and "truncated" says
# how many each left out. "detail": "full" gives every list whole, for scripts and operators.
ANSWER_BUDGET_BYTES = 32 * 1024
LIST_CAP = 100
ITEM_LIST_CAP = 10
TEXT_CAP = 200
# No text of a default answer is longer (an error message or an id echoed from a store included).
MESSAGE_CAP = 1000
DETAIL_LEVELS = ("summary", "full")
AFTER_A_DELETION = "list_deleted shows every deletion of this call in full"
FULL_ON_REQUEST = 'repeat the call with "detail": "full" to see every item'

#: The module names that tests replace (see the module docstring).
TEST_HOOKS = (
    "_utc_now",
    "_new_id",
    "gateway_lock",
    "archive_transcript",
    "AuditLog.append",
    "AuditLog.append_stream",
    "History.mark",
    "write_atomic",
    "parse_index_text",
    "rewrite_index",
    "AgentStore.read",
    "_renameat2",
    "_rename_archives_back",
    "History.active_rows",
)


# --- The call's context: configuration, argument checks -------------------------------------------


class Call:
    """One public function's call: its configuration, read once, the audit log and the outbox it
    writes to, and its one connection to the SQLite-era gateway, opened when first needed, or why
    there is none (then the CLI does what NoConnection.fallback allows). The delivery process's
    rounds are calls that never connect (``connects``): the CLI serves them, as it did before the
    protocol."""

    def __init__(self, config: Config, connects: bool = True) -> None:
        self.config = config
        self.connects = connects
        self.connection: GatewayClient | NoConnection | None = None
        self.audit = AuditLog(config)
        self.outbox = Outbox(config)

    @classmethod
    @contextmanager
    def begin(cls, connects: bool = True) -> Iterator[Call]:
        """A public function's call: the configuration from the environment, and the connection
        closed when the call ends."""
        call = cls(Config.from_environment(), connects)
        try:
            yield call
        finally:
            call.close()

    def gateway(self) -> GatewayClient | NoConnection | None:
        """The call's connection to the gateway, or why there is none (None: this call never connects)."""
        if not self.connects:
            return None
        if self.connection is None:
            self.connection = GatewayClient.open(self.config)
        return self.connection

    def answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The answer, with the path that reached the SQLite-era gateway (``gateway_path``), if one did."""
        path = self.path()
        if path is not None:
            answer["gateway_path"] = path
        return answer

    def path(self) -> str | None:
        """The path taken, in words (None: the gateway was not needed)."""
        connection = self.connection
        if isinstance(connection, GatewayClient):
            return "one connection over the gateway protocol"
        if connection is None:
            return None
        if connection.fallback is Fallback.NOTHING:
            return f"none: {connection.reason}"
        return f"the openclaw CLI, one process per step: {connection.reason}"

    def close(self) -> None:
        if isinstance(self.connection, GatewayClient):
            self.connection.close()


class Config(NamedTuple):
    """What the deployment's environment says; read once per call."""

    agents_root: str
    api_url: str
    api_key: str | None
    running_session_id: str | None
    stale_minutes: float
    lock_timeout: float
    state_dir: str
    history_budget: float
    history_concurrency: int
    openclaw_cli: str = DEFAULT_OPENCLAW_CLI
    gateway_url: str | None = None
    gateway_token: str | None = None
    openclaw_timeout: float = DEFAULT_OPENCLAW_TIMEOUT_SECONDS
    history_pace: tuple[tuple[int, float], ...] = DEFAULT_HISTORY_PACE
    background_delivery: bool = True
    gateway_budget: float = DEFAULT_GATEWAY_BUDGET_SECONDS

    @classmethod
    def from_environment(cls) -> Config:
        """Read the variables of docs/FORMATS.md §6 (and the skill's own tuning knobs)."""
        root = os.path.realpath(_agents_root_from_environment())
        _require_packages()
        return cls(
            agents_root=root,
            api_url=_api_url_from_environment(),
            api_key=_api_key_from_environment(),
            running_session_id=os.environ.get("ARIA_SESSION_ID", "").strip() or None,
            stale_minutes=_number_from_environment("SESSION_STALE_MINUTES", DEFAULT_STALE_MINUTES),
            lock_timeout=_number_from_environment(
                "SESSION_LOCK_TIMEOUT_SECONDS", DEFAULT_LOCK_TIMEOUT_SECONDS
            ),
            state_dir=_state_dir_from_environment(root),
            history_budget=_number_from_environment("SESSION_HISTORY_BUDGET_SECONDS", HISTORY_BUDGET_SECONDS),
            history_concurrency=max(
                1, int(_number_from_environment("SESSION_HISTORY_CONCURRENCY", HISTORY_CONCURRENCY))
            ),
            openclaw_cli=os.environ.get("OPENCLAW_CLI", "").strip() or DEFAULT_OPENCLAW_CLI,
            gateway_url=os.environ.get("OPENCLAW_GATEWAY_URL", "").strip() or None,
            gateway_token=_secret_from_environment("OPENCLAW_GATEWAY_TOKEN"),
            openclaw_timeout=_number_from_environment(
                "OPENCLAW_TIMEOUT_SECONDS", DEFAULT_OPENCLAW_TIMEOUT_SECONDS
            ),
            history_pace=_pace_from_environment(),
            background_delivery=_switch_from_environment("SESSION_HISTORY_BACKGROUND", True),
            # A budget of 0 once answered "deleted" for a session the gateway never deleted.
            gateway_budget=_number_from_environment(
                "OPENCLAW_DELETE_BUDGET_SECONDS", DEFAULT_GATEWAY_BUDGET_SECONDS, above_zero=True
            ),
        )

    @property
    def history_off(self) -> bool:
        """Whether ARIA_API_URL says there is no history service."""
        return not self.api_url

    @property
    def service_id(self) -> str:
        """Which history service a mark is for: a digest of ARIA_API_URL, ARIA_API_KEY and
        ARIA_AGENTS_DIR, kept with each queued mark (the key itself is never written to disk)."""
        import hashlib

        seen = "\0".join([self.api_url, self.api_key or "", self.agents_root]).encode("utf-8")
        return hashlib.sha256(b"aria-sessionmanager service\0" + seen).hexdigest()[:16]

    def discover_agents(self) -> list[str]:
        """Agent ids under the root: every directory that has a ``sessions`` folder inside the root."""
        found = []
        try:
            entries = sorted(os.scandir(self.agents_root), key=lambda entry: entry.name)
        except OSError as error:
            raise ConfigurationError(
                f"cannot list agents root {self.agents_root}: {error.strerror}"
            ) from None
        for entry in entries:
            if not AGENT_ID_PATTERN.match(entry.name):
                continue
            folder = os.path.realpath(os.path.join(entry.path, "sessions"))
            if os.path.isdir(folder) and _is_inside(folder, self.agents_root):
                found.append(entry.name)
        return found

    def agent_paths(self, agent: str) -> AgentPaths:
        """Resolve an agent's sessions folder, refusing names or symlinks that lead out of the root."""
        _check_agent_name(agent)
        folder = os.path.realpath(os.path.join(self.agents_root, agent, "sessions"))
        if not _is_inside(folder, self.agents_root):
            raise UnsafePath(f"the sessions folder of agent {agent!r} leads outside the agents root")
        if not os.path.isdir(folder):
            raise UnknownAgent(
                f"agent {agent!r} has no sessions folder under {self.agents_root}; "
                f"known agents: {_some_names(self.discover_agents())}"
            )
        return AgentPaths(agent, folder, self.agents_root)

    def selected_agents(self, agent: str | None) -> list[AgentPaths]:
        if agent is not None:
            return [self.agent_paths(agent)]
        return [self.agent_paths(name) for name in self.discover_agents()]

    def sqlite_database(self, agent: str) -> str:
        """Where the SQLite-era gateway keeps an agent's sessions (§7); its presence makes the agent's
        store a SqliteStore (AgentStore.open)."""
        return os.path.join(self.agents_root, agent, SQLITE_DATABASE)

    def gateway_endpoint(self) -> str | NoConnection:
        """The gateway's URL (OPENCLAW_GATEWAY_URL, else the default port on 127.0.0.1); a
        NoConnection for one the token must not travel to."""
        url = self.gateway_url or f"ws://127.0.0.1:{os.environ.get('OPENCLAW_GATEWAY_PORT', '18789')}"
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("ws", "wss"):
            return NoConnection(
                f"OPENCLAW_GATEWAY_URL must be a ws:// or wss:// URL, not {_echo(url)}", Fallback.NOTHING
            )
        if scheme == "ws" and not _loopback_url(url):
            return NoConnection(
                "OPENCLAW_GATEWAY_URL is a ws:// URL to another host, where the token would travel in clear: "
                "use wss:// (the gateway's gateway.tls) or run the skill beside the gateway",
                Fallback.NOTHING,
            )
        return url

    def refuse_running_conversation(self, reference: str) -> None:
        """Refuse the conversation running this skill by the name it was given, before any store is read."""
        if reference == self.running_session_id:
            _refuse_protected(Protection.RUNNING_CONVERSATION, reference, None, force=False)


def _number_from_environment(name: str, default: float, above_zero: bool = False) -> float:
    """A number variable, from 0 (or above it: ``above_zero``) to ENVIRONMENT_NUMBER_MAX."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={_echo(raw)} is not a number") from None
    if not 0 <= value <= ENVIRONMENT_NUMBER_MAX:
        raise ConfigurationError(f"{name}={_echo(raw)} must be a number from 0 to {ENVIRONMENT_NUMBER_MAX:,}")
    if above_zero and value == 0:
        raise ConfigurationError(
            f"{name}={_echo(raw)} allows no work at all; set a number above 0 (default {default:g})"
        )
    return value


def _pace_from_environment() -> tuple[tuple[int, float], ...]:
    """SESSION_HISTORY_PACE: marks per window, as ``count/seconds`` pairs joined by commas."""
    raw = os.environ.get("SESSION_HISTORY_PACE", "").strip()
    if not raw:
        return DEFAULT_HISTORY_PACE
    windows = []
    for part in raw.split(","):
        count, _, seconds = part.strip().partition("/")
        try:
            window = (int(count), float(seconds))
        except ValueError:
            window = (0, 0.0)
        if not (1 <= window[0] <= ENVIRONMENT_NUMBER_MAX and 0 < window[1] <= ENVIRONMENT_NUMBER_MAX):
            raise ConfigurationError(
                f"SESSION_HISTORY_PACE={_echo(raw)} must be count/seconds pairs joined by commas, such "
                "as 20/5,60/60,1500/3600 (at most 20 marks in any 5 s, 60 a minute, 1,500 an hour)"
            )
        windows.append(window)
    return tuple(windows)


def _switch_from_environment(name: str, default: bool) -> bool:
    """An on/off variable: 1, true, on, yes, or 0, false, off, no."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    raise ConfigurationError(f"{name}={_echo(raw)} must be 1 or 0 (on or off)")


#: The modules the skill imports (some lazily) and the package that brings each.
REQUIRED_MODULES = {"dateutil": "python-dateutil", "httpx": "httpx", "httpcore": "httpx"}


def _require_packages() -> None:
    """Fail before any change when a package the skill needs is missing, naming it: not half-way
    through a prune, and not as an internal error when httpx is first imported."""
    from importlib.util import find_spec

    for module, package in REQUIRED_MODULES.items():
        if find_spec(module) is None:
            raise ConfigurationError(
                f"the Python package {package} is not installed (no module {module!r}); install it "
                f"with 'python3 -m pip install {package}' (or 'pip install .' in the skill's folder)"
            )


def _secret_from_environment(name: str) -> str | None:
    """A secret variable without surrounding white space; refused when too short to be redacted."""
    value = os.environ.get(name, "").strip()
    if value and len(value) < SECRET_MIN_LENGTH:
        raise ConfigurationError(
            f"{name} has fewer than {SECRET_MIN_LENGTH} characters, too few to be kept out of answers; "
            "set it to the real key or token (its value is not shown)"
        )
    return value or None


def _api_key_from_environment() -> str | None:
    """ARIA_API_KEY without surrounding white space ('$(cat key)' of a CRLF file ends in '\\r').

    What is left must be printable ASCII, as an HTTP header value must; the error never shows it.
    """
    key = _secret_from_environment("ARIA_API_KEY")
    if key is None:
        return None
    for position, character in enumerate(key):
        if not " " <= character <= "~":
            raise ConfigurationError(
                f"ARIA_API_KEY has a character that cannot be sent in a header at position {position + 1} "
                f"of {len(key)}; set it to the key alone (its value is not shown)"
            )
    return key


# scheme://[user@]host[:port][/path]: what a base URL of the history service can be. A regular
# expression, not urllib.parse, which a listing must not import (tests/test_speed_rules.py).
_API_URL_PATTERN = re.compile(
    r"^https?://(?:[^@/\s]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^:/?#\s@\[\]]+)(?::\d{1,5})?(?:[/?#]\S*)?$"
)


def _normalise_api_url(url: str) -> str:
    """Return the history service base URL ending in ``/api``, whichever way it was set."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/api") else url + "/api"


def _api_url_from_environment() -> str:
    """ARIA_API_URL as a base URL ending in /api ("" for none: the history layer is off); refused
    unless http(s) with a host."""
    url = os.environ.get("ARIA_API_URL", "").strip() or DEFAULT_API_URL
    if url.lower() == HISTORY_OFF:
        return ""
    if not _API_URL_PATTERN.match(url) or any(not " " < character <= "~" for character in url):
        raise ConfigurationError(
            "ARIA_API_URL must be an http(s) URL such as http://aria-api:8000, or none for no history "
            "service (its value is not shown, as it may hold credentials)"
        )
    return _normalise_api_url(url)


def _real_sessions_folders(root: str) -> dict[str, str]:
    """Each agent-like folder of the root with the real path of its ``sessions`` folder."""
    try:
        with os.scandir(root) as entries:
            names = [entry.name for entry in entries if AGENT_ID_PATTERN.match(entry.name)]
    except OSError:
        return {}
    return {name: os.path.realpath(os.path.join(root, name, "sessions")) for name in names}


def _state_dir_from_environment(root: str) -> str:
    """SESSION_MANAGER_STATE_DIR, refused inside any sessions folder (the gateway owns those; its
    files there would look like transcripts), compared by real paths so that no link hides one."""
    state_dir = os.environ.get("SESSION_MANAGER_STATE_DIR", "").strip() or os.path.join(root, STATE_DIR_NAME)
    real = os.path.realpath(state_dir)
    for agent, sessions in _real_sessions_folders(root).items():
        if _is_inside(real, sessions):
            raise ConfigurationError(
                f"SESSION_MANAGER_STATE_DIR {_echo(state_dir)} lies inside the sessions folder of "
                f"agent {agent!r}; choose a folder outside every <agent>/sessions"
            )
    return real


def _agents_root_from_environment() -> str:
    """ARIA_AGENTS_DIR; unset, Aria's /app/agents, else where OpenClaw keeps its agents
    ($OPENCLAW_STATE_DIR/agents, else ~/.openclaw/agents)."""
    root = os.environ.get("ARIA_AGENTS_DIR", "").strip()
    if not root and not os.path.isdir(DEFAULT_AGENTS_DIR):
        state = os.environ.get("OPENCLAW_STATE_DIR", "").strip() or OPENCLAW_DEFAULT_STATE_DIR
        root = os.path.join(os.path.expanduser(state), "agents")
    root = root or DEFAULT_AGENTS_DIR
    if not os.path.isdir(root):
        raise ConfigurationError(
            f"agents root {_echo(root)} is not a directory; set ARIA_AGENTS_DIR to the folder "
            "that holds <agent>/sessions/sessions.json (or <agent>/agent/openclaw-agent.sqlite)"
        )
    return root


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _check_agent_name(agent: Any) -> str:
    if not isinstance(agent, str):
        raise InvalidArgument(f"agent must be a string such as 'main', not {_type_name(agent)}")
    if "/" in agent or "\\" in agent or agent.startswith(".") or "\0" in agent:
        raise UnsafePath(f"agent {_echo(agent)} looks like a path; give an agent id such as 'main'")
    if not AGENT_ID_PATTERN.match(agent):
        raise InvalidArgument(
            f"agent {_echo(agent)} is not an agent id: use a lower-case slug such as 'main' or 'aria-talk'"
        )
    return agent


def _check_session_reference(value: Any) -> str:
    """A sessionId or a full session key; anything else is refused before it reaches a path."""
    if not isinstance(value, str):
        raise InvalidArgument(f"session_id must be a string, not {_type_name(value)}")
    text: str = value.strip()
    if text == "global" or SESSION_KEY_PATTERN.match(text) or SESSION_ID_PATTERN.match(text):
        return text
    value = text
    if not value:
        raise InvalidArgument("session_id must not be empty")
    if "/" in value or "\\" in value or value.startswith("."):
        raise UnsafePath(f"session_id {_echo(value)} looks like a path; give a sessionId or a session key")
    raise InvalidArgument(
        f"session_id {_echo(value)} is neither a sessionId (letters, digits, '.', '_', '-') "
        "nor a session key ('agent:<agent>:<rest>')"
    )


def _is_key(reference: str) -> bool:
    """Whether a checked session reference is a key (else it is a sessionId)."""
    return reference == "global" or reference.startswith("agent:")


def _check_minutes(name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a number of minutes, not {_type_name(value)}")
    if not value >= 0 or value == float("inf"):
        raise InvalidArgument(f"{name} must be a finite number of minutes of at least 0, not {value}")
    return value


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false, not {_type_name(value)}")
    return value


def _check_count(name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be a whole number, not {_type_name(value)}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def _check_session_type(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^[a-z0-9_-]{1,64}$", value):
        raise InvalidArgument(
            f"session_type must be a type such as 'cron', 'cron_run' or 'subagent', not {_echo(value)}"
        )
    return value


def _check_detail(value: Any) -> bool:
    """True for "full" (every list whole), False for the default, bounded answer."""
    if value not in DETAIL_LEVELS:
        raise InvalidArgument(
            f'detail must be "summary" (the default: lists of at most {LIST_CAP} items) or "full" '
            f"(every list whole), not {_echo(value)}"
        )
    return bool(value == "full")


def _check_limit(value: Any) -> int | None:
    """A page size of 1 to 10,000, or None for "all"."""
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise InvalidArgument(f'limit must be a whole number from 1 to 10000, or "all", not {_echo(value)}')
    return value


def _check_retention(days: Any) -> float:
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days < 100_000:
        raise InvalidArgument("archive_retention_days must be a number of days between 0 and 100000")
    return days


def _checked_deletion(session_id: Any, agent: Any, dry_run: Any, force: Any) -> str:
    """delete_session's and cleanup_after_delegation's arguments checked: the session's reference."""
    reference = _check_session_reference(session_id)
    if agent is not None:
        _check_agent_name(agent)
    _check_flag("dry_run", dry_run)
    _check_flag("force", force)
    return reference


# --- Listings and stats ---------------------------------------------------------------------------


def _page_of_items(
    result: dict[str, Any], items: list[dict[str, Any]], offset: int, full: bool
) -> dict[str, Any]:
    """Add the page's items (as many as fit the answer, and at least one, so that paging always
    advances) and where the next page starts."""
    returned = len(items) if full else max(min(1, len(items)), _items_that_fit(result, items))
    more = offset + returned < result["session_count"]
    result.update(
        sessions=items[:returned],
        returned=returned,
        offset=offset,
        has_more=more,
        next_offset=offset + returned if more else None,
    )
    return result


class SessionPage:
    """list_sessions' page: how many sessions match its filters, each agent's summary, and of the
    matching sessions only those that can still reach the page (their items are built once)."""

    def __init__(
        self, session_type: str | None, min_idle: float | None, page_size: int | None, offset: int, full: bool
    ) -> None:
        self.session_type, self.min_idle, self.offset, self.full = session_type, min_idle, offset, full
        self.wanted = None if page_size is None else offset + page_size
        self.now = _utc_now()
        self.matched = 0
        self.best: list[
            tuple[tuple[Any, ...], Session]
        ] = []  # (order, session): those that may reach the page
        self.agents: dict[str, dict[str, Any]] = {}

    def take(self, store: AgentStore) -> None:
        """Count one store's matching sessions and keep those that may reach the page."""
        self.agents[store.paths.agent] = store.summary()
        chosen = [
            (_listing_order(s), s)
            for s in store.sessions.values()
            if _listed(s, self.session_type, self.min_idle, self.now)
        ]
        self.matched += len(chosen)
        wanted = self.wanted
        self.best = heapq.nsmallest(wanted, self.best + chosen) if wanted is not None else self.best + chosen

    def answer(self, walk: AgentWalk) -> dict[str, Any]:
        items = [
            _session_item(session, self.now, self.full)
            for _, session in sorted(self.best)[self.offset : self.wanted]
        ]
        result: dict[str, Any] = {"session_count": self.matched, "agents": self.agents, "errors": walk.errors}
        result |= walk.not_listed()
        hint, first = "name an agent to see its errors", _answer_size(items[:1])
        fitted = _fit_answer(result, ("agents", "errors"), self.full, hint, first)
        return _page_of_items(fitted, items, self.offset, self.full)


class SessionCounts:
    """get_session_stats' tallies over every session it reads, and the oldest one met."""

    def __init__(self) -> None:
        self.total = self.stale = self.protected = self.stale_unprotected = 0
        self.by_type: dict[str, int] = {}
        self.oldest: tuple[float, dict[str, Any]] | None = None

    def add(self, session: Session, now: datetime, threshold: float, full: bool) -> None:
        self.total += 1
        self.by_type[session.session_type] = self.by_type.get(session.session_type, 0) + 1
        is_stale = session.is_stale(now, threshold)
        self.stale += is_stale
        self.protected += session.protected is not None
        self.stale_unprotected += is_stale and session.protected is None
        order = _activity_order(session)
        if self.oldest is None or order < self.oldest[0]:
            self.oldest = (order, _session_item(session, now, full))


class SessionStats:
    """get_session_stats' answer as it is gathered: the tallies over every session, and per agent
    its count, summary, disk use and what its store holds (for the vanished history rows)."""

    def __init__(self, threshold: float, full: bool) -> None:
        self.threshold, self.full = threshold, full
        self.now = _utc_now()
        self.counts = SessionCounts()
        self.by_agent: dict[str, int] = {}
        self.disk: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.held: dict[str, Holding] = {}

    def take(self, store: AgentStore) -> None:
        name = store.paths.agent
        self.held[name] = store.held()
        self.by_agent[name] = len(store.sessions)
        self.agents[name] = store.summary()
        self.disk[name] = store.disk_usage()
        for session in store.sessions.values():
            self.counts.add(session, self.now, self.threshold, self.full)

    def answer(self, walk: AgentWalk, history: History) -> dict[str, Any]:
        counts = self.counts
        answer = {
            "total_sessions": counts.total,
            "stale_sessions": counts.stale,
            "active_sessions": counts.total - counts.stale,
            "by_agent": self.by_agent,
            "stale_threshold_minutes": self.threshold,
            "by_type": dict(sorted(counts.by_type.items(), key=lambda item: (-item[1], item[0]))),
            "protected_sessions": counts.protected,
            "stale_unprotected_sessions": counts.stale_unprotected,
            "oldest_session": counts.oldest[1] if counts.oldest else None,
            "orphaned_transcripts": sum(usage["orphaned_transcripts"] for usage in self.disk.values()),
            "pending_history_marks": history.outbox.count(),
            **history.vanished_rows(self.held),
            "disk": self.disk,
            "agents": self.agents,
            "errors": walk.errors,
            **walk.not_listed(),
        }
        growing = ("by_type", "by_agent", "disk", "agents", "errors")
        return _fit_answer(
            answer, growing, self.full, 'the totals are exact; "detail": "full" lists everything'
        )


def _page_of_deletions(
    deletions: list[Deletion], offset: int, page: int | None, full: bool
) -> dict[str, Any]:
    """list_deleted's answer: a page of the deletions (as many as fit), and where the next starts."""
    end = None if page is None else offset + page
    items = [_deletion_item(deletion, full) for deletion in deletions[offset:end]]
    answer: dict[str, Any] = {"count": len(items), "total": len(deletions), "deleted": items}
    answer = _fit_answer(answer, ("deleted",), full, "page on with next_offset")
    count = answer["count"] = len(answer["deleted"])
    more = offset + count < len(deletions)
    answer.update(offset=offset, has_more=more, next_offset=offset + count if more else None)
    return answer


class Restored(NamedTuple):
    """What a restore put back (Deletion.undo), and its history mark."""

    deletion: Deletion
    keys: list[str]
    renamed: dict[str, str]
    missing: list[str]
    errors: list[str]
    mark: Mark

    def answer(self, report: HistoryReport) -> dict[str, Any]:
        """restore_session's answer, before its size is fitted."""
        deletion, outcome = self.deletion, report.outcomes.get(self.deletion.session_id)
        return report.annotate(
            {
                "restored": deletion.session_id,
                "agentId": deletion.agent,
                "restored_keys": self.keys,
                "restored_transcripts": list(self.renamed),
                "missing_archives": self.missing,
                "pg_status_updated": bool(outcome and outcome.updated),
                "history": outcome.as_dict() if outcome else None,
                "message": (
                    f"Session {deletion.session_id} restored to agent {deletion.agent} "
                    f"({len(self.keys)} keys, {len(self.renamed)} transcripts), "
                    + _history_phrase(outcome, self.mark.status)
                ),
                "errors": self.errors,
            }
        )


RESTORE_GROWING = ("restored_keys", "restored_transcripts", "missing_archives", "history_gave_up")


def _deletion_item(deletion: Deletion, full: bool) -> dict[str, Any]:
    item = {
        "session_id": deletion.session_id,
        "agentId": deletion.agent,
        "keys": deletion.keys,
        "reason": deletion.reason,
        "deleted_at": deletion.time,
        "transcripts": deletion.archives(),
        "txn": deletion.txn,
        "store": deletion.store,
    }
    return item if full else _bounded_item(item, ("keys", "transcripts"), ())


CLEANUP_LISTS = ("archived_orphans", "removed_keys", "deleted_archives", "stale_locks_removed", "skipped")


# --- Prunes ---------------------------------------------------------------------------------------


class Prune:
    """One prune over the agents a walk reads: each agent's stale sessions removed (or, dry run,
    planned), what each kind of store removes once for the whole call finished at the end."""

    def __init__(self, walk: AgentWalk, session_type: str | None, threshold: float, dry_run: bool) -> None:
        self.walk, self.session_type, self.threshold, self.dry_run = walk, session_type, threshold, dry_run
        self.total = 0  # the sessions of the type
        self.removals: list[Removal] = []
        self.protected: list[dict[str, Any]] = []  # answer items for the stale protected sessions

    def run(self) -> list[Removal]:
        """Walk every agent; the removals (a dry run's are planned only)."""
        now, total = _utc_now(), 0
        protected: list[dict[str, Any]] = []
        removals: list[Removal] = []
        waiting: dict[type[AgentStore], list[RemovalPart]] = {}
        for store in self.walk:
            count, doomed, protected_items = store.stale_sessions(self.session_type, now, self.threshold)
            store.sessions.clear()  # only the doomed are needed from here on: the others' memory goes now
            total, protected = total + count, protected + protected_items
            part = None if self.dry_run else self.begin(store, doomed)
            if self.dry_run:
                removals += [_release_for_dry_run(session) for session in doomed]
            elif part is not None and part.waiting:
                waiting.setdefault(type(store), []).append(part)
            elif part is not None:
                removals += part.removals
        self.total, self.removals, self.protected = total, removals + self.finish(waiting), protected
        return self.removals

    def answer(self, report: HistoryReport, full: bool) -> dict[str, Any]:
        walk, dry_run = self.walk, self.dry_run
        fields = {
            "dry_run": dry_run,
            "errors": walk.errors,
            "threshold_minutes": self.threshold,
            "protected": self.protected,
        }
        answer = _prune_answer(self.total, self.removals, report, full, **fields) | walk.not_listed()
        answer |= walk.every_agent_failed()
        growing = ("deleted_ids", "protected", "skipped", "errors", "history_by_session", "history_gave_up")
        return _fit_answer(answer, growing, full, FULL_ON_REQUEST if dry_run else AFTER_A_DELETION)

    def begin(self, store: AgentStore, doomed: list[Session]) -> RemovalPart | None:
        """Start removing one agent's doomed sessions; a failure is that agent's error, not the call's."""
        if not doomed:
            return None
        try:
            return store.begin_removal(doomed, "prune")
        except SessionManagerError as error:
            self.walk.failed(store.paths.agent, error)
            return None

    def finish(self, waiting: dict[type[AgentStore], list[RemovalPart]]) -> list[Removal]:
        """Finish what each kind of store removes once for the whole call (one delete through the
        gateway); an agent none of whose sessions got an answer has the failure as its error."""
        removals: list[Removal] = []
        for kind, parts in waiting.items():
            done, failures = kind.finish_removals(self.walk.call, parts)
            for agent, failure in failures.items():
                self.walk.failed(agent, failure)
            removals += done
        return removals


def _archive_errors(removals: list[Removal]) -> list[dict[str, Any]]:
    return [
        {"agent": r.session.agent, "id": r.session.session_id, "error": text, "error_type": "archive_failed"}
        for r in removals
        for text in r.errors
    ]


def _remaining(removals: list[Removal]) -> dict[str, Any]:
    """How many stale sessions the call's time budget left for the next call, when any did."""
    count = sum(1 for removal in removals if removal.not_started)
    return {"remaining": count} if count else {}


def _prune_answer(
    total: int, removals: list[Removal], report: HistoryReport, full: bool, **fields: Any
) -> dict[str, Any]:
    done = [r for r in removals if r.removed_keys]
    answer = {
        "total_sessions": total,
        "pruned_count": len(done),
        "kept_count": total - len(done),
        "dry_run": fields["dry_run"],
        "deleted_ids": [r.session.session_id for r in done],
        "errors": fields["errors"] + _archive_errors(removals),
        "threshold_minutes": fields["threshold_minutes"],
        "protected": fields["protected"],
        "skipped": [
            {"id": r.session.session_id, "agentId": r.session.agent, "reason": r.skipped}
            for r in removals
            if r.skipped
        ],
        "archived_transcripts": sum(len(r.archived) for r in done),
        **_remaining(removals),
        "history": report.summary(),
        # By default only the exceptions an agent must act on; the counts above cover all.
        "history_by_session": {
            sid: outcome.as_dict() for sid, outcome in report.outcomes.items() if full or not outcome.settled
        },
    }
    return report.annotate(answer)


# --- One deletion: the search for a session, its answer -------------------------------------------


class Search(NamedTuple):
    """Where a session was looked for (every agent, or only ``searched``), and what was found: its
    store and session, or the transcripts it may have left (per agent) when no store holds it."""

    searched: list[str] | None
    store: AgentStore | None = None
    session: Session | None = None
    leftovers: tuple[Leftovers, ...] = ()
    unlisted: dict[str, str] | None = None  # per agent searched, what its reading left out and why

    def where(self) -> str:
        """The stores searched, in words."""
        if self.searched is None:
            return "any index"
        return f'the index of agent {_some_names(self.searched)} (pass "agent" to look in another)'

    @classmethod
    def delete(
        cls, call: Call, reference: str, agent: str | None, dry_run: bool, force: bool, reason: str
    ) -> dict[str, Any]:
        """delete_session and cleanup_after_delegation: find one session, delete both its layers."""
        call.config.refuse_running_conversation(reference)
        search = cls.find(call, reference, agent)
        store, session = search.store, search.session
        if store is None or session is None:
            return search.delete_leftovers(call, reference, agent, dry_run)
        _refuse_protected(session.protected, session.session_id, session.primary_key, force)
        removal = _release_for_dry_run(session) if dry_run else store.remove_one(session, reason, force)
        marks = [removal.mark] if removal.removed_keys and not dry_run else []
        report = HistoryReport() if dry_run else History(call).mark(marks)
        return _session_deletion_answer(session, removal, report, dry_run)

    @staticmethod
    def order(config: Config, reference: str, agent: str | None) -> tuple[list[AgentPaths], set[str]]:
        """The agents to look in for a session, likeliest first, and those whose finding ends the
        search: the named agent alone; a key's owner alone (a key of another agent's is found by
        naming that agent); else every agent, those whose folder holds ``<id>.jsonl`` first."""
        owner = reference.split(":")[1] if reference.startswith("agent:") else None
        if agent is None and owner is not None and owner in config.discover_agents():
            agent = owner
        scope = config.selected_agents(agent)
        if agent is not None:
            return scope, {agent}
        name = reference + TRANSCRIPT_SUFFIX
        likeliest = {p.agent for p in scope if os.path.exists(os.path.join(p.folder, name))}
        scope.sort(key=lambda p: p.agent not in likeliest)
        return scope, likeliest if not _is_key(reference) else set()

    @classmethod
    def find(cls, call: Call, reference: str, agent: str | None) -> Search:
        """Find a session by sessionId or key, reading as few stores as possible."""
        scope, likeliest = Search.order(call.config, reference, agent)
        found: list[tuple[AgentStore, Session]] = []
        leftovers: list[Leftovers] = []
        stores = AgentStore.open_all(call, scope, complete=True)
        for store in stores:
            session = (store.read(for_change=True)).session_of(reference)
            if session is not None:
                found.append((store, session))
                if store.paths.agent in likeliest or len(stores) == 1:
                    break
            elif not _is_key(reference) and SESSION_ID_PATTERN.match(reference):
                left = store.leftovers(reference)
                leftovers += [left] if left is not None else []
        if len(found) > 1:
            names = _some_names([store.paths.agent for store, _ in found])
            raise InvalidArgument(
                f'session {reference!r} exists in agents {names}; pass "agent" to choose one'
            )
        searched = None if len(scope) > 1 or (agent is None and not _is_key(reference)) else [scope[0].agent]
        if found:
            return cls(searched, *found[0])
        unlisted = {store.paths.agent: store.unlisted for store in stores if store.unlisted is not None}
        return cls(searched, leftovers=tuple(leftovers), unlisted=unlisted)

    def delete_leftovers(
        self, call: Call, reference: str, agent: str | None, dry_run: bool
    ) -> dict[str, Any]:
        """A session no store holds: archive the transcripts it left that nothing else claims (see
        AgentStore.leftover_transcripts), and still mark its history ended: the rows of the named agent only,
        or, when every store was searched, of any agent under the root (_row_matches)."""
        leftovers = self.leftovers
        would_archive = [name for found in leftovers for name in found.free]
        kept = [
            {"agent": f.paths.agent, "file": n, "reason": r} for f in leftovers for n, r in f.kept.items()
        ]
        deleted_before = any(
            d.committed and reference in (d.session_id, *d.keys) for d in call.audit.deletions()
        )
        archived = {} if dry_run else self.archive_leftovers(call.audit)
        marks = [Mark(reference, agent)] if not _is_key(reference) and not dry_run else []
        report = History(call).mark(marks) if marks else HistoryReport()
        if not (deleted_before or would_archive or kept or archived):
            return self.nothing_found_answer(report, reference, dry_run)
        message = (
            f"Session {reference} is not in {self.where()}"
            + (" (already removed); " if deleted_before else "; ")
            + f"{len(would_archive) if dry_run else len(archived)} leftover transcripts "
            + ("would be archived, nothing changed (dry run)" if dry_run else "archived, ")
            + ("" if dry_run else _history_phrase(report.outcomes.get(reference)))
            + (f"; {len(kept)} kept (a key or a live run still uses them)" if kept else "")
        )
        return report.deletion_answer(
            reference,
            message,
            removed_keys=[],
            transcript_archived=bool(archived),
            agentId=None,
            dry_run=dry_run,
            archived_files=archived,
            would_archive=would_archive if dry_run else [],
            kept_transcripts=kept,
            errors=[],
        )

    def archive_leftovers(self, audit: AuditLog) -> dict[str, str]:
        """Archive the transcripts that nothing claims, recorded in the audit log as late archives."""
        archived: dict[str, str] = {}
        moment = _utc_now()
        for found in self.leftovers:
            made: dict[str, str] = {}
            for name in found.free:
                try:
                    made[name] = archive_transcript(found.paths, name, moment)
                except FileNotFoundError:
                    pass
            audit.record_late_archives(found.paths.agent, made, "leftover")
            archived.update(made)
        return archived

    def nothing_found_answer(self, report: HistoryReport, reference: str, dry_run: bool) -> dict[str, Any]:
        """delete_session of an id that no store, transcript or recorded deletion knows: rc 0 (a delete
        is idempotent), but ``found`` false and a message that says so, for a typo must not read as
        a success."""
        message = (
            f"No session {reference} was found in {self.where()}, nor in the audit log: nothing was "
            "deleted. Check the id with list_sessions"
            + ("" if dry_run else f"; {_history_phrase(report.outcomes.get(reference))}")
            + ("; but the stores were not read whole (see not_listed)" if self.unlisted else "")
        )
        nothing: dict[str, Any] = {"removed_keys": [], "archived_files": {}, "would_archive": []}
        nothing |= _not_listed(self.unlisted or {})
        return report.deletion_answer(
            reference,
            message,
            found=False,
            transcript_archived=False,
            agentId=None,
            dry_run=dry_run,
            kept_transcripts=[],
            errors=[],
            **nothing,
        )


def _session_deletion_answer(
    session: Session, removal: Removal, report: HistoryReport, dry_run: bool
) -> dict[str, Any]:
    archived = bool(removal.archived)
    history_text = (
        "history not touched (dry run)"
        if dry_run
        else _history_phrase(report.outcomes.get(session.session_id), removal.mark.status)
    )
    verb = "would be removed" if dry_run else "removed"
    if removal.skip is Skip.ALREADY_GONE:
        verb = "was removed by another call in the meantime; nothing more was removed"
    elif removal.skipped:
        verb = f"was not removed ({removal.skipped})"
    message = (
        f"Session {session.session_id} {verb} from agent {session.agent} "
        f"({len(removal.removed_keys)} keys, transcript={'archived' if archived else 'none'}), {history_text}"
    )
    return report.deletion_answer(
        session.session_id,
        message,
        removed_keys=removal.removed_keys,
        transcript_archived=archived,
        agentId=session.agent,
        dry_run=dry_run,
        archived_files=removal.archived if not dry_run else {},
        would_archive=list(removal.archived) if dry_run else [],
        kept_transcripts=removal.kept_transcripts,
        errors=removal.errors,
    )


DELETE_GROWING = (
    "removed_keys",
    "archived_files",
    "would_archive",
    "kept_transcripts",
    "errors",
    "history_gave_up",
)


# --- Reconciling the history with the stores ------------------------------------------------------


class Reconciliation:
    """reconcile_history's findings: the rows to end per (agent, session), and the tallies."""

    def __init__(self, rows: list[dict[str, Any]], held: dict[str, Holding], scope: set[str]) -> None:
        self.to_end: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.openclaw = self.present = 0
        self.skipped: dict[str, int] = {}
        now, view = _utc_now(), HeldSessions.of(held)
        for row in rows:
            fate = _row_fate(row, view, now, scope)
            self.openclaw += fate != "not_an_openclaw_session"
            if fate == "vanished":
                self.to_end.setdefault((row["agent_id"], str(_row_session_id(row))), []).append(row)
            elif fate == "present":
                self.present += 1
            else:
                self.skipped[fate] = self.skipped.get(fate, 0) + 1


def _reconcile_answer(
    rows: int, reconciliation: Reconciliation, report: HistoryReport, dry_run: bool, **fields: Any
) -> dict[str, Any]:
    """reconcile_history's answer: the rows read, those of OpenClaw sessions, present or not,
    those ended (or that would be) by agent and type, and what was left alone and why."""
    by_agent: dict[str, int] = {}
    by_type: dict[str, int] = {}
    sessions = []
    for (agent, session_id), session_rows in reconciliation.to_end.items():
        kind = str(session_rows[0].get("session_type"))
        by_agent[agent] = by_agent.get(agent, 0) + len(session_rows)
        by_type[kind] = by_type.get(kind, 0) + len(session_rows)
        row_ids = [row["id"] for row in session_rows]
        sessions.append({"id": session_id, "agentId": agent, "session_type": kind, "row_ids": row_ids})
    count = sum(by_agent.values())
    verb = "would be marked ended (dry run: nothing changed)" if dry_run else "are marked ended"
    unreadable = fields["unreadable"]
    answer = {
        "dry_run": dry_run,
        "rows_read": rows,
        "openclaw_rows": reconciliation.openclaw,
        "present_rows": reconciliation.present,
        "rows_ended": count,  # in a dry run: the rows that would be
        "by_agent": by_agent,
        "by_type": by_type,
        "skipped": reconciliation.skipped,
        "unreadable_agents": unreadable,
        "sessions": sessions,
        "history": report.summary(),
        "message": f"{count} active rows of {len(sessions)} sessions that no store holds {verb}"
        + (f"; {len(unreadable)} agents could not be read and were left alone" if unreadable else ""),
    }
    return report.annotate(answer)


class HeldSessions(NamedTuple):
    """What the stores hold, read once for every row: per agent (or why it could not be read),
    every session id any readable store holds, whether every store could be read, and the agents
    whose cron runs were left out."""

    by_agent: dict[str, Holding]
    anywhere: set[str]
    all_readable: bool
    runs_unknown: set[str]

    @classmethod
    def of(cls, held: dict[str, Holding]) -> HeldSessions:
        readable = [
            i.ids if isinstance(i, PartlyHeld) else i for i in held.values() if not isinstance(i, Exception)
        ]
        runs_unknown = {agent for agent, ids in held.items() if isinstance(ids, PartlyHeld)}
        return cls(held, set().union(*readable), len(readable) == len(held), runs_unknown)


def _row_fate(row: dict[str, Any], held: HeldSessions, now: datetime, scope: set[str]) -> str:
    """What reconcile_history does with one active row: "vanished" (its session is in no store: the
    row is ended), "present", or why it is left alone. ``held`` covers every agent under the root,
    ``scope`` the agents whose rows are reconciled.

    A row is present when any store holds any session id it names: the service takes a row's
    agent_id from the key (agent:<id>:...), not from the folder that holds it, and a row may name
    an aria_session_id beside the OpenClaw one. While any store cannot be read, a row found in
    none of the others is unknown, never vanished: its session may be in the one unread."""
    names, agent = _row_session_ids(row), row.get("agent_id")
    if not names:
        return "not_an_openclaw_session"
    if not isinstance(agent, str) or agent not in held.by_agent or agent not in scope:
        return "agent_not_in_scope"
    if any(name in held.anywhere for name in names):
        return "present"
    if not held.all_readable:
        return "store_unreadable"
    if agent in held.runs_unknown and row.get("session_type") in CRON_ROW_TYPES:
        return "cron_runs_unlisted"
    if not _UUID_PATTERN.match(row["id"]):
        return "row_id_not_a_uuid"
    started = _parse_timestamp(row.get("started_at"))
    if started is None or (now - started).total_seconds() < RECONCILE_MIN_AGE_SECONDS:
        return "too_recent"
    return "vanished"


#: What one store holds: its sessionIds, those of a reading that left the cron runs out, or why it
#: could not be read.
Holding: TypeAlias = "set[str] | PartlyHeld | SessionManagerError"


# --- Answers: the size budget, items --------------------------------------------------------------


def _iso_or_none(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _first_field(session: Session, name: str) -> Any:
    for key in session.keys:
        entry = session.entries[key]
        if isinstance(entry, dict) and entry.get(name) is not None:
            return entry[name]
    return None


def _answer_json(value: Any) -> str:
    """``value`` as run_skill prints it: compact JSON, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _answer_size(value: Any) -> int:
    """Bytes of ``value`` as run_skill prints it."""
    return len(_answer_json(value).encode("utf-8", "surrogatepass"))


def _short(value: Any, cap: int = TEXT_CAP) -> Any:
    """A text from a store or a service, without secrets and cut to ``cap`` characters (a label can
    be any length); any other value that would print longer (a 50 KB object) becomes its cut JSON."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else _answer_json(value)
    return value if len(text) <= cap else _cut(text, cap)


def _first_items(items: Any, count: int) -> Any:
    return dict(list(items.items())[:count]) if isinstance(items, dict) else items[:count]


def _cut_texts(value: Any) -> Any:
    """``value`` with every text cut to MESSAGE_CAP characters and every name (a dict's key) to
    TEXT_CAP: no single text from a store, a service or an argument can fill an answer."""
    if isinstance(value, str):
        return _cut(value, MESSAGE_CAP)
    if isinstance(value, dict):
        return {(_cut(k) if isinstance(k, str) else k): _cut_texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_texts(item) for item in value]
    return value


def _fit_answer(
    result: dict[str, Any], growing: tuple[str, ...], full: bool, hint: str, reserve: int = 0
) -> dict[str, Any]:
    """Cap the texts and the ``growing`` lists of an answer so that it fits ANSWER_BUDGET_BYTES,
    less ``reserve`` bytes that the caller adds afterwards.

    Each list keeps its first LIST_CAP items; while the answer is still too large, the list that
    takes most room gives up half of what it shows. ``truncated`` counts what each left out, and
    the message says where the rest is (``hint``). With ``full`` the answer is left whole.
    """
    if full:
        return result
    lengths = {name: len(result[name]) for name in growing if isinstance(result.get(name), (list, dict))}
    result = _cut_texts({**result, **{name: _first_items(result[name], LIST_CAP) for name in lengths}})
    kept = {name: result[name] for name in lengths}
    shown = {name: len(items) for name, items in kept.items()}
    while _answer_size(result) > ANSWER_BUDGET_BYTES - reserve and any(shown.values()):
        largest = max((name for name in shown if shown[name]), key=lambda name: _answer_size(result[name]))
        shown[largest] //= 2
        result[largest] = _first_items(kept[largest], shown[largest])
    truncated = {name: lengths[name] - shown[name] for name in lengths if shown[name] < lengths[name]}
    if truncated:
        result["truncated"] = truncated
        note = (
            f"lists cut to fit this answer ({sum(truncated.values())} items left out, see truncated); {hint}"
        )
        result["message"] = f"{result['message']}; {note}" if result.get("message") else note
    return result


def _bounded_item(item: dict[str, Any], lists: tuple[str, ...], texts: tuple[str, ...]) -> dict[str, Any]:
    """An answer item whose ``lists`` keep ITEM_LIST_CAP items (the rest counted in its own "truncated") and
    whose ``texts``, and list items, taken from the index are cut to TEXT_CAP."""
    cut: dict[str, int] = {}
    for name in lists:
        if len(item[name]) > ITEM_LIST_CAP:
            cut[name] = len(item[name]) - ITEM_LIST_CAP
        kept = _first_items(item[name], ITEM_LIST_CAP)
        item[name] = [_short(value) for value in kept] if isinstance(kept, list) else kept
    for name in texts:
        item[name] = _short(item[name])
    if cut:
        item["truncated"] = cut
    return item


def _session_item(session: Session, now: datetime, full: bool = False) -> dict[str, Any]:
    """One session of a listing; by default its texts are cut to TEXT_CAP and its lists to ITEM_LIST_CAP."""
    updated_at = _iso_or_none(session.updated_at)
    last_activity = (
        updated_at if session.last_active is session.updated_at else _iso_or_none(session.last_active)
    )
    idle = session.idle_minutes(now)
    label = None
    for key in session.keys:
        if isinstance(session.entries[key], dict):
            label = _label_of(session.entries[key])
            if label:
                break
    item = {
        "id": session.session_id,
        "sessionId": session.session_id,
        "key": session.primary_key,
        "keys": session.keys,
        "agentId": session.agent,
        "session_type": session.session_type,
        "label": label,
        "updatedAt": updated_at,
        "last_activity": last_activity,
        "idle_minutes": round(idle, 1) if idle is not None else None,
        "contextTokens": _first_field(session, "contextTokens"),
        "model": _first_field(session, "model"),
        "transcripts": session.transcripts,
        "protected": session.protected,
    }
    return (
        item
        if full
        else _bounded_item(
            item,
            ("keys", "transcripts"),
            ("id", "sessionId", "key", "session_type", "label", "model", "contextTokens"),
        )
    )


def _activity_order(session: Session) -> float:
    return session.last_active.timestamp() if session.last_active else float("-inf")


def _listing_order(session: Session) -> tuple[Any, ...]:
    """Newest activity first, never-active last; ties by agent, then sessionId (a stable order)."""
    if session.last_active is None:
        return (1, 0.0, session.agent, session.session_id)
    return (0, -session.last_active.timestamp(), session.agent, session.session_id)


def _listed(session: Session, session_type: str | None, min_idle: float | None, now: datetime) -> bool:
    """Whether a session passes list_sessions' filters (never-active sessions count as idle)."""
    if session_type is not None and session_type not in session.key_types():
        return False
    if min_idle is None:
        return True
    idle = session.idle_minutes(now)
    return idle is None or idle >= min_idle


def _items_that_fit(result: dict[str, Any], items: list[dict[str, Any]]) -> int:
    """How many of the page's items fit the answer's budget beside what it already holds."""
    room = ANSWER_BUDGET_BYTES - _answer_size({**result, "sessions": []}) - 80  # the paging keys
    kept = 0
    for item in items:
        room -= _answer_size(item) + 1
        if room < 0:
            break
        kept += 1
    return kept


def _error_record(error: SessionManagerError, **context: Any) -> dict[str, Any]:
    return {**context, "error": str(error), "error_type": error.error_type}


def _not_listed(unlisted: dict[str, str]) -> dict[str, str]:
    """``not_listed`` for an answer: what the stores' reading left out (AgentStore.unlisted), for
    which agents, and why (an answer never drops sessions silently); empty when nothing was."""
    if not unlisted:
        return {}
    why = {reason: sorted(a for a, r in unlisted.items() if r == reason) for reason in unlisted.values()}
    said = "; ".join(f"{reason} (agent {_some_names(agents)})" for reason, agents in why.items())
    return {"not_listed": _cut(said, MESSAGE_CAP)}


# --- Sessions: types, protection, grouping, transcripts -------------------------------------------


class Protection(str, Enum):
    """Why a session or a transcript must stay where it is. The value is what answers print (a
    session's ``protected``, a kept file's ``reason``); PROTECTION_MESSAGES says it in words."""

    RUNNING_CONVERSATION = "running_conversation"
    MAIN_SESSION = "main_session"
    GLOBAL_SESSION = "global_session"
    GATEWAY_OWNED = "gateway_owned"
    MAIN_AGENT_CONVERSATION = "main_agent_conversation"
    TRANSCRIPT_LOCKED = "transcript_locked"
    REFERENCED_BY_A_KEY = "referenced_by_a_key"
    RECENTLY_MODIFIED = "recently_modified"
    ACTIVE_RUN = "active_run"

    def __str__(self) -> str:
        return str(self.value)


#: Each protection in words, after "session <id> (<key>)".
PROTECTION_MESSAGES = {
    Protection.RUNNING_CONVERSATION: "is the conversation running this skill (ARIA_SESSION_ID); it cannot be "
    "deleted",
    Protection.MAIN_SESSION: "is an agent's main session",
    Protection.GLOBAL_SESSION: "is the shared 'global' session",
    Protection.GATEWAY_OWNED: "is a cron run, and this call reached the SQLite-era gateway only "
    "through its CLI, whose delete cannot remove runs (the gateway's cron.sessionRetention does, 24 h "
    "by default; see gateway_path for why there was no connection)",
    Protection.MAIN_AGENT_CONVERSATION: "is one of the main agent's own conversations",
    Protection.TRANSCRIPT_LOCKED: "has a transcript that a live run is writing right now",
    Protection.REFERENCED_BY_A_KEY: "has a transcript that a key of the index still points to",
    Protection.ACTIVE_RUN: "has a run in progress in the gateway, which its delete would cancel",
    Protection.RECENTLY_MODIFIED: f"has a transcript written in the last {ORPHAN_MIN_AGE_SECONDS // 60} "
    "minutes, maybe by a run that has not added its key yet",
}
#: The protections that ``"force": true`` lifts for delete_session; the others hold even then.
LIFTED_BY_FORCE = frozenset(
    {
        Protection.MAIN_SESSION,
        Protection.GLOBAL_SESSION,
        Protection.MAIN_AGENT_CONVERSATION,
        Protection.TRANSCRIPT_LOCKED,
    }
)
#: Session types protected at any age, and what protects them.
PROTECTED_TYPES = {"main": Protection.MAIN_SESSION, "global": Protection.GLOBAL_SESSION}
#: The main agent's sessions are its owner's conversations: only these types of it are pruned.
PRUNABLE_MAIN_AGENT_TYPES = ("cron", "cron_run", "subagent")
MAIN_AGENT = "main"


def _session_type_of(key: str) -> str:
    """The session type a key names: main, cron, cron_run, subagent, or its first segment."""
    if key == "global":
        return "global"
    parts = key.split(":")
    if len(parts) < 3 or parts[0] != "agent" or not parts[2]:
        return "other"
    rest = parts[2:]
    if rest == ["main"]:
        return "main"
    if rest[0] == "cron":
        return "cron_run" if "run" in rest[2::2] and len(rest) >= 4 else "cron"
    return _cut(rest[0])  # a type longer than that matches no filter (64 characters at most)


def _label_of(entry: dict[str, Any]) -> str | None:
    for name in ("label", "displayName", "subject"):
        if isinstance(entry.get(name), str) and entry[name]:
            return str(entry[name])
    for name, inner in NESTED_READ_FIELDS:
        value = _nested_field(entry, name, inner)
        if isinstance(value, str) and value:
            return value
    return None


class FolderListing:
    """The files of one sessions folder, listed once per call; each file is stat-ed only when asked."""

    __slots__ = ("archives", "index_bytes", "locks", "transcripts")

    def __init__(self) -> None:
        self.transcripts: dict[str, os.DirEntry[str]] = {}
        self.archives: dict[str, os.DirEntry[str]] = {}
        self.locks: set[str] = set()
        self.index_bytes = 0


def _stat_of(entry: os.DirEntry[str]) -> os.stat_result | None:
    """A listed file's status (cached by the entry), or None when it is gone."""
    try:
        return entry.stat(follow_symlinks=False)
    except OSError:
        return None


def _list_folder(paths: AgentPaths) -> FolderListing:
    """Sort a sessions folder's regular files into transcripts, archives and locks, with one scan."""
    listing = FolderListing()
    with os.scandir(paths.folder) as entries:
        for entry in entries:
            name = entry.name
            if name == INDEX_NAME:
                info = _stat_of(entry)
                listing.index_bytes = info.st_size if info else 0
            elif name.endswith(TRANSCRIPT_SUFFIX):
                if _is_regular(entry):
                    listing.transcripts[name] = entry
            elif name.endswith(TRANSCRIPT_SUFFIX + LOCK_SUFFIX):
                listing.locks.add(name[: -len(LOCK_SUFFIX)])
            elif ARCHIVE_PATTERN.search(name) and _is_regular(entry):
                listing.archives[name] = entry
    return listing


def _mtime(entry: os.DirEntry[str]) -> float:
    info = _stat_of(entry)
    return info.st_mtime if info else 0.0


def _size(entry: os.DirEntry[str]) -> int:
    info = _stat_of(entry)
    return info.st_size if info else 0


class Session:
    """One session of one agent: its sessionId and every key that points to it."""

    __slots__ = (
        "_key_types",
        "agent",
        "entries",
        "keys",
        "last_active",
        "protected",
        "session_id",
        "transcripts",
        "updated_at",
    )

    def __init__(self, agent: str, session_id: str, keys: list[str], entries: dict[str, Any]) -> None:
        self.agent = agent
        self.session_id = session_id
        self.keys = keys
        self.entries = entries
        self.updated_at: datetime | None = None  # the newest updatedAt of its keys
        self.last_active: datetime | None = None  # that, or else its transcript's mtime
        self.transcripts: list[str] = []
        self.protected: Protection | None = None
        self._key_types: list[str] | None = None

    @property
    def primary_key(self) -> str:
        return self.keys[0]

    @property
    def session_type(self) -> str:
        return self.key_types()[0]

    def key_types(self) -> list[str]:
        """The session type of each key, in key order; computed once."""
        if self._key_types is None or len(self._key_types) != len(self.keys):
            self._key_types = [_session_type_of(key) for key in self.keys]
        return self._key_types

    def idle_minutes(self, now: datetime) -> float | None:
        if self.last_active is None:
            return None
        return (now - self.last_active).total_seconds() / 60.0

    def is_stale(self, now: datetime, threshold_minutes: float) -> bool:
        idle = self.idle_minutes(now)
        return idle is None or idle > threshold_minutes


def _session_id_of(key: str, entry: Any) -> str:
    """The id that groups aliases; an entry without a usable sessionId stands alone under its key."""
    if isinstance(entry, dict):
        session_id = entry.get("sessionId")
        if isinstance(session_id, str) and session_id:
            return session_id
    return key


def _newest_update(entries: Any) -> datetime | None:
    newest = None
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        raw = entry.get("updatedAt")
        if type(raw) is int and 1e11 <= raw < 1e14:
            moment: datetime | None = EPOCH + timedelta(milliseconds=raw)
        else:
            moment = _parse_timestamp(raw)
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def _group_sessions(agent: str, entries: dict[str, Any]) -> dict[str, Session]:
    """Fold an index's keys into sessions by sessionId, keys in index order."""
    sessions: dict[str, Session] = {}
    for key, entry in entries.items():
        session_id = _session_id_of(key, entry)
        session = sessions.get(session_id)
        if session is None:
            sessions[session_id] = Session(agent, session_id, [key], {key: entry})
        else:
            session.keys.append(key)
            session.entries[key] = entry
    for session in sessions.values():
        session.last_active = session.updated_at = _newest_update(session.entries.values())
    return sessions


def _transcript_owner(name: str) -> str:
    """The sessionId a transcript's name gives: ``<id>.jsonl`` or ``<id>-topic-<n>.jsonl``."""
    return name[: -len(TRANSCRIPT_SUFFIX)].partition(TOPIC_MARK)[0]


def _transcript_name_of(paths: AgentPaths, session_file: Any) -> str | None:
    """The file name a ``sessionFile`` names in this folder, or None if it points elsewhere."""
    if not isinstance(session_file, str) or not session_file or "\0" in session_file:
        return None
    if "/" not in session_file and session_file.endswith(TRANSCRIPT_SUFFIX):
        return session_file  # the usual case: a plain name in the folder
    if os.path.isabs(session_file):
        parent, name = os.path.split(os.path.normpath(session_file))
        relocated = parent.endswith(os.sep + os.path.join(paths.agent, "sessions"))
        if os.path.realpath(parent) != paths.folder and not relocated:
            return None
    else:
        name = os.path.normpath(session_file)
        if os.sep in name or name in (".", ".."):
            return None
    return name if name.endswith(TRANSCRIPT_SUFFIX) else None


def _attach_transcripts(paths: AgentPaths, sessions: dict[str, Session], listing: FolderListing) -> None:
    """Give each session its transcript files: sessionFile, <id>.jsonl and <id>-topic-*.jsonl."""
    topics: dict[str, list[str]] = {}
    for name in listing.transcripts:
        owner = _transcript_owner(name)
        if owner + TRANSCRIPT_SUFFIX != name:  # <id>-topic-<n>.jsonl
            topics.setdefault(owner, []).append(name)
    present = listing.transcripts
    for session in sessions.values():
        names: list[str] = []
        for entry in session.entries.values():
            if isinstance(entry, dict) and "sessionFile" in entry:
                linked = _transcript_name_of(paths, entry["sessionFile"])
                if linked and linked in present and linked not in names:
                    names.append(linked)
        own = session.session_id + TRANSCRIPT_SUFFIX
        if own in present and own not in names and SESSION_ID_PATTERN.match(session.session_id):
            names.append(own)
        if topics and session.session_id in topics and SESSION_ID_PATTERN.match(session.session_id):
            names.extend(sorted(n for n in topics[session.session_id] if n not in names))
        session.transcripts = names
        if session.last_active is None and names:
            newest = max(_mtime(listing.transcripts[name]) for name in names)
            session.last_active = datetime.fromtimestamp(newest, tz=timezone.utc)


def _referenced_transcripts(paths: AgentPaths, entries: dict[str, Any], listing: FolderListing) -> set[str]:
    """Names of transcripts that some key of the index still points to."""
    session_ids = {_session_id_of(key, entry) for key, entry in entries.items()}
    referenced = set()
    for entry in entries.values():
        if isinstance(entry, dict):
            name = _transcript_name_of(paths, entry.get("sessionFile"))
            if name:
                referenced.add(name)
    for name in listing.transcripts:
        if name[: -len(TRANSCRIPT_SUFFIX)] in session_ids or _transcript_owner(name) in session_ids:
            referenced.add(name)
    return referenced


def _transcript_lock_held(paths: AgentPaths, transcript: str) -> bool:
    """Whether a run is writing the transcript: its ``.lock`` names a live process (or, unreadable,
    was touched in the last 30 s)."""
    holder = _inspect_lock(paths.file(transcript + LOCK_SUFFIX), live_pid_holds=True)
    return holder is not None and not holder.stale


def _refuse_protected(protection: Protection | None, session_id: str, key: str | None, force: bool) -> None:
    """ProtectedSession with the protection's message, unless there is none or ``force`` lifts it."""
    if protection is None or (force and protection in LIFTED_BY_FORCE):
        return
    who = f"session {session_id}" + (f" ({key})" if key else "")
    # Never an invitation to force: an agent that reads one forces the delete (issue 26 M8b).
    remedy = (
        "; it is kept: deleting it is the user's decision, not an agent's"
        if protection in LIFTED_BY_FORCE
        else ", not even with force"
    )
    raise ProtectedSession(f"{who} {PROTECTION_MESSAGES[protection]}{remedy}")


# --- Stores: AgentStore, what every kind does, AgentWalk ------------------------------------------


class AgentStore(ABC):
    """One agent's sessions as its gateway keeps them, and what the functions do with them.

    Two kinds, each a subclass with these methods: JsonStore (sessions.json, which the skill
    changes itself under the gateway's lock) and SqliteStore (the SQLite-era gateway's database,
    changed only through its CLI, §7). AgentStore.open chooses the kind, the one place that does; the
    rest of the module calls methods and never asks which kind it holds. AgentStore.read fills the
    fields at the start of a call; release empties them.
    """

    #: The kind's name in answers ("store") and in the audit log's commit records.
    kind: ClassVar[str]
    #: Session types that the gateway of this kind removes itself and will not let the skill delete.
    gateway_owned: ClassVar[tuple[str, ...]] = ()

    def __init__(self, call: Call, paths: AgentPaths) -> None:
        self.call = call
        self.config = call.config
        self.paths = paths
        self.entries: dict[str, Any] = {}
        self.document: IndexDocument | None = None
        self.listing = FolderListing()
        self.sessions: dict[str, Session] = {}
        self.unlisted: str | None = None  # what reading the store left out, and why (None: nothing)

    @classmethod
    def open(cls, call: Call, paths: AgentPaths) -> AgentStore:
        """The agent's store, of the kind its gateway keeps: the first of STORE_KINDS whose files the
        agent has (AgentStore.keeps), the one place that chooses the kind."""
        kind = next(kind for kind in STORE_KINDS.values() if kind.keeps(call.config, paths))
        return kind(call, paths)

    @classmethod
    @abstractmethod
    def keeps(cls, config: Config, paths: AgentPaths) -> bool:
        """Whether the agent's gateway keeps its sessions in this kind of store, as its files say."""

    @classmethod
    def open_all(cls, call: Call, every: list[AgentPaths], complete: bool) -> list[AgentStore]:
        """The stores of these agents, each kind having read ahead at once for all its agents of the
        call (AgentStore.prepare)."""
        stores = [AgentStore.open(call, paths) for paths in every]
        for kind in STORE_KINDS.values():
            kind.prepare(call, stores, complete)
        return stores

    @classmethod
    def prepare(cls, call: Call, stores: list[AgentStore], complete: bool) -> None:
        """Read ahead, once for all of a call's stores of this kind, what reading each one needs
        (by default nothing: each store reads its own). ``complete``: the call changes sessions or
        judges history rows by what the stores hold, so nothing may be left out that can be read."""
        return None

    @abstractmethod
    def read_entries(self, for_change: bool) -> tuple[dict[str, Any], IndexDocument | None]:
        """Key -> entry (READ_FIELDS); with ``for_change``, also the parse that a rewrite can reuse."""

    @abstractmethod
    def attach_transcripts(self) -> None:
        """Give each session the transcript files this store lets the skill archive."""

    def protection_of(self, session: Session) -> Protection | None:
        """Why a session of this store must stay: protection_by_rules, with the gateway's own types."""
        return self.protection_by_rules(session, self.gateway_owned)

    def protection_by_rules(self, session: Session, gateway_owned: tuple[str, ...]) -> Protection | None:
        """Why a session must not be pruned, or None. A session is protected when any key is.

        ``gateway_owned``: session types the agent's gateway removes itself (AgentStore.gateway_owned).
        """
        running = self.config.running_session_id
        if running and (running == session.session_id or running in session.keys):
            return Protection.RUNNING_CONVERSATION
        types = session.key_types()
        for session_type in types:
            if session_type in PROTECTED_TYPES:
                return PROTECTED_TYPES[session_type]
        if any(session_type in gateway_owned for session_type in types):
            return Protection.GATEWAY_OWNED
        if session.agent == MAIN_AGENT and any(t not in PRUNABLE_MAIN_AGENT_TYPES for t in types):
            return Protection.MAIN_AGENT_CONVERSATION
        if self.listing.locks:
            for name in session.transcripts:
                if name in self.listing.locks and _transcript_lock_held(self.paths, name):
                    return Protection.TRANSCRIPT_LOCKED
        return None

    def transcript_protection(self, referenced: set[str], name: str) -> Protection | None:
        """Why a transcript must stay where it is, or None: the rule of every path that archives or
        unlinks one, asked just before it does (its lock is read then, not from an earlier listing).
        ``force`` never lifts it."""
        if self.config.running_session_id and _transcript_owner(name) == self.config.running_session_id:
            return Protection.RUNNING_CONVERSATION
        if name in referenced:
            return Protection.REFERENCED_BY_A_KEY
        if _transcript_lock_held(self.paths, name):
            return Protection.TRANSCRIPT_LOCKED
        return None

    def held_session_ids(self) -> set[str] | PartlyHeld:
        """Every sessionId the store holds now (read anew); PartlyHeld when the reading left its
        cron runs out (their rows are then unknown, never gone)."""
        return self.holding(
            {_session_id_of(key, entry) for key, entry in self.read_entries(False)[0].items()}
        )

    def held(self) -> set[str] | PartlyHeld:
        """The sessionIds of the sessions read (AgentStore.read), as held_session_ids gives them."""
        return self.holding(set(self.sessions))

    def holding(self, ids: set[str]) -> set[str] | PartlyHeld:
        """``ids`` as what the store holds: PartlyHeld when its reading left something out."""
        return ids if self.unlisted is None else PartlyHeld(ids, self.unlisted)

    @abstractmethod
    def remove(
        self,
        planned: list[Session],
        reason: str,
        *,
        only_if_unchanged: bool,
        recheck: Callable[[Session], None] | None = None,
    ) -> list[Removal]:
        """Remove sessions, both their keys and their transcripts, following AuditTransaction.

        ``only_if_unchanged`` (prunes): a session touched since it was planned stays. ``recheck``
        may refuse a session once more where the store can check it at the last moment."""

    @abstractmethod
    def begin_removal(self, planned: list[Session], reason: str) -> RemovalPart:
        """A prune's removal of these sessions: done now, or begun and waiting for finish_removals."""

    @classmethod
    @abstractmethod
    def finish_removals(
        cls, call: Call, parts: list[RemovalPart]
    ) -> tuple[list[Removal], dict[str, SessionManagerError]]:
        """Finish the waiting parts of one call: the removals, and the failure of each agent that got none."""

    @abstractmethod
    def leftovers(self, session_id: str) -> Leftovers | None:
        """The transcripts a session no store holds left in this agent's folder, or None where the
        skill archives none."""

    @abstractmethod
    def clean(self, now: datetime, dry_run: bool, retention_days: float) -> Cleanup:
        """cleanup_orphans in this store: what it may touch, and nothing else."""

    @classmethod
    @abstractmethod
    def took_effect(cls, config: Config, deletion: Deletion, indexes: dict[str, dict[str, Any]]) -> bool:
        """Whether a deletion recorded with this kind happened (``indexes``: reads shared by a call)."""

    @classmethod
    @abstractmethod
    def check_undoable(cls, deletion: Deletion, paths: AgentPaths) -> None:
        """Refuse (StoreNotLive) to undo a deletion this kind made, if it has no way back."""

    @abstractmethod
    def check_restore(self, deletion: Deletion) -> None:
        """Refuse a restore into this store before anything changes (RestoreConflict, StoreNotLive)."""

    @abstractmethod
    def restore(self, deletion: Deletion) -> tuple[list[str], dict[str, str], list[str]]:
        """Put a checked deletion's keys and transcripts back (its conflicts checked again where
        they can arise meanwhile): (keys, transcripts renamed back, archives gone)."""

    def release(self) -> None:
        """Let what was read go, before the next agent is read."""
        self.sessions.clear()
        self.entries.clear()
        if self.document is not None:
            self.document.release()

    def expire_archives(
        self, now: datetime, retention_days: float, dry_run: bool, made_by: str | None = None
    ) -> list[dict[str, Any]]:
        """Delete the agent's archived transcripts older than the retention (with ``made_by``, only
        the ``.<made_by>.`` ones: "deleted" or "reset")."""
        items = []
        for name in sorted(self.listing.archives):
            match = ARCHIVE_PATTERN.search(name)
            if match is None or (made_by is not None and match.group(1) != made_by):
                continue
            made = _stamp_time(name)
            if made is None or (now - made).total_seconds() < retention_days * 86400:
                continue
            if not dry_run:
                try:
                    os.unlink(self.paths.file(name))
                except FileNotFoundError:
                    continue
            age = round((now - made).total_seconds() / 86400, 1)
            items.append({"agent": self.paths.agent, "file": name, "age_days": age})
        return items

    def leftover_transcripts(self, session_id: str) -> Leftovers:
        """``<id>.jsonl`` and ``<id>-topic-*.jsonl`` files of a session absent from the index.

        The rule of every path that archives: a transcript that any key still points to (by sessionFile
        or by its sessionId), that a live run holds, or that belongs to the running conversation is kept.
        """
        leftover = Session(self.paths.agent, session_id, [], {})
        _attach_transcripts(self.paths, {session_id: leftover}, self.listing)
        referenced = _referenced_transcripts(self.paths, self.entries, self.listing)
        result = Leftovers(self.paths, [], {})
        for name in leftover.transcripts:
            reason = self.transcript_protection(referenced, name)
            if reason:
                result.kept[name] = reason
            else:
                result.free.append(name)
        return result

    def summary(self) -> dict[str, Any]:
        return {"sessions": len(self.sessions), "store": self.kind}

    def disk_usage(self) -> dict[str, Any]:
        referenced = _referenced_transcripts(self.paths, self.entries, self.listing)
        listing = self.listing
        orphans = [name for name in listing.transcripts if name not in referenced]
        return {
            "index_bytes": listing.index_bytes,
            "transcript_files": len(listing.transcripts),
            "transcript_bytes": sum(_size(entry) for entry in listing.transcripts.values()),
            "archive_files": len(listing.archives),
            "archive_bytes": sum(_size(entry) for entry in listing.archives.values()),
            "orphaned_transcripts": len(orphans),
            "orphaned_bytes": sum(_size(listing.transcripts[name]) for name in orphans),
        }

    def stale_sessions(
        self, session_type: str | None, now: datetime, threshold: float
    ) -> tuple[int, list[Session], list[dict[str, Any]]]:
        """How many sessions of the type an agent has, its stale unprotected ones, and answer items for
        its stale protected ones."""
        chosen = [s for s in self.sessions.values() if session_type is None or session_type in s.key_types()]
        stale = [s for s in chosen if s.is_stale(now, threshold)]
        protected = [
            {"id": s.session_id, "agentId": s.agent, "key": _short(s.primary_key), "reason": s.protected}
            for s in stale
            if s.protected
        ]
        return len(chosen), [s for s in stale if not s.protected], protected

    def session_of(self, reference: str) -> Session | None:
        """The session a store holds under this sessionId or key, if any."""
        if _is_key(reference):
            if reference not in self.entries:
                return None
            return self.sessions.get(_session_id_of(reference, self.entries[reference]))
        return self.sessions.get(reference)

    def remove_one(self, session: Session, reason: str, force: bool) -> Removal:
        """Remove one session; its protection is checked again under the gateway's lock."""

        def recheck(fresh: Session) -> None:
            fresh.protected = self.protection_of(fresh)
            _refuse_protected(fresh.protected, fresh.session_id, fresh.primary_key, force)

        (removal,) = self.remove([session], reason, only_if_unchanged=False, recheck=recheck)
        if removal.skip is Skip.GATEWAY_REFUSED and not removal.removed_keys:
            raise ProtectedSession(f"session {session.session_id} ({session.primary_key}): {removal.skipped}")
        return removal

    def read(self, for_change: bool = False) -> AgentStore:
        """Read one agent into its store: sessions, folder listing, transcripts and protections.

        ``for_change`` keeps the parse with each entry's place in the file, for the rewrite to reuse.
        """
        self.entries, self.document = self.read_entries(for_change)
        self.listing = _list_folder(self.paths)
        self.sessions = _group_sessions(self.paths.agent, self.entries)
        self.attach_transcripts()
        for session in self.sessions.values():
            session.protected = self.protection_of(session)
        return self


class AgentWalk:
    """The selected agents, read one at a time, and the errors met on the way.

    Only one index is in memory at once: each agent's store is emptied before the next is read,
    so a caller keeps what it needs from a store while it holds it. An agent that cannot be read
    (or that a step fails for, see ``failed``) goes to ``errors``, fatal only when it was named.
    ``hold``, given an agent id, is a lock held from before the read until the next agent.
    ``complete``: read what only a slower path lists (AgentStore.prepare), as a prune must.
    """

    def __init__(
        self,
        call: Call,
        agent: str | None,
        for_change: bool = False,
        hold: Callable[[str], AbstractContextManager[Any]] | None = None,
        complete: bool = False,
    ) -> None:
        self.call, self.agent, self.for_change, self.hold = call, agent, for_change, hold
        self.complete = complete
        self.errors: list[dict[str, Any]] = []
        self.unlisted: dict[str, str] = {}  # per agent, what its reading left out and why
        self.selected = 0

    def __iter__(self) -> Iterator[AgentStore]:
        every = self.call.config.selected_agents(self.agent)
        stores = AgentStore.open_all(self.call, every, self.complete)
        self.selected = len(stores)
        for store in stores:
            try:
                with self.hold(store.paths.agent) if self.hold is not None else nullcontext():
                    yield store.read(self.for_change)
                    if store.unlisted is not None:
                        self.unlisted[store.paths.agent] = store.unlisted
                    store.release()
            except (StoreUnreadable, LockTimeout, GatewayUnavailable) as error:
                self.failed(store.paths.agent, error)

    def failed(self, agent: str, error: SessionManagerError) -> None:
        """Record one agent's failure; re-raised when the call named that agent."""
        if self.agent is not None:
            raise error
        self.errors.append(_error_record(error, agent=agent))

    def not_listed(self) -> dict[str, str]:
        """``not_listed`` for an answer (_not_listed) about the agents walked."""
        return _not_listed(self.unlisted)

    def every_agent_failed(self) -> dict[str, str]:
        """``error`` and ``error_type`` for an answer when no agent could be worked on (the call
        then fails as a whole, exit 1, with its answer); empty when one could."""
        failed = {record["agent"] for record in self.errors}
        if not self.selected or len(failed) < self.selected:
            return {}
        first = self.errors[0]
        return {
            "error": _cut(
                f"every agent failed ({len(failed)}); the first, {first['agent']}: {first['error']}",
                MESSAGE_CAP,
            ),
            "error_type": first["error_type"],
        }

    def clean(self, now: datetime, dry_run: bool, retention: float, result: dict[str, Any]) -> list[Mark]:
        """cleanup_orphans over every agent: each store's cleanup (AgentStore.clean) added to the
        answer's lists; the marks of the sessions it removed."""
        removed: list[Mark] = []
        for store in self:
            cleanup = store.clean(now, dry_run, retention)
            if cleanup.error is not None:
                self.failed(store.paths.agent, cleanup.error)
            removed += cleanup.marks
            for name, items in cleanup.items.items():
                result[name] += items
        return removed


class Skip(Enum):
    """Why a planned removal did not happen; the value is how answers say it (a detail may follow)."""

    ALREADY_GONE = "already gone"
    CHANGED_SINCE_READ = "changed since it was read"
    CHANGED_SINCE_LISTED = "changed since it was listed: kept"
    GATEWAY_REFUSED = "the gateway refused"  # its own message follows
    NO_ANSWER = "no answer from the gateway, so it may or may not be gone"  # the failure follows


class Removal:
    """What one deletion did to one session on the filesystem."""

    __slots__ = (
        "archived",
        "errors",
        "kept_transcripts",
        "mark",
        "not_started",
        "removed_keys",
        "session",
        "skip",
        "skip_detail",
    )

    def __init__(self, session: Session, removed_keys: list[str] | None = None) -> None:
        self.session = session
        self.mark = Mark(session.session_id, session.agent)
        self.removed_keys: list[str] = removed_keys or []
        self.archived: dict[str, str] = {}
        self.kept_transcripts: list[str] = []
        self.skip: Skip | None = None
        self.skip_detail: str | None = None
        self.errors: list[str] = []
        self.not_started = False  # the call's time budget ran out first: the next call deletes it

    def skip_because(self, reason: Skip, detail: str | None = None) -> None:
        self.skip, self.skip_detail = reason, detail

    @property
    def skipped(self) -> str | None:
        """Why it was not removed, as answers say it; None when nothing stopped it."""
        if self.skip is None:
            return None
        return self.skip.value if self.skip_detail is None else f"{self.skip.value}: {self.skip_detail}"


class Leftovers(NamedTuple):
    """Transcripts named after a session that no index holds: those free to archive, and those kept."""

    paths: AgentPaths
    free: list[str]
    kept: dict[str, Protection]


class RemovalPart(NamedTuple):
    """One agent's share of a prune: done at once (``waiting`` False), or waiting, audit intent
    written and marks queued, for the one removal its kind of store makes for every agent of the
    call (AgentStore.finish_removals)."""

    paths: AgentPaths
    transaction: AuditTransaction
    removals: list[Removal]
    waiting: bool


class Cleanup(NamedTuple):
    """What cleanup_orphans did in one store: answer items per list, the marks of removed keys, and
    the error that stopped it (the items of the steps before it stand)."""

    items: dict[str, list[dict[str, Any]]]
    marks: list[Mark]
    error: SessionManagerError | None = None


class PartlyHeld(NamedTuple):
    """The sessionIds a store was read to hold, when its reading left the cron runs out (the
    gateway's protocol hides them and the CLI could not list them, §7), and why."""

    ids: set[str]
    reason: str


#: The history service's session_type of a cron job's or cron run's row (§5: from the key).
CRON_ROW_TYPES = ("openclaw_cron", "openclaw_run")


def _release_for_dry_run(session: Session) -> Removal:
    """What removing the session would do; lets go of its parsed entries, not needed for that."""
    removal = Removal(session, removed_keys=list(session.keys))
    removal.archived = {name: "" for name in session.transcripts}
    session.entries = {}
    return removal


def _recorded_kind(deletion: Deletion) -> type[AgentStore]:
    """The kind of store a recorded deletion was made in; NothingToRestore for one this version does
    not know (the record stays listed, see list_deleted)."""
    kind = STORE_KINDS.get(deletion.store)
    if kind is None:
        raise NothingToRestore(
            f"the deletion of {deletion.session_id} was made in a kind of store this version does not know "
            f"({_echo(deletion.store)}); it cannot be undone here, nothing was changed"
        )
    return kind


# --- The JSON store: JsonStore, reading sessions.json ---------------------------------------------


class JsonStore(AgentStore):
    """An agent whose gateway keeps its sessions in sessions.json (up to OpenClaw 2026.7): the skill
    reads and rewrites the index itself under the gateway's lock and archives the transcripts."""

    kind = JSON_STORE

    @classmethod
    def keeps(cls, config: Config, paths: AgentPaths) -> bool:
        """Always: sessions.json is the store of any agent that has no newer one (the last of STORE_KINDS)."""
        return True

    def read_entries(self, for_change: bool) -> tuple[dict[str, Any], IndexDocument | None]:
        document = _read_index_document(self.paths) if for_change else None
        return (document.entries if document is not None else _load_index(self.paths)), document

    def attach_transcripts(self) -> None:
        _attach_transcripts(self.paths, self.sessions, self.listing)

    def remove(
        self,
        planned: list[Session],
        reason: str,
        *,
        only_if_unchanged: bool,
        recheck: Callable[[Session], None] | None = None,
    ) -> list[Removal]:
        moment = _utc_now()  # the audit records' time and the archives' stamp
        transaction = AuditTransaction.begin(self.paths.agent, reason, moment=moment)
        return self.remove_from_index(planned, transaction, moment, only_if_unchanged, recheck)

    def begin_removal(self, planned: list[Session], reason: str) -> RemovalPart:
        moment = _utc_now()
        transaction = AuditTransaction.begin(self.paths.agent, reason, moment=moment)
        removals = self.remove_from_index(planned, transaction, moment, True, None)
        return RemovalPart(self.paths, transaction, removals, waiting=False)

    @classmethod
    def finish_removals(
        cls, call: Call, parts: list[RemovalPart]
    ) -> tuple[list[Removal], dict[str, SessionManagerError]]:
        return [removal for part in parts for removal in part.removals], {}

    def leftovers(self, session_id: str) -> Leftovers | None:
        return self.leftover_transcripts(session_id)

    def clean(self, now: datetime, dry_run: bool, retention_days: float) -> Cleanup:
        items: dict[str, list[dict[str, Any]]] = {}
        marks: list[Mark] = []
        try:
            items["stale_locks_removed"] = self.break_stale_lock(dry_run)
            items["archived_orphans"], items["skipped"] = self.archive_orphans(dry_run)
            items["removed_keys"], marks = self.remove_keys_without_transcripts(now, dry_run)
            items["deleted_archives"] = self.expire_archives(now, retention_days, dry_run)
        except SessionManagerError as error:
            return Cleanup(items, marks, error)
        return Cleanup(items, marks)

    @classmethod
    def took_effect(cls, config: Config, deletion: Deletion, indexes: dict[str, dict[str, Any]]) -> bool:
        """False for a deletion whose keys are all still in the index (the run died before writing)."""
        if not deletion.keys:
            return True
        if deletion.agent not in indexes:
            try:
                indexes[deletion.agent] = _load_index(config.agent_paths(deletion.agent))
            except SessionManagerError:
                indexes[deletion.agent] = {}
        entries = indexes[deletion.agent]
        return not all(
            key in entries and entries[key] == _recorded_entry(deletion, key, light=True)
            for key in deletion.keys
        )

    @classmethod
    def check_undoable(cls, deletion: Deletion, paths: AgentPaths) -> None:
        """Every deletion from sessions.json can be undone: the audit log holds each entry's text."""

    def check_restore(self, deletion: Deletion) -> None:
        restorable = {key: deletion.entries[key] for key in deletion.keys if key in deletion.entries}
        _refuse_restore_conflicts(self.paths, deletion, restorable, _load_index(self.paths))

    def restore(self, deletion: Deletion) -> tuple[list[str], dict[str, str], list[str]]:
        restorable = {key: deletion.entries[key] for key in deletion.keys if key in deletion.entries}
        with StateFolder(self.config).transcripts_turn(self.paths.agent):
            renamed, missing = self.restore_files_and_keys(deletion, restorable)
        return list(restorable), renamed, missing

    def release_parsed_entries(self, planned: list[Session]) -> None:
        """Let the parsed entries of sessions about to go be freed: from here on their recorded text
        and fingerprints stand for them (a 100,000-session prune would otherwise hold them all)."""
        for session in planned:
            for key in session.keys:
                if key in self.entries:
                    self.entries[key] = None
            session.entries = dict.fromkeys(session.keys)

    def archive_session_transcripts(
        self, removal: Removal, still_referenced: set[str], moment: datetime
    ) -> None:
        """Archive a removed session's transcripts, except those the transcript rule keeps."""
        for name in removal.session.transcripts:
            if self.transcript_protection(still_referenced, name) is not None:
                removal.kept_transcripts.append(name)
                continue
            try:
                removal.archived[name] = archive_transcript(self.paths, name, moment)
            except FileNotFoundError:
                pass  # the gateway archived or removed it first
            except OSError as error:
                removal.errors.append(f"could not archive {name}: {error.strerror or error}")

    def remove_from_index(
        self,
        planned: list[Session],
        transaction: AuditTransaction,
        moment: datetime,
        only_if_unchanged: bool,
        recheck: Callable[[Session], None] | None,
    ) -> list[Removal]:
        """Remove sessions' keys from sessions.json under the gateway's lock, then archive their
        transcripts (stamped ``moment``). The steps and what a crash leaves after each are
        AuditTransaction's."""
        config = self.config
        fingerprints: dict[str, int] = {}
        self.call.audit.append_stream(_intent_pieces(transaction, planned, self.document, fingerprints))
        self.release_parsed_entries(planned)
        removals = [Removal(session) for session in planned]
        self.call.outbox.queue_removal_marks(transaction, removals)
        marks = [removal.mark for removal in removals]
        change = self.index_change(transaction, removals, fingerprints, only_if_unchanged, recheck, moment)
        try:
            written: IndexDocument = rewrite_index(self.paths, config, change, earlier=self.document)
        except SessionManagerError:
            self.call.outbox.confirm(transaction.txn, marks, [])
            self.call.audit.append([transaction.record("abort", {})])
            raise
        self.call.outbox.confirm(
            transaction.txn, marks, [removal.mark for removal in removals if removal.removed_keys]
        )
        self.archive_removed_transcripts(transaction, written, removals, moment)
        return removals

    def break_stale_lock(self, dry_run: bool) -> list[dict[str, Any]]:
        """Break the agent's index lock if its holder is gone or it is too old (docs/FORMATS.md §3)."""
        lock = self.paths.index_file() + LOCK_SUFFIX
        holder = _inspect_lock(lock)
        if holder is None or not holder.stale:
            return []
        if not dry_run:
            _break_stale_lock(lock)
        return [{"agent": self.paths.agent, "holder": holder.describe()}]

    def orphan_fate(
        self, referenced: set[str], name: str, twins: dict[tuple[int, int], str]
    ) -> tuple[str, str | None] | None:
        """What becomes of one unreferenced transcript: ("twin", archive) when a crashed rename left
        it beside its archive, ("skip", reason), ("archive", None); None when it is already gone."""
        info = _stat_of(self.listing.transcripts[name])
        if info is None:
            return None
        reason = self.transcript_protection(referenced, name)
        if reason is None and time.time() - info.st_mtime < ORPHAN_MIN_AGE_SECONDS:
            reason = Protection.RECENTLY_MODIFIED
        if reason is not None:
            return "skip", reason
        twin = twins.get((info.st_dev, info.st_ino))
        if twin is not None and twin.startswith(name + "."):
            return "twin", twin
        return "archive", None

    def archive_orphans(self, dry_run: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Archive the transcripts no key points to (items of what was archived, and of what was kept)."""
        paths, moment = self.paths, _utc_now()
        referenced = _referenced_transcripts(paths, self.entries, self.listing)
        orphans = sorted(name for name in self.listing.transcripts if name not in referenced)
        twins = _archives_by_inode(self.listing) if orphans else {}
        archived: dict[str, str] = {}
        items, skipped = [], []
        for name in orphans:
            fate = self.orphan_fate(referenced, name, twins)
            if fate is None:
                continue
            if fate[0] == "skip":
                skipped.append({"agent": paths.agent, "file": name, "reason": fate[1]})
                continue
            if fate[0] == "twin" and not dry_run:
                os.unlink(paths.file(name))  # a rename by link + unlink was cut between its steps: finish it
            archive = fate[1] or ("" if dry_run else archive_transcript(paths, name, moment))
            archived[name] = archive
            items.append({"agent": paths.agent, "file": name, "archive": archive or None})
        if not dry_run:
            self.call.audit.record_late_archives(paths.agent, archived, "orphan")
        return items, skipped

    def remove_keys_without_transcripts(
        self, now: datetime, dry_run: bool
    ) -> tuple[list[dict[str, Any]], list[Mark]]:
        """Delete stale unprotected sessions that have no transcript left (items, and their marks)."""
        agent = self.paths.agent
        missing = [
            session
            for session in self.sessions.values()
            if not session.transcripts
            and not session.protected
            and session.is_stale(now, self.config.stale_minutes)
        ]
        if dry_run or not missing:
            return [{"agent": agent, "id": s.session_id, "keys": s.keys, "would": True} for s in missing], []
        removals = self.remove(missing, "orphan_cleanup", only_if_unchanged=True)
        done = [removal for removal in removals if removal.removed_keys]
        items = [{"agent": agent, "id": r.session.session_id, "keys": r.removed_keys} for r in done]
        return items, [removal.mark for removal in done]

    def index_change(
        self,
        transaction: AuditTransaction,
        removals: list[Removal],
        fingerprints: dict[str, int],
        only_if_unchanged: bool,
        recheck: Callable[[Session], None] | None,
        moment: datetime,
    ) -> Callable[[IndexDocument], IndexDocument]:
        """The change rewrite_index makes under the lock: check each session again, flush the commit
        record, then remove the keys."""

        def change(document: IndexDocument) -> IndexDocument:
            reused = document is self.document
            keys_by_session = {} if reused else _keys_by_session(document.entries)
            committed: dict[str, Any] = {}
            for removal in removals:
                fresh = (
                    removal.session if reused else _fresh_session(document, removal.session, keys_by_session)
                )
                if recheck is not None and fresh.keys:
                    recheck(fresh)
                known = None if reused else fingerprints
                part = _commit_part(document, removal, fresh, known, only_if_unchanged, moment)
                if part is not None:
                    committed[fresh.session_id] = part
            if committed:
                # Flushed to disk with the intent before it, ahead of the index that it describes.
                self.call.audit.append([transaction.record("commit", committed)], sync=True)
            for removal in removals:
                for key in removal.removed_keys:
                    document.remove(key)
            return document

        return change

    def archive_removed_transcripts(
        self,
        transaction: AuditTransaction,
        written: IndexDocument,
        removals: list[Removal],
        moment: datetime,
    ) -> None:
        """Archive the transcripts of what was removed, except any the written index still names."""
        still_referenced = _referenced_transcripts(self.paths, written.entries, self.listing)
        archived: dict[str, Any] = {}
        for removal in removals:
            if removal.removed_keys:
                self.archive_session_transcripts(removal, still_referenced, moment)
                archived[removal.session.session_id] = {"transcripts": removal.archived}
        self.call.audit.record_after_commit([transaction.record("archived", archived)], removals)

    def restore_files_and_keys(
        self, deletion: Deletion, restorable: dict[str, Any]
    ) -> tuple[dict[str, str], list[str]]:
        """Rename the archives back, then put the keys back under the gateway's lock; undo the renames
        if the keys cannot return."""
        renamed, missing = _rename_archives_back(self.paths, deletion)

        def change(document: IndexDocument) -> None:
            clash = [key for key in restorable if key in document.entries]
            if clash:
                raise RestoreConflict(
                    f"key {clash[0]} of session {deletion.session_id} was created again while restoring; "
                    "nothing was restored"
                )
            for key, text in restorable.items():
                document.add(
                    key, _recorded_entry(deletion, key), value_text=text if isinstance(text, str) else None
                )

        try:
            rewrite_index(self.paths, self.config, change)
        except SessionManagerError:
            for original, archive in renamed.items():
                _rename_without_overwrite(self.paths.file(original), self.paths.file(archive))
            raise
        return renamed, missing


_WHITESPACE = re.compile(r"[ \t\n\r]*")
# The only fields the skill reads from an entry. A parse keeps just these (a 100,000-session index
# would otherwise need more memory than a plain json.load); every field, known or not, still
# reaches each rewrite, the audit log and restores through the entry's exact text.
READ_FIELDS = (
    "sessionId",
    "updatedAt",
    "sessionFile",
    "label",
    "displayName",
    "subject",
    "model",
    "contextTokens",
)
NESTED_READ_FIELDS = (("origin", "label"), ("deliveryContext", "to"))


def _project_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry reduced to the fields the skill reads (READ_FIELDS); the nested ones are kept flat,
    as ``origin.label`` and ``deliveryContext.to``, which spares a dict an entry."""
    kept = {name: entry[name] for name in READ_FIELDS if name in entry}
    for name, inner in NESTED_READ_FIELDS:
        value = entry.get(name)
        if isinstance(value, dict) and inner in value:
            kept[f"{name}.{inner}"] = value[inner]
    return kept


def _nested_field(entry: dict[str, Any], name: str, inner: str) -> Any:
    """``entry[name][inner]`` of a full entry, or its flat copy in a projected one."""
    flat = entry.get(f"{name}.{inner}")
    if flat is not None:
        return flat
    value = entry.get(name)
    return value.get(inner) if isinstance(value, dict) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (the gateway's JSON.parse rejects it)")


def _finite_or_none(text: str) -> float | None:
    """A JSON number as a float; one too large for a double (1e400) reads as null, as in Node."""
    value = float(text)
    return value if value - value == 0 else None


# The one decoder for what the gateway and the skill write: strict JSON only (NaN and Infinity are
# refused, as Node's JSON.parse refuses them), so that nothing read can print as non-JSON.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_or_none)


def _loads_strict(text: str | bytes) -> Any:
    """Parse strict JSON; a document nested too deep for the parser is a ValueError too."""
    try:
        return _DECODER.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _gateway_json(value: Any, indent: int | None = None) -> str:
    """JSON text as Node's JSON.stringify writes it: non-ASCII kept, lone surrogates escaped."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


class IndexDocument:
    """A parsed sessions.json that remembers where each entry's text lies in the file.

    Rewriting joins the untouched entries' original text, so a diff of the file before and after
    shows only the removed or added entries, whatever number formatting the gateway used. Offsets
    into the one source text, not copies, keep the memory near that of a plain parse.
    """

    __slots__ = ("added", "changed", "entries", "signature", "spans", "text")

    def __init__(
        self,
        entries: dict[str, Any],
        text: str = "",
        spans: dict[str, tuple[int, int, int, int]] | None = None,
        signature: tuple[int, ...] | None = None,
    ) -> None:
        self.entries = entries
        self.text = text
        self.spans = spans if spans is not None else {}
        self.added: dict[str, tuple[str, str]] = {}
        self.signature = signature
        self.changed = False

    def key_text(self, key: str) -> str:
        if key in self.added:
            return self.added[key][0]
        start, end, _, _ = self.spans[key]
        return self.text[start:end]

    def value_text(self, key: str) -> str:
        """The entry exactly as the file holds it (or as it will be written, for an added one)."""
        if key in self.added:
            return self.added[key][1]
        _, _, start, end = self.spans[key]
        return self.text[start:end]

    def remove(self, key: str) -> Any:
        self.changed = True
        self.spans.pop(key, None)
        self.added.pop(key, None)
        return self.entries.pop(key)

    def add(self, key: str, entry: Any, value_text: str | None = None) -> None:
        """Add an entry; ``value_text`` is its exact former text (a restore), else the gateway's layout."""
        self.changed = True
        self.entries[key] = entry
        self.spans.pop(key, None)
        if value_text is None:
            value_text = _gateway_json(entry, indent=2).replace("\n", "\n  ")
        self.added[key] = (_gateway_json(key), value_text)

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The index in the gateway's ``JSON.stringify(store, null, 2)`` layout, in pieces."""
        if not self.entries:
            yield b"{}"
            return
        pieces: list[str] = []
        length, separator = 0, "{\n  "
        for key in self.entries:
            piece = f"{separator}{self.key_text(key)}: {self.value_text(key)}"
            separator = ",\n  "
            pieces.append(piece)
            length += len(piece)
            if length >= size:
                yield "".join(pieces).encode("utf-8")
                pieces, length = [], 0
        pieces.append("\n}")
        yield "".join(pieces).encode("utf-8")

    def render(self) -> bytes:
        return b"".join(self.chunks())

    def release(self) -> None:
        """Let the text and the parsed entries go (a large index is most of a call's memory)."""
        self.entries, self.text, self.spans, self.added = {}, "", {}, {}


def _scan_object(text: str) -> IndexDocument | None:
    """Walk a top-level object entry by entry; None when it is not one or repeats a key."""
    skip = _WHITESPACE.match
    position = skip(text, 0).end()  # type: ignore[union-attr]
    if text[position : position + 1] != "{":
        return None
    entries: dict[str, Any] = {}
    spans: dict[str, tuple[int, int, int, int]] = {}
    position = skip(text, position + 1).end()  # type: ignore[union-attr]
    if text[position] != "}":
        while True:
            if text[position] != '"':
                return None
            key_start = position
            key, position = json.decoder.scanstring(text, position + 1)  # type: ignore[attr-defined]
            if key in entries:
                return None
            key_end = position
            position = skip(text, position).end()  # type: ignore[union-attr]
            if text[position] != ":":
                return None
            value_start = position = skip(text, position + 1).end()  # type: ignore[union-attr]
            entry, position = _DECODER.raw_decode(text, position)
            entries[key] = _project_entry(entry) if type(entry) is dict else entry
            spans[key] = (key_start, key_end, value_start, position)
            position = skip(text, position).end()  # type: ignore[union-attr]
            if text[position] == "}":
                break
            if text[position] != ",":
                return None
            position = skip(text, position + 1).end()  # type: ignore[union-attr]
    if skip(text, position + 1).end() != len(text):  # type: ignore[union-attr]
        return None
    return IndexDocument(entries, text, spans)


def parse_index_text(text: str, path: str) -> IndexDocument:
    """Parse an index, keeping every entry's place in the text; refuse anything but a JSON object.

    Parsed entries hold only READ_FIELDS (see there); the document's texts keep everything.
    """
    try:
        with _cycle_collection(False):
            document = _scan_object(text)
    except (ValueError, IndexError, RecursionError):
        document = None
    if document is not None:
        return document
    # The fast scanner refused it: let the standard parser say what is wrong, or, for valid JSON
    # it cannot splice (duplicate keys), fall back to re-serialising every entry.
    try:
        parsed = _loads_strict(text)
    except ValueError as error:
        raise StoreUnreadable(
            f"{path} is not valid JSON ({error}); it was left as it is. Repair it by hand or "
            "restore it from a backup before sessions can be managed",
            path,
        ) from None
    if not isinstance(parsed, dict):
        raise StoreUnreadable(
            f"{path} holds {_type_name(parsed)} instead of an object of sessions; it was left as it is",
            path,
        )
    fallback = IndexDocument({})
    for key, entry in parsed.items():
        fallback.add(key, entry)
    fallback.changed = False
    return fallback


def _signature_of(info: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file is replaced or written: inode, size, mtime and ctime in ns."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_text(path: str) -> tuple[str, tuple[int, ...]] | None:
    """The file's text and signature, or None when it does not exist (an agent with no sessions)."""
    try:
        with open(_open_regular(path), "rb") as handle:
            signature = _signature_of(os.fstat(handle.fileno()))
            raw = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoreUnreadable(f"cannot read {path}: {error.strerror}; it was left as it is", path) from None
    try:
        return raw.decode("utf-8"), signature
    except UnicodeDecodeError as error:
        raise StoreUnreadable(
            f"{path} is not UTF-8 text (byte {error.start}); it was left as it is", path
        ) from None


def _file_signature(path: str) -> tuple[int, ...] | None:
    try:
        return _signature_of(os.stat(path))
    except FileNotFoundError:
        return None


def _read_index_document(paths: AgentPaths) -> IndexDocument:
    """Read an agent's index for a rewrite; a missing file is an empty index."""
    read = _read_text(paths.index_file())
    if read is None:
        return IndexDocument({})
    document = parse_index_text(read[0], paths.index)
    document.signature = read[1]
    return document


def _load_index(paths: AgentPaths) -> dict[str, Any]:
    """Read an agent's index for a listing: key -> entry (READ_FIELDS only); the text is let go."""
    return _read_index_document(paths).entries


# --- The JSON store: the gateway's lock -----------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


class LockHolder(NamedTuple):
    """What a lock file says about its holder, and whether that holder is gone."""

    pid: int | None
    created_at: str | None
    stale: bool

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        since = f" since {self.created_at}" if self.created_at else ""
        return who + since


def _parse_lock_content(raw: bytes) -> tuple[int | None, str | None, datetime | None]:
    try:
        content = _loads_strict(raw)
    except ValueError:  # UnicodeDecodeError included
        return None, None, None
    if not isinstance(content, dict):
        return None, None, None
    pid = content.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    created_at = content.get("createdAt") if isinstance(content.get("createdAt"), str) else None
    return pid, created_at, _parse_timestamp(created_at) if created_at else None


def _inspect_lock(
    path: str, stale_after: float = LOCK_STALE_SECONDS, live_pid_holds: bool = False
) -> LockHolder | None:
    """Read a gateway lock file; None when there is none. Staleness follows docs/FORMATS.md §3.

    ``live_pid_holds``: a lock whose process is alive is held however old it is (a transcript's
    lock lasts as long as its run, often minutes).
    """
    try:
        with open(_open_regular(path, follow_symlinks=False), "rb") as handle:
            info = os.fstat(handle.fileno())
            raw = handle.read(4096)
    except FileNotFoundError:
        return None
    except OSError:
        # Not a regular file (a FIFO, a link) or unreadable: judged by its age, like unreadable content.
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        directory = stat.S_ISDIR(info.st_mode)  # no lock at all: _break_stale_lock says so at once
        return LockHolder(None, None, stale=directory or time.time() - info.st_mtime > stale_after)
    pid, created_at, created = _parse_lock_content(raw)
    if pid is None or created is None:
        return LockHolder(pid, created_at, stale=time.time() - info.st_mtime > stale_after)
    alive = _pid_alive(pid)
    too_old = not (live_pid_holds and alive) and (_utc_now() - created).total_seconds() > stale_after
    return LockHolder(pid, created_at, stale=too_old or not alive)


def _new_temporary(path: str, mode: int) -> tuple[str, int]:
    """A new temporary file beside ``path`` (another name when one is taken, by a directory say).

    Its name starts with the writer's pid in 8 hex digits (_temporary_writer), so that a temporary
    killed before it held anything can still be told from one a live process is writing.
    """
    folder, name = os.path.split(path)
    for _ in range(100):
        temporary = os.path.join(folder, f".{name}.{os.getpid():08x}{os.urandom(2).hex()}.tmp")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", path)


def _abandoned_temporaries(folder: str, *names: str) -> list[str]:
    """Temporary files that _new_temporary made for any of ``names`` in ``folder`` and that were
    never renamed (regular files only: anything else at such a name is not the skill's)."""
    pattern = re.compile(r"^\.(" + "|".join(map(re.escape, names)) + r")\.[0-9a-f]{12}\.tmp$")
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if pattern.match(entry.name) and _is_regular(entry)]


def _remove_files(folder: str, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            pass


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _lock_content() -> bytes:
    """What the gateway's lock file holds (§3); always the same length for one process."""
    return json.dumps({"pid": os.getpid(), "createdAt": _iso_utc(_utc_now())}).encode("ascii")


class HeldLock:
    """The gateway's lock file as this call created it, kept open so that it can be refreshed.

    The gateway takes a lock whose ``createdAt`` is over 30 s old for stale (§3). While held, the
    lock is rewritten every LOCK_REFRESH_SECONDS (refresh), and before the index is replaced
    ``confirm`` makes sure the file is still this call's: a call stalled past 30 s (a stop, a
    swap storm) finds the gateway's lock in its place and changes nothing.
    """

    def __init__(self, path: str, descriptor: int) -> None:
        info = os.fstat(descriptor)
        self.path, self.descriptor, self.identity = path, descriptor, (info.st_dev, info.st_ino)

    def still_ours(self) -> bool:
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.identity

    def confirm(self) -> None:
        """LockTimeout unless the lock file is still the one this call created."""
        if not self.still_ours():
            raise LockTimeout(
                f"{self.path} was taken over while this call held it (it stalled for over "
                f"{LOCK_STALE_SECONDS:g} s, so the gateway judged the lock stale); sessions.json was not "
                "replaced and nothing was changed. Try again",
                self.path,
            )

    def refresh(self) -> None:
        """A new ``createdAt``, written in place (the gateway reads the file, never a half of it)."""
        if self.still_ours():
            os.pwrite(self.descriptor, _lock_content(), 0)

    @contextmanager
    def kept_fresh(self) -> Iterator[None]:
        """Refresh the lock every LOCK_REFRESH_SECONDS while the block runs."""
        import threading

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(LOCK_REFRESH_SECONDS):
                try:
                    self.refresh()
                except OSError:
                    return

        beater = threading.Thread(target=beat, name="lock-refresh", daemon=True)
        beater.start()
        try:
            yield
        finally:
            stop.set()
            beater.join()

    def release(self) -> None:
        try:
            if self.still_ours():
                os.unlink(self.path)
        finally:
            os.close(self.descriptor)


def _lock_failure(verb: str, path: str, error: OSError) -> StoreWriteFailed:
    return StoreWriteFailed(f"cannot {verb} the lock {path}: {error.strerror or error}; nothing was changed")


def _create_lock_in_place(path: str) -> HeldLock | None:
    """Create the lock file exclusively and write it (a file system without hard links)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    except OSError as error:
        raise _lock_failure("create", path, error) from None
    try:
        _write_all(descriptor, _lock_content())
        return HeldLock(path, descriptor)
    except OSError as error:
        os.close(descriptor)
        os.unlink(path)
        raise _lock_failure("write", path, error) from None


def _try_create_lock(path: str) -> HeldLock | None:
    """Create the lock file exclusively; None when another process holds it.

    The lock appears whole: its content goes into a temporary file that is then linked at the
    lock's name. A lock created empty and written after (a kill in between) would count as held
    for 30 s by its mtime (§3), stalling the gateway and the next call alike.
    """
    try:
        temporary, descriptor = _new_temporary(path, 0o600)
    except OSError as error:
        raise _lock_failure("create", path, error) from None
    try:
        _write_all(descriptor, _lock_content())
        os.link(temporary, path)
    except FileExistsError:
        os.close(descriptor)
        return None
    except FileNotFoundError:  # swept by a call that judged it a dead writer's (_left_by_the_dead)
        os.close(descriptor)
        return None
    except OSError as error:
        os.close(descriptor)
        if error.errno in LINKLESS_ERRNOS:
            return _create_lock_in_place(path)
        verb = "create" if error.filename else "write"  # os.link names its files, a write does not
        raise _lock_failure(verb, path, error) from None
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
    return HeldLock(path, descriptor)


def _break_stale_lock(path: str) -> None:
    """Remove a stale lock without removing a fresh one that replaced it in the meantime.

    A directory at the lock's name is no lock (the gateway cannot write either): LockTimeout.
    """
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise LockTimeout(
                f"{path} is a directory, not the gateway's lock file; the gateway cannot write its index "
                "either. Remove it by hand",
                path,
            )
    except FileNotFoundError:
        return
    aside = f"{path}.stale.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    holder = _inspect_lock(aside)
    if holder is not None and not holder.stale:
        # Another process broke the stale lock and took a fresh one between our read and our
        # rename: give its lock back (link fails if yet another lock appeared; it keeps its own).
        try:
            os.link(aside, path)
        except OSError:
            pass
    os.unlink(aside)


@contextmanager
def gateway_lock(path: str, timeout: float) -> Iterator[HeldLock]:
    """Hold the gateway's ``sessions.json.lock``: exclusive create, stale-lock breaking, back-off;
    kept fresh while held (HeldLock)."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        held = _try_create_lock(path)
        if held is not None:
            break
        holder = _inspect_lock(path)
        if holder is not None and holder.stale:
            _break_stale_lock(path)
            continue
        if time.monotonic() >= deadline:
            who = holder.describe() if holder else "another process"
            raise LockTimeout(
                f"{path} is held by {who}; gave up after {timeout:g} s. The gateway is writing; "
                "try again shortly",
                path,
            )
        attempt += 1
        pause = min(LOCK_RETRY_STEP_SECONDS * attempt, LOCK_RETRY_MAX_SECONDS)
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    try:
        with held.kept_fresh():
            yield held
    finally:
        held.release()


# --- The JSON store: rewriting, removing, restoring -----------------------------------------------


def rewrite_index(
    paths: AgentPaths,
    config: Config,
    change: Callable[[IndexDocument], Any],
    earlier: IndexDocument | None = None,
) -> Any:
    """Run ``change`` on a fresh read of the index under the gateway's lock, and write the result.

    The one path through which the skill changes sessions.json: lock, re-read, change, atomic
    write, release. ``change`` must be quick: the gateway's own writes wait while it runs.
    ``earlier``, a parse of the index made before the lock, is used only when the file is provably
    the one it was parsed from (same inode, size, mtime and ctime to the nanosecond); any write,
    in place or by rename, changes that signature, and then the index is read again.
    """
    target = paths.index_file()
    folder, lock = os.path.dirname(target), target + LOCK_SUFFIX
    abandoned = _abandoned_temporaries(folder, os.path.basename(target), os.path.basename(lock))
    with gateway_lock(lock, config.lock_timeout) as held:
        # An index temporary exists only while its writer holds the lock: now that we hold it, any
        # left over belongs to a writer that died between writing and renaming. A lock temporary
        # (_try_create_lock) goes once the process that wrote it is gone.
        _remove_files(folder, [name for name in abandoned if _left_by_the_dead(folder, name, lock)])
        unchanged = earlier is not None and earlier.signature == _file_signature(target)
        document = earlier if unchanged and earlier is not None else _read_index_document(paths)
        earlier = None
        result = change(document)
        if document.changed:
            try:
                write_atomic(target, document.chunks(), before_replace=held.confirm)
            except OSError as error:  # not a LockTimeout (the lock taken over): that is no OSError
                raise StoreWriteFailed(
                    f"could not write {target}: {error.strerror or error}; the index was left as it was"
                ) from None
    return result


def _left_by_the_dead(folder: str, name: str, lock: str) -> bool:
    """Whether a temporary found beside the index before taking ``lock`` is a dead writer's.

    A lock temporary is judged by the pid it holds; one killed before it held a pid (empty or
    half written) by the pid its name carries, else by its age.
    """
    if not name.startswith(f".{os.path.basename(lock)}."):
        return True
    holder = _inspect_lock(os.path.join(folder, name))
    if holder is None or holder.stale:
        return holder is not None
    return holder.pid is None and not _pid_alive(_temporary_writer(name))


def _keys_by_session(entries: dict[str, Any]) -> dict[str, list[str]]:
    """Every session id of an index with the keys that point to it, in one pass."""
    by_session: dict[str, list[str]] = {}
    for key, entry in entries.items():
        by_session.setdefault(_session_id_of(key, entry), []).append(key)
    return by_session


def _fresh_session(
    document: IndexDocument, planned: Session, keys_by_session: dict[str, list[str]]
) -> Session:
    """The planned session as the index holds it now: every key that points to its sessionId."""
    keys = keys_by_session.get(planned.session_id, [])
    session = Session(planned.agent, planned.session_id, keys, {k: document.entries[k] for k in keys})
    session.transcripts = planned.transcripts
    session.protected = planned.protected
    return session


def _entry_text(document: IndexDocument | None, key: str, entry: Any) -> str:
    """An entry's exact text in the index (for the audit log), or the gateway's layout of it."""
    if document is not None and (key in document.spans or key in document.added):
        return document.value_text(key)
    return _gateway_json(entry, indent=2).replace("\n", "\n  ")


def _commit_part(
    document: IndexDocument,
    removal: Removal,
    fresh: Session,
    fingerprints: dict[str, int] | None,
    only_if_unchanged: bool,
    moment: datetime,
) -> dict[str, Any] | None:
    """A session's part of the commit record, from the index as it is under the lock; None (and
    ``removal.skipped`` says why) when it is already gone, or changed since planned and a prune.

    ``fingerprints`` None: the index is the very parse that was planned, so nothing moved. The
    part names the archives its transcripts will get (stamped ``moment``), so that a run that
    dies after the commit leaves them findable (Deletion.archives).
    """
    if not fresh.keys:  # another call (or the gateway) removed it first: nothing to record
        removal.skip_because(Skip.ALREADY_GONE)
        return None
    amended: dict[str, str] = {}
    if fingerprints is not None:
        texts = {key: document.value_text(key) for key in fresh.keys}
        amended = {key: text for key, text in texts.items() if hash(text) != fingerprints.get(key)}
        if only_if_unchanged and (set(fresh.keys) != set(removal.session.keys) or amended):
            removal.skip_because(Skip.CHANGED_SINCE_READ)
            return None
    removal.removed_keys = list(fresh.keys)
    part: dict[str, Any] = {"keys": fresh.keys, "entries": amended}
    if removal.session.transcripts:
        part["archives"] = {name: _archive_name(name, moment) for name in removal.session.transcripts}
    return part


def _archives_by_inode(listing: FolderListing) -> dict[tuple[int, int], str]:
    by_inode = {}
    for name, entry in listing.archives.items():
        info = _stat_of(entry)
        if info is not None:
            by_inode[(info.st_dev, info.st_ino)] = name
    return by_inode


def _recorded_entry(deletion: Deletion, key: str, light: bool = False) -> Any:
    """An entry as the audit log recorded it (its exact text in the index); ``light``: as a parse
    of the index holds it (READ_FIELDS)."""
    text = deletion.entries.get(key)
    entry = _loads_strict(text) if isinstance(text, str) else text
    return _project_entry(entry) if light and isinstance(entry, dict) else entry


def _archives_to_restore(paths: AgentPaths, deletion: Deletion) -> dict[str, str]:
    """The deletion's archives, of which those its commit named but no record confirms count only
    if they exist (a run that died before renaming never made them)."""
    archives = deletion.archives()
    return {
        original: archive
        for original, archive in archives.items()
        if original in deletion.transcripts or os.path.lexists(paths.file(archive))
    }


def _rename_archives_back(paths: AgentPaths, deletion: Deletion) -> tuple[dict[str, str], list[str]]:
    """Rename each archive back to its transcript name; also return the archives that are gone."""
    renamed: dict[str, str] = {}
    missing: list[str] = []
    for original, archive in _archives_to_restore(paths, deletion).items():
        try:
            if _rename_without_overwrite(paths.file(archive), paths.file(original)):
                renamed[original] = archive
        except FileNotFoundError:
            missing.append(archive)
    return renamed, missing


def _refuse_restore_conflicts(
    paths: AgentPaths, deletion: Deletion, restorable: dict[str, Any], present: dict[str, Any]
) -> None:
    clash = [key for key in restorable if key in present]
    if clash:
        raise RestoreConflict(
            f"key {clash[0]} exists again in {paths.index}; remove it first or leave the "
            f"deletion of {deletion.session_id} as it is"
        )
    archives = _archives_to_restore(paths, deletion)
    for original in archives:
        if os.path.exists(paths.file(original)):
            raise RestoreConflict(
                f"transcript {original} exists again in {paths.folder}; restoring would overwrite it"
            )
    if not restorable and not archives:
        raise NothingToRestore(f"the recorded deletion of {deletion.session_id} holds nothing to restore")


# --- The SQLite store: SqliteStore, the gateway's own deletes -------------------------------------


class SqliteStore(AgentStore):
    """An agent of the SQLite-era gateway (OpenClaw 2026.8 and later, agent/openclaw-agent.sqlite):
    read and changed only through the gateway, over the call's one connection or else through
    OpenClaw's CLI; the gateway archives the transcripts itself (§7)."""

    kind = SQLITE_STORE
    gateway_owned = ("cron_run",)  # the CLI's delete cannot remove runs (its retention does, §7)

    @classmethod
    def keeps(cls, config: Config, paths: AgentPaths) -> bool:
        return os.path.exists(config.sqlite_database(paths.agent))

    def __init__(self, call: Call, paths: AgentPaths) -> None:
        super().__init__(call, paths)
        self.listed: list[Any] | GatewayUnavailable | None = None  # this agent's part of a listing
        self.connected = False  # listed (and so deleted) through the call's gateway connection
        self.active_runs: set[str] = set()

    @classmethod
    def prepare(cls, call: Call, stores: list[AgentStore], complete: bool) -> None:
        """One listing for every SQLite-era agent of the call (each CLI call starts Node anew)."""
        mine = [store for store in stores if isinstance(store, SqliteStore)]
        if mine:
            listing = SqliteStore.read_listing(call, [store.paths.agent for store in mine], complete)
            for store in mine:
                store.take(listing)

    def take(self, listing: SqliteListing) -> None:
        """This agent's part of a listing of several."""
        self.listed, self.connected = listing.by_agent[self.paths.agent], listing.connected
        self.unlisted = listing.unlisted.get(self.paths.agent)

    def read_entries(self, for_change: bool) -> tuple[dict[str, Any], IndexDocument | None]:
        listed = self.listed
        if listed is None:
            self.take(SqliteStore.read_listing(self.call, [self.paths.agent], complete=True))
            listed = self.listed
        self.listed = None
        if not isinstance(listed, list):
            raise listed or GatewayUnavailable("the gateway did not list this agent")
        # Only the agent's own keys: one never reaches the CLI's command line as an option.
        own = f"agent:{self.paths.agent}:"
        mine = [item for item in listed if str(item.get("key")).startswith(own)]
        self.active_runs = {item["key"] for item in mine if item.get("hasActiveRun") is True}
        return {item["key"]: _project_entry(item) for item in mine}, None

    def protection_of(self, session: Session) -> Protection | None:
        """As for any store, with the gateway's own rules: a run in progress stays; cron runs stay
        where only the CLI can be used, whose delete cannot remove them."""
        owned = () if self.connected else self.gateway_owned
        protection = self.protection_by_rules(session, owned)
        if protection is None and self.active_runs.intersection(session.keys):
            return Protection.ACTIVE_RUN
        return protection

    def attach_transcripts(self) -> None:
        """None: the gateway keeps the transcripts and archives them itself."""

    def remove(
        self,
        planned: list[Session],
        reason: str,
        *,
        only_if_unchanged: bool,
        recheck: Callable[[Session], None] | None = None,
    ) -> list[Removal]:
        """The gateway deletes (its own checks stand in for ``only_if_unchanged`` and ``recheck``)."""
        removals, failures = self.finish_removals(self.call, [self.begin_removal(planned, reason)])
        if self.paths.agent in failures:
            raise failures[self.paths.agent]
        return removals

    def begin_removal(self, planned: list[Session], reason: str) -> RemovalPart:
        """Before the gateway deletes anything: the audit intent, and the marks queued unconfirmed."""
        transaction = AuditTransaction.begin(self.paths.agent, reason, moment=_utc_now())
        self.call.audit.append_stream(_intent_pieces(transaction, planned, None, {}))
        removals = [Removal(session) for session in planned]
        self.call.outbox.queue_removal_marks(transaction, removals)
        return RemovalPart(self.paths, transaction, removals, waiting=True)

    @classmethod
    def finish_removals(
        cls, call: Call, parts: list[RemovalPart]
    ) -> tuple[list[Removal], dict[str, SessionManagerError]]:
        removals, failures = SqliteStore.remove_through_gateway(call, parts)
        return removals, dict(failures)

    def leftovers(self, session_id: str) -> Leftovers | None:
        """None: the gateway's own transcripts are never the skill's to archive."""
        return None

    def clean(self, now: datetime, dry_run: bool, retention_days: float) -> Cleanup:
        """Only the gateway's old ``.deleted.`` archives go: it owns everything else."""
        return Cleanup(
            {"deleted_archives": self.expire_archives(now, retention_days, dry_run, "deleted")}, []
        )

    @classmethod
    def took_effect(cls, config: Config, deletion: Deletion, indexes: dict[str, dict[str, Any]]) -> bool:
        """Always: its commit is written only after the gateway said it deleted the keys."""
        return True

    @classmethod
    def check_undoable(cls, deletion: Deletion, paths: AgentPaths) -> None:
        archives = _some_names(list(deletion.archives().values())) if deletion.archives() else "none recorded"
        raise StoreNotLive(
            f"session {deletion.session_id} was deleted by the SQLite-era gateway, which has no undelete; "
            f"its transcript archive (zstd-compressed JSON lines) stays in {paths.folder}: {archives}. "
            "Nothing was changed"
        )

    def check_restore(self, deletion: Deletion) -> None:
        """Refused: a restore puts keys back into sessions.json, which this gateway no longer reads."""
        raise StoreNotLive(
            f"agent {self.paths.agent!r} keeps its sessions in SQLite ({SQLITE_DATABASE}) since this "
            "deletion; its sessions.json is a leftover the gateway no longer reads, so nothing was changed"
        )

    def restore(self, deletion: Deletion) -> tuple[list[str], dict[str, str], list[str]]:
        self.check_restore(deletion)
        return [], {}, []

    @classmethod
    def add_cron_runs(cls, config: Config, listing: dict[str, Any]) -> dict[str, str]:
        """Add to each listed agent the cron runs that only the CLI's store listing shows (§7); the
        agents whose runs could not be read, with why."""
        listed = [agent for agent, rows in listing.items() if isinstance(rows, list)]
        unlisted: dict[str, str] = {}
        for agent, found in OpenClawCli(config).listing(listed).items() if listed else ():
            if isinstance(found, GatewayUnavailable):
                unlisted[agent] = (
                    f"cron runs not listed: the gateway's protocol hides them, the CLI failed: {found}"
                )
                continue
            keys = {row["key"] for row in listing[agent]}
            runs = [r for r in found if isinstance(r.get("key"), str) and CRON_RUN_KEY.match(r["key"])]
            listing[agent] += [run for run in runs if run["key"] not in keys]
        return unlisted

    @classmethod
    def read_listing(cls, call: Call, agents: list[str], complete: bool) -> SqliteListing:
        """Every session of these agents: over the call's connection, with the cron runs the gateway's
        protocol hides read by the CLI when ``complete`` (a change needs them; a listing starts no
        Node); else through the CLI, where the connection failed for a reason it may stand in for."""
        config = call.config
        connection = call.gateway()
        if isinstance(connection, GatewayClient):
            listing = connection.listing(config, agents)
            unlisted = (
                SqliteStore.add_cron_runs(config, listing)
                if complete
                else dict.fromkeys(agents, CRON_RUNS_UNLISTED)
            )
            return SqliteListing(listing, True, unlisted)
        if connection is not None and connection.fallback is Fallback.NOTHING:
            return SqliteListing(dict.fromkeys(agents, connection.error()), False, {})
        return SqliteListing(OpenClawCli(config).listing(agents), False, {})

    @classmethod
    def settle_gateway_part(
        cls,
        call: Call,
        part: RemovalPart,
        answered: dict[str, dict[str, Any]],
        failure: GatewayUnavailable | None,
    ) -> GatewayUnavailable | None:
        """After the delete: commit what the gateway deleted, confirm those marks, record the archives.

        Returns the failure when none of the part's keys got an answer. A session without one (the
        CLI was stopped) keeps its mark unconfirmed: past the grace, the CLI's listing decides.
        """
        transaction, removals = part.transaction, part.removals
        known: list[Removal] = []
        unanswered: list[Removal] = []
        for removal in removals:
            (known if all(key in answered for key in removal.session.keys) else unanswered).append(removal)
        if failure is not None and not known:
            if not failure.maybe_changed:
                call.outbox.confirm(transaction.txn, [r.mark for r in removals], [])
                call.audit.append([transaction.record("abort", {})])
            return failure
        for removal in known:
            _gateway_outcome(part.paths, removal, [answered[key] for key in removal.session.keys])
        call.audit.record_after_commit(
            [transaction.record("commit", _gateway_commit(known))], known, sync=True
        )
        done = [r.mark for r in known if r.removed_keys and not r.skipped]
        call.outbox.confirm(transaction.txn, [r.mark for r in known], done)
        archived = {r.session.session_id: {"transcripts": r.archived} for r in known if r.removed_keys}
        call.audit.record_after_commit([transaction.record("archived", archived)], known)
        for removal in unanswered:
            removal.skip_because(Skip.NO_ANSWER, str(failure))
        return None

    @classmethod
    def delete_stalest_first(
        cls, config: Config, link: GatewayClient, parts: list[RemovalPart]
    ) -> tuple[dict[str, dict[str, Any]], GatewayUnavailable | None]:
        """Delete the parts' sessions through the connection, one key at a time (the gateway deletes
        one at a time anyway, §7), the stalest first, each only if unchanged since it was listed.
        No session is started past the call's budget (OPENCLAW_DELETE_BUDGET_SECONDS): its keys are
        answered ``not_started``, as are those after a failure that stops the connection."""
        sessions = sorted(
            (removal.session for part in parts for removal in part.removals),
            key=lambda session: session.updated_at or datetime.min.replace(tzinfo=timezone.utc),
        )
        deadline = time.monotonic() + config.gateway_budget
        answered: dict[str, dict[str, Any]] = {}
        failure: GatewayUnavailable | None = None
        for session in sessions:
            if failure is not None or time.monotonic() >= deadline:
                answered.update(
                    (key, {"key": key, "status": "not_started", "error": "", "archived": []})
                    for key in session.keys
                )
                continue
            for key in session.keys:
                request = DeleteRequest(
                    key, session.agent, session.session_id, _expected_updated_at(session, key)
                )
                try:
                    answered[key] = link.delete(config, request)
                except GatewayUnavailable as error:
                    error.maybe_changed = True
                    failure = error
                    break
        return answered, failure

    @classmethod
    def remove_through_gateway(
        cls, call: Call, parts: list[RemovalPart]
    ) -> tuple[list[Removal], dict[str, SessionManagerError]]:
        """SQLite era: the running gateway deletes every part's keys, over the call's connection (or
        through the CLI, where it may stand in for one) and archives their transcripts itself (§7).
        Each part's audit records and marks follow AuditTransaction as for sessions.json, with the
        gateway's answer in place of the index under the lock. Returns the removals, and the failure
        of each agent none of whose keys got an answer.
        """
        config = call.config
        connection = call.gateway()
        unproven: dict[str, GatewayUnavailable] = {}
        if isinstance(connection, GatewayClient):
            answered, failure = SqliteStore.delete_stalest_first(config, connection, parts)
        elif connection is not None and connection.fallback is not Fallback.EVERYTHING:
            answered, failure = {}, connection.error()
        else:
            unproven = OpenClawCli(config).stores_it_reaches(sorted({part.paths.agent for part in parts}))
            proven = [part for part in parts if part.paths.agent not in unproven]
            keys = [key for part in proven for removal in part.removals for key in removal.session.keys]
            answered, failure = OpenClawCli(config).delete(keys) if keys else ({}, None)
        removals: list[Removal] = []
        failures: dict[str, SessionManagerError] = {}
        for part in parts:
            error = SqliteStore.settle_gateway_part(
                call, part, answered, unproven.get(part.paths.agent, failure)
            )
            if error is not None:
                failures[part.paths.agent] = error
            else:
                removals += part.removals
        return removals, failures


#: Every kind of store, by the name that answers and the audit log give it; AgentStore.open takes
#: the first an agent's files say it keeps (a newer gateway's store before sessions.json).
STORE_KINDS: dict[str, type[AgentStore]] = {kind.kind: kind for kind in (SqliteStore, JsonStore)}


class SqliteListing(NamedTuple):
    """The SQLite-era agents' sessions (OpenClawCli.listing's shape per agent), whether the call's
    connection listed them, and per agent what the listing leaves out and why."""

    by_agent: dict[str, Any]
    connected: bool
    unlisted: dict[str, str]


def _gateway_archives(paths: AgentPaths, results: list[dict[str, Any]]) -> dict[str, str]:
    """The archives the gateway made, by transcript name: a name in the sessions folder, else the
    path it gave."""
    archived: dict[str, str] = {}
    for result in results:
        for path in result.get("archived") or []:
            if isinstance(path, str) and ".deleted." in path:
                folder, name = os.path.split(path)
                inside = os.path.realpath(folder) == paths.folder
                archived[name.partition(".deleted.")[0]] = name if inside else path
    return archived


def _gateway_outcome(paths: AgentPaths, removal: Removal, results: list[dict[str, Any]]) -> None:
    """Fill a removal from the gateway's result for each of its keys (§7)."""
    statuses = [str(result.get("status")) for result in results]
    removal.removed_keys = [str(r["key"]) for r in results if r.get("status") == "deleted"]
    removal.archived = _gateway_archives(paths, results)
    refusals = [r for r in results if r.get("status") not in ("deleted", "not_found", "not_started")]
    if "changed" in statuses:
        removal.skip_because(Skip.CHANGED_SINCE_LISTED)
    elif statuses and all(status == "not_started" for status in statuses):
        removal.not_started = True
    elif refusals:
        reason = _cli_message(refusals[0].get("error") or refusals[0].get("status"))
        removal.skip_because(Skip.GATEWAY_REFUSED, reason)
    elif not removal.removed_keys and all(status == "not_found" for status in statuses):
        removal.skip_because(Skip.ALREADY_GONE)


def _gateway_commit(removals: list[Removal]) -> dict[str, Any]:
    return {
        r.session.session_id: {
            "keys": r.removed_keys,
            "entries": {},
            "store": SQLITE_STORE,
            "archives": r.archived,
        }
        for r in removals
        if r.removed_keys
    }


def _expected_updated_at(session: Session, key: str) -> int | None:
    """The key's updatedAt as the listing gave it (epoch ms), which the gateway compares."""
    value = session.entries.get(key, {}).get("updatedAt")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- The SQLite-era gateway: its protocol, one connection per call --------------------------------


class Fallback(Enum):
    """What the CLI may do for a call whose connection to the gateway could not be had (§7)."""

    LISTING = "listing"  # the gateway did not answer: the CLI reads the stores, nothing is deleted
    EVERYTHING = "everything"  # a reason the CLI overcomes: its own Node client, device identity
    NOTHING = "nothing"  # the gateway refused us (a wrong token) or must not be used: no path may


class NoConnection(NamedTuple):
    """Why a call has no connection to the gateway, what the CLI may do instead, and in how many
    seconds to try again when the gateway said it will be ready soon."""

    reason: str
    fallback: Fallback
    retry_after: float | None = None

    def error(self) -> GatewayUnavailable:
        return GatewayUnavailable(f"{self.reason}; nothing was changed")


class Reply(NamedTuple):
    """One answer of the gateway: its payload, or its error (``code``, ``message``, ``details``)."""

    payload: dict[str, Any]
    error: dict[str, Any] | None

    def detail(self, name: str) -> Any:
        details = (self.error or {}).get("details")
        return details.get(name) if isinstance(details, dict) else None

    def words(self) -> str:
        return _cli_message((self.error or {}).get("message") or (self.error or {}).get("code"))

    def retry_after(self) -> float | None:
        """When a refusal the gateway calls retryable may be tried again, in seconds (at most 5)."""
        if self.error is None or self.error.get("retryable") is not True:
            return None
        wait = self.error.get("retryAfterMs")
        seconds = wait / 1000 if isinstance(wait, (int, float)) and math.isfinite(wait) else 0.5
        return min(max(seconds, 0.05), 5.0)


def _loopback_url(url: str) -> bool:
    """Whether a ws:// URL's host is this machine (a token sent in clear never leaves it)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_answer(url: str, why: str) -> NoConnection:
    shown = _shown_url(url, "OPENCLAW_GATEWAY_URL")
    return NoConnection(
        f"the OpenClaw gateway at {shown} did not answer ({why}). {START_THE_GATEWAY}", Fallback.LISTING
    )


def _other_protocol(version: Any) -> NoConnection:
    """A gateway of another protocol version: the CLI of its own release speaks it."""
    return NoConnection(
        f"the gateway speaks protocol {_echo(version)}, this skill {GATEWAY_PROTOCOL}, so the "
        "openclaw CLI is used",
        Fallback.EVERYTHING,
    )


def _connection_refusal(reply: Reply) -> NoConnection:
    """Why the gateway refused our ``connect``, and whether the CLI may stand in (§7)."""
    code = str(reply.detail("code") or "")
    if reply.retry_after() is not None:
        return NoConnection(
            f"the gateway is not ready: {reply.words()}", Fallback.LISTING, reply.retry_after()
        )
    if code == "PROTOCOL_MISMATCH":
        return _other_protocol(reply.detail("expectedProtocol"))
    if code.startswith("PAIRING") or code.startswith("DEVICE") or code == "AUTH_SCOPE_MISMATCH":
        return NoConnection(
            f"the gateway asks for a paired device ({reply.words()}): pair one (openclaw devices) or run "
            "the skill on the gateway's host; the openclaw CLI is used meanwhile",
            Fallback.EVERYTHING,
        )
    if code.startswith("AUTH") or reply.words().startswith("unauthorized"):
        return NoConnection(
            "the gateway refused the token: set OPENCLAW_GATEWAY_TOKEN to the gateway's gateway.auth.token "
            f"({reply.words()})",
            Fallback.NOTHING,
        )
    return NoConnection(f"the gateway refused the connection: {reply.words()}", Fallback.NOTHING)


def _unknown_agent(agent: str) -> GatewayUnavailable:
    return GatewayUnavailable(
        f"the gateway does not know agent {agent!r} (it is not in agents.list), so it neither lists nor "
        f"deletes its sessions: add it with openclaw agents add {agent}, or in agents.list of openclaw.json"
    )


class GatewayClient:
    """One connection to the running gateway over its documented protocol (§7, OpenClaw's
    docs/gateway/protocol): the handshake with the token, one request at a time with its own
    deadline, answers capped, the protocol version and the granted scopes checked."""

    def __init__(self, opened: Any, url: str) -> None:
        self.held = ExitStack()  # websockets' connection is a context manager: closed with it
        self.socket, self.scopes, self.url = self.held.enter_context(opened), set[str](), url
        self.agents: set[str] | None = None  # the gateway's agents.list, read when first needed
        self.sent = 0  # requests sent: each one's id

    @classmethod
    def open(cls, config: Config) -> GatewayClient | NoConnection:
        """The connection, authenticated; or why there is none and what the CLI may do instead. A
        gateway that is starting says so and when to try again: it is tried until the call's
        OPENCLAW_TIMEOUT_SECONDS."""
        url = config.gateway_endpoint()
        if isinstance(url, NoConnection):
            return url
        try:
            from websockets.sync.client import connect
        except ImportError:
            return NoConnection(
                "the Python package websockets is not installed (pip install websockets), so the "
                "openclaw CLI is used",
                Fallback.EVERYTHING,
            )
        deadline = time.monotonic() + config.openclaw_timeout
        while True:
            opened = cls.attempt(config, url, connect)
            wait = opened.retry_after if isinstance(opened, NoConnection) else None
            if wait is None or time.monotonic() + wait >= deadline:
                return opened
            time.sleep(wait)

    @classmethod
    def attempt(cls, config: Config, url: str, connect: Callable[..., Any]) -> GatewayClient | NoConnection:
        """One try at opening the connection and shaking hands."""
        from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

        timeout = min(config.openclaw_timeout, GATEWAY_CONNECT_SECONDS)
        try:
            opened = connect(
                url,
                open_timeout=timeout,
                close_timeout=1,
                max_size=GATEWAY_PAYLOAD_CAP,
                compression=None,
                proxy=None,
                user_agent_header=None,
            )
        except (InvalidURI, ValueError) as error:
            why = _cli_message(error)
            return NoConnection(f"OPENCLAW_GATEWAY_URL is not a usable URL ({why})", Fallback.NOTHING)
        except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as error:
            return _no_answer(url, _cli_message(error) or "timed out")
        client = cls(opened, url)
        refused = client.handshake(config, timeout)
        if refused is not None:
            client.close()
            return refused
        return client

    def handshake(self, config: Config, timeout: float) -> NoConnection | None:
        """Wait for the gateway's challenge, then connect as an operator with the token (no device
        identity: on loopback a token is enough, §7); None when the gateway granted what we need."""
        try:
            self.challenge(timeout)
            reply = self.request("connect", self.connect_parameters(config), timeout)
        except GatewayUnavailable as error:
            return NoConnection(str(error), Fallback.LISTING)
        if reply.error is not None:
            return _connection_refusal(reply)
        granted = (reply.payload.get("auth") or {}).get("scopes")
        self.scopes = (
            {scope for scope in granted if isinstance(scope, str)} if isinstance(granted, list) else set()
        )
        if reply.payload.get("protocol") != GATEWAY_PROTOCOL:
            return _other_protocol(reply.payload.get("protocol"))
        if GATEWAY_ADMIN_SCOPE not in self.scopes:
            return NoConnection(
                f"the gateway granted this connection {sorted(self.scopes) or 'no scopes'}, and deleting "
                f"needs {GATEWAY_ADMIN_SCOPE} (a client without a paired device gets it only on loopback): "
                "pair a device for the gateway (openclaw devices) or run the skill on the gateway's host; "
                "the openclaw CLI is used meanwhile",
                Fallback.EVERYTHING,
            )
        return None

    @staticmethod
    def connect_parameters(config: Config) -> dict[str, Any]:
        """The ``connect`` request's parameters (OpenClaw's docs/gateway/protocol/handshake.md)."""
        return {
            "minProtocol": GATEWAY_PROTOCOL,
            "maxProtocol": GATEWAY_PROTOCOL,
            "client": {"id": "cli", "version": SKILL_VERSION, "platform": sys.platform, "mode": "cli"},
            "role": "operator",
            "scopes": [GATEWAY_ADMIN_SCOPE],
            "auth": {"token": config.gateway_token} if config.gateway_token else {},
        }

    def challenge(self, timeout: float) -> None:
        """The gateway's first frame, its ``connect.challenge`` event (what tells a gateway)."""
        frame = self.receive(time.monotonic() + timeout, "its challenge")
        if frame.get("type") != "event" or frame.get("event") != "connect.challenge":
            raise GatewayUnavailable(
                f"{_shown_url(self.url, 'OPENCLAW_GATEWAY_URL')} did not greet as an OpenClaw gateway "
                "does (no connect.challenge)"
            )

    def request(self, method: str, parameters: dict[str, Any], timeout: float) -> Reply:
        """Send one request and wait for its response (events and stale responses are passed
        over); GatewayUnavailable when none comes in ``timeout`` or the connection breaks."""
        self.sent += 1
        ident = f"aria-{self.sent}"
        frame = {"type": "req", "id": ident, "method": method, "params": parameters}
        try:
            self.socket.send(json.dumps(frame))
        except Exception as error:  # websockets raises its own ConnectionClosed, not an OSError
            raise self.broken(method, error) from None
        deadline = time.monotonic() + timeout
        while True:
            answer = self.receive(deadline, method)
            if answer.get("type") == "res" and answer.get("id") == ident:
                payload, refusal = answer.get("payload"), answer.get("error")
                if answer.get("ok") is True and isinstance(payload, dict):
                    return Reply(payload, None)
                return Reply({}, refusal if isinstance(refusal, dict) else {"message": "no result"})

    def call(self, method: str, parameters: dict[str, Any], timeout: float) -> Reply:
        """``request``, sent again while the gateway refuses it as retryable (its queue is full:
        the method did not run) and the deadline allows."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.request(method, parameters, max(0.0, deadline - time.monotonic()))
            wait = reply.retry_after()
            if wait is None or time.monotonic() + wait >= deadline:
                return reply
            time.sleep(wait)

    def receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next frame, parsed; GatewayUnavailable past ``deadline``, for a frame that is not a
        JSON object, or when the connection breaks (a frame over the cap breaks it)."""
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            text = self.socket.recv(timeout=remaining)
        except TimeoutError:
            raise GatewayUnavailable(
                f"the gateway did not answer {waiting_for} in time (OPENCLAW_TIMEOUT_SECONDS)"
            ) from None
        except Exception as error:  # ConnectionClosed and its kin, from websockets
            raise self.broken(waiting_for, error) from None
        try:
            frame = _loads_strict(text) if isinstance(text, str) else None
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            raise GatewayUnavailable(
                f"the gateway sent a frame that is not a JSON object while we waited for {waiting_for}"
            )
        return frame

    def broken(self, waiting_for: str, error: Exception) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"the connection to the gateway broke while we waited for {waiting_for} ({_cli_message(error)})"
        )

    def known_agents(self, config: Config) -> set[str]:
        """The agents the gateway is configured with (agents.list): it lists and deletes only those."""
        if self.agents is None:
            reply = self.call("agents.list", {}, config.openclaw_timeout)
            listed = reply.payload.get("agents") if reply.error is None else None
            if not isinstance(listed, list):
                raise GatewayUnavailable(f"the gateway did not list its agents: {reply.words()}")
            self.agents = {str(agent.get("id")) for agent in listed if isinstance(agent, dict)}
        return self.agents

    def listing(self, config: Config, agents: list[str]) -> dict[str, Any]:
        """Every session the gateway lists for these agents (sessions.list, every page, archived
        too): a list of rows per agent, or the GatewayUnavailable that kept it from being listed."""
        try:
            known = self.known_agents(config)
        except GatewayUnavailable as error:
            return dict.fromkeys(agents, error)
        listing: dict[str, Any] = {}
        for agent in agents:
            if agent not in known:
                listing[agent] = _unknown_agent(agent)
                continue
            try:
                listing[agent] = self.agent_listing(config, agent)
            except GatewayUnavailable as error:
                listing[agent] = error
        return listing

    def agent_listing(self, config: Config, agent: str) -> list[Any]:
        rows: list[Any] = []
        offset = 0
        for _page in range(GATEWAY_PAGES_CAP):
            parameters = {"agentId": agent, "limit": GATEWAY_PAGE, "offset": offset} | GATEWAY_LIST_OPTIONS
            reply = self.call("sessions.list", parameters, config.openclaw_timeout)
            sessions = reply.payload.get("sessions")
            if reply.error is not None or not isinstance(sessions, list):
                raise GatewayUnavailable(f"the gateway could not list agent {agent!r}: {reply.words()}")
            OpenClawCli(config).check_served_store(agent, reply.payload.get("path"))
            rows += [row for row in sessions if isinstance(row, dict) and isinstance(row.get("key"), str)]
            following = reply.payload.get("nextOffset")
            if reply.payload.get("hasMore") is not True:
                return rows
            if not isinstance(following, int) or isinstance(following, bool) or following <= offset:
                following = offset + len(sessions)
            if following <= offset:
                break
            offset = following
        raise GatewayUnavailable(f"the gateway's listing of agent {agent!r} did not end")

    def delete(self, config: Config, request: DeleteRequest) -> dict[str, Any]:
        """One key deleted if the session is still as it was listed: its result as _delete_result
        shapes the CLI's (status ``changed`` when the gateway found it changed, ``not_found`` when
        it is gone: the gateway refuses a missing key as changed, so it is described again)."""
        parameters = {
            "key": request.key,
            "agentId": request.agent,
            "expectedSessionId": request.session_id,
            "deleteTranscript": True,
        } | ({"expectedSessionUpdatedAt": request.updated_at} if request.updated_at is not None else {})
        reply = self.call("sessions.delete", parameters, config.openclaw_timeout)
        if reply.error is None:
            gone = reply.payload.get("deleted") is False
            archived = reply.payload.get("archived")
            return _delete_result(
                {"key": request.key, "status": "not_found" if gone else "deleted", "archived": archived}
            )
        if reply.detail("reason") != "session-changed":
            return _delete_result({"key": request.key, "status": "refused", "error": reply.words()})
        described = self.call(
            "sessions.describe", {"key": request.key, "agentId": request.agent}, config.openclaw_timeout
        )
        gone = described.error is None and described.payload.get("session") is None
        return _delete_result(
            {"key": request.key, "status": "not_found" if gone else "changed", "error": reply.words()}
        )

    def close(self) -> None:
        with suppress(Exception):
            self.held.close()


# --- The SQLite-era gateway: its CLI --------------------------------------------------------------


class OpenClawCli:
    """OpenClaw's CLI, as the SQLite-era gateway's fallback: one process per step (§7)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def program(self) -> str:
        """The CLI's executable, found as the shell would find it; GatewayUnavailable when it is not."""
        import shutil

        program = shutil.which(self.config.openclaw_cli)
        if program is None:
            raise GatewayUnavailable(
                f"the OpenClaw CLI {_echo(self.config.openclaw_cli)} is not installed or not executable; set "
                "OPENCLAW_CLI to the gateway's openclaw command; nothing was changed"
            )
        return program

    def run(
        self, arguments: list[str], timeout: float, extra: dict[str, str] | None = None
    ) -> tuple[int | None, Any]:
        """Run the CLI with the caller's environment (and ``extra``): its exit code (None when it
        printed its answer but had to be stopped) and its JSON answer (None if it printed none). Its
        stderr is never read: it may hold paths, stacks or the token. Nothing it starts outlives the
        call in its group. No secret goes in ``arguments``: any local user reads a command line."""
        import subprocess

        argv = [self.program(), *arguments]
        try:
            process = subprocess.Popen(
                argv,
                env={**os.environ, **extra} if extra else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so that a stop reaches what it started
            )
        except OSError as error:
            raise GatewayUnavailable(
                f"the OpenClaw CLI {_echo(self.config.openclaw_cli)} could not be started "
                f"({error.strerror or error}); set OPENCLAW_CLI to the gateway's openclaw command; "
                "nothing was changed"
            ) from None
        with process:
            try:
                output, exited = _read_until_exit(process, timeout)
            finally:
                _stop_process_group(process)
        document = _json_answer(output)
        if not exited and not isinstance(document, dict):
            raise GatewayUnavailable(
                f"openclaw {' '.join(arguments[:2])} did not finish within {timeout:g} s and was "
                "stopped; check the gateway (openclaw gateway status) or raise OPENCLAW_TIMEOUT_SECONDS",
                maybe_changed="delete" in arguments[:2],
            )
        return (process.returncode if exited else None), document

    def listing_by_agent(self, agents: list[str], document: dict[str, Any]) -> dict[str, Any]:
        """The listed sessions per agent; an agent the CLI did not read, or read elsewhere, gets an error."""
        stores = {
            str(store.get("agentId")): store.get("path")
            for store in document.get("stores") or []
            if isinstance(store, dict)
        }
        if len(agents) == 1 and "stores" not in document:  # --agent: the one store is "path"
            stores[agents[0]] = document.get("path")
        listing: dict[str, Any] = {}
        for agent in agents:
            path, expected = stores.get(agent), os.path.realpath(self.config.sqlite_database(agent))
            if path is None:
                listing[agent] = GatewayUnavailable(
                    f"the OpenClaw CLI does not know agent {agent!r}: add it to the gateway's config "
                    "(openclaw agents add, or agents.list in openclaw.json)"
                )
            elif not isinstance(path, str) or os.path.realpath(path) != expected:
                listing[agent] = GatewayUnavailable(
                    f"the OpenClaw CLI reads agent {agent!r} from another state folder than ARIA_AGENTS_DIR; "
                    "run the skill with the gateway's HOME or OPENCLAW_STATE_DIR"
                )
            else:
                listing[agent] = []
        single = agents[0] if len(agents) == 1 else None  # --agent: every listed session is that agent's
        for listed in document.get("sessions") or []:
            if not isinstance(listed, dict):
                continue
            owner = single or str(listed.get("agentId"))
            if isinstance(listing.get(owner), list):
                listing[owner].append(listed)
        return listing

    def environment(self) -> dict[str, str]:
        """What the CLI runs with: the state folder above ARIA_AGENTS_DIR (its stores and its config,
        so that it reads and finds the gateway of this folder, not of its HOME), and the gateway's URL
        and token as it reads them from its environment: never as --url and --token, which put the
        token in /proc/<pid>/cmdline for any local user while the CLI runs."""
        environment = {"OPENCLAW_STATE_DIR": os.path.dirname(os.path.abspath(self.config.agents_root))}
        environment |= {"OPENCLAW_GATEWAY_URL": self.config.gateway_url} if self.config.gateway_url else {}
        return environment | (
            {"OPENCLAW_GATEWAY_TOKEN": self.config.gateway_token} if self.config.gateway_token else {}
        )

    def listing(self, agents: list[str]) -> dict[str, Any]:
        """Every session of the SQLite-era agents, in one CLI call (§7): a list of listed sessions per
        agent, or the GatewayUnavailable that keeps it from being read. Needs no running gateway."""
        if not agents:
            return {}
        scope = ["--agent", agents[0]] if len(agents) == 1 else ["--all-agents"]
        try:
            code, document = self.run(
                ["sessions", *scope, "--json", "--limit", "all"],
                self.config.openclaw_timeout,
                self.environment(),
            )
            listed = document.get("sessions") if isinstance(document, dict) else None
            if code not in (0, None) or not isinstance(listed, list):
                raise GatewayUnavailable(
                    "openclaw sessions could not list the SQLite-era sessions: "
                    + _cli_failure(document, code)
                )
        except GatewayUnavailable as error:
            return dict.fromkeys(agents, error)
        return self.listing_by_agent(agents, document)

    def delete_batch(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """One ``openclaw sessions delete`` call: each key's result, in the CLI's words (§7)."""
        timeout = self.config.openclaw_timeout + OPENCLAW_SECONDS_PER_KEY * len(keys)
        arguments = ["sessions", "delete", *keys, "--yes", "--json"]
        code, document = self.run(arguments, timeout, self.environment())
        results = document.get("results") if isinstance(document, dict) else None
        if not isinstance(results, list) or not results:
            raise _unreachable(_cli_failure(document, code))
        by_key = {
            r["key"]: _delete_result(r)
            for r in results
            if isinstance(r, dict) and isinstance(r.get("key"), str)
        }
        refused = [r for r in by_key.values() if r["error"].startswith("unauthorized")]
        if refused and len(refused) == len(by_key):
            raise _unreachable("it refused the token (OPENCLAW_GATEWAY_TOKEN)")
        return by_key

    def check_served_store(self, agent: str, path: Any) -> None:
        """GatewayUnavailable unless the gateway keeps the agent in the database under ARIA_AGENTS_DIR:
        a gateway of another state folder must never delete in the name of this one."""
        expected = self.config.sqlite_database(agent)
        if not isinstance(path, str) or os.path.realpath(path) != os.path.realpath(expected):
            raise GatewayUnavailable(
                f"the gateway at OPENCLAW_GATEWAY_URL keeps agent {agent!r} in {_echo(path)}, not in "
                f"{_echo(expected)} under ARIA_AGENTS_DIR; point the skill at the gateway of this folder"
            )

    def stores_it_reaches(self, agents: list[str]) -> dict[str, GatewayUnavailable]:
        """Before the CLI deletes: ask the gateway it reaches (``openclaw gateway call sessions.list``)
        where it keeps each agent, and return the agents it does not keep under ARIA_AGENTS_DIR, with
        why. ``sessions delete`` says nothing of the store it deletes from (issue 26, H2)."""
        unproven: dict[str, GatewayUnavailable] = {}
        for agent in agents:
            parameters = json.dumps({"agentId": agent, "limit": 1})
            arguments = ["gateway", "call", "sessions.list", "--params", parameters, "--json"]
            try:
                code, document = self.run(arguments, self.config.openclaw_timeout, self.environment())
                if code not in (0, None) or not isinstance(document, dict):
                    raise _unreachable(_cli_failure(document, code))
                self.check_served_store(agent, document.get("path"))
            except GatewayUnavailable as error:
                unproven[agent] = error
        return unproven

    def delete(self, keys: list[str]) -> tuple[dict[str, dict[str, Any]], GatewayUnavailable | None]:
        """Delete keys through the running gateway, which archives their transcripts itself.

        Returns each answered key's result, and the failure that stopped the rest, if any.
        """
        answered: dict[str, dict[str, Any]] = {}
        for batch in _key_batches(keys):
            try:
                answered.update(self.delete_batch(batch))
            except GatewayUnavailable as error:
                return answered, error
        return answered, None


def _cli_message(text: Any) -> str:
    """A CLI message fit for an answer: its first line, without secrets, short."""
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else "no message"
    return _without_secrets(line)[:TEXT_CAP]


def _wait_briefly(process: Any, seconds: float) -> None:
    """Let a process that closed its output exit (so that it is seen to have exited)."""
    import subprocess

    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)


def _read_until_exit(process: Any, timeout: float) -> tuple[bytes, bool]:
    """What the CLI prints on stdout until it exits, or until ``timeout``; and whether it exited.

    A child the CLI leaves behind may hold the pipe open long after the CLI is gone (and outside
    its process group, out of reach of a kill): once the CLI itself has exited, what is still in
    the pipe is read for CLI_EXIT_GRACE_SECONDS at most, never until the child closes it.
    """
    import selectors

    deadline = time.monotonic() + timeout
    until, chunks, size = deadline, [], 0
    descriptor = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(descriptor, selectors.EVENT_READ)
        while True:
            if until == deadline and process.poll() is not None:
                until = min(deadline, time.monotonic() + CLI_EXIT_GRACE_SECONDS)
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            if selector.select(min(remaining, 0.05)):
                chunk = os.read(descriptor, 1 << 16)
                if not chunk:  # closed: the CLI is exiting, or a child it left closed it
                    _wait_briefly(process, min(max(0.0, deadline - time.monotonic()), CLI_EXIT_GRACE_SECONDS))
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > CLI_OUTPUT_CAP:
                    raise GatewayUnavailable(
                        f"the OpenClaw CLI printed more than {CLI_OUTPUT_CAP >> 20} MiB; it was stopped "
                        "and nothing it printed was used"
                    )
    return b"".join(chunks), process.poll() is not None


def _stop_process_group(process: Any) -> None:
    """Kill what is left of the CLI's process group (the CLI itself, if still running)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _json_answer(output: bytes) -> Any:
    """The CLI's JSON answer: its whole output, or else what follows the lines something printed
    before it (a Node preload in NODE_OPTIONS, such as dotenv/config, prints on the same stdout);
    None when there is none."""
    start = 0
    for _ in range(CLI_PREAMBLE_LINES):
        try:
            return _loads_strict(output[start:]) if output[start:].strip() else None
        except ValueError:
            start = output.find(b"\n{", start) + 1
            if start == 0:
                return None
    return None


def _cli_failure(document: Any, code: int | None) -> str:
    """What a failed CLI call said, from its JSON ``error`` (stderr is never read)."""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return _cli_message(error["message"])
    if code is None:
        return "it lingered after printing an answer of the wrong shape and was stopped"
    return (
        f"it exited with code {code} and no JSON answer (if something prints on its stdout before "
        "it, such as a preload in NODE_OPTIONS, run the skill without it)"
    )


def _key_batches(keys: list[str]) -> Iterator[list[str]]:
    """The keys in as few command lines as the argument limits allow."""
    batch: list[str] = []
    size = 0
    for key in keys:
        length = len(key.encode()) + 1
        if batch and size + length > OPENCLAW_KEY_BYTES_PER_CALL:
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += length
    if batch:
        yield batch


#: What to do about a gateway that does not answer, on every path.
START_THE_GATEWAY = (
    "Start it (openclaw gateway run) or set OPENCLAW_GATEWAY_URL and OPENCLAW_GATEWAY_TOKEN "
    "to the running one"
)


def _unreachable(text: str) -> GatewayUnavailable:
    reason = text.rstrip(". ")  # the CLI's own message may end with a full stop: never two
    return GatewayUnavailable(
        f"the OpenClaw gateway did not delete anything: {reason}. {START_THE_GATEWAY}; nothing was changed"
    )


def _delete_result(result: dict[str, Any]) -> dict[str, Any]:
    """One key's result as the CLI gave it, in the shape §7 documents whatever it sent: ``status``
    and ``error`` texts, ``archived`` a list of paths."""
    archived = result.get("archived")
    return {
        "key": result["key"],
        "status": str(result.get("status")),
        "error": str(result.get("error") or ""),
        "archived": [path for path in archived if isinstance(path, str)]
        if isinstance(archived, list)
        else [],
    }


class DeleteRequest(NamedTuple):
    """One key to delete, with the session as the listing showed it (the gateway checks both)."""

    key: str
    agent: str
    session_id: str
    updated_at: int | None


# --- The audit log --------------------------------------------------------------------------------


class AuditLog:
    """The audit log: what every deletion, archive and restore did, appended and flushed in order."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.folder = StateFolder(config)

    def append_stream(self, pieces: Iterable[str], sync: bool = False, separate: bool = False) -> None:
        """Append one record given in pieces (or, ``separate``, several) to the audit log."""
        try:
            with self.folder.lock(AUDIT_LOG_NAME):
                _append_pieces(self.folder.path(AUDIT_LOG_NAME), pieces, sync, separate)
        except OSError as error:
            raise StoreWriteFailed(
                f"cannot write the audit log in {self.config.state_dir}: {error.strerror or error}; "
                "no session was deleted without its record (set SESSION_MANAGER_STATE_DIR to move it)"
            ) from None

    def append(self, records: list[dict[str, Any]], sync: bool = False) -> None:
        """Append records to the audit log; ``sync`` flushes them (and all before) to disk."""
        if records:
            pieces = [json.dumps(record) for record in records]
            self.append_stream(pieces, sync, separate=True)

    def read(self) -> list[dict[str, Any]]:
        """Every readable record of the audit log, oldest first."""
        return _read_json_lines(os.path.join(self.config.state_dir, AUDIT_LOG_NAME))

    def trim(self, older_than: datetime) -> int:
        """Drop the records of deletions made before ``older_than``; returns how many were dropped."""
        if not os.path.exists(os.path.join(self.config.state_dir, AUDIT_LOG_NAME)):
            return 0

        def trim(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, int]:
            expired = {
                r.get("txn") for r in records if (_parse_timestamp(r.get("time")) or older_than) < older_than
            }
            kept = [record for record in records if record.get("txn") not in expired]
            dropped = len(records) - len(kept)
            return (kept if dropped else None), dropped

        return self.folder.rewrite(AUDIT_LOG_NAME, trim)

    def deletions(self) -> list[Deletion]:
        """Deletions in the audit log, oldest first, with their keys, entries and archive names."""
        deletions: dict[tuple[str, str], Deletion] = {}
        for record in self.read():
            event, txn = record.get("event"), record.get("txn")
            for session_id, part in _audit_parts(record):
                slot = (str(txn), session_id)
                deletion = deletions.get(slot)
                if deletion is None:
                    deletion = deletions[slot] = Deletion(
                        str(txn),
                        str(record.get("agent")),
                        session_id,
                        str(record.get("reason")),
                        str(record.get("time")),
                    )
                if event == "intent":
                    deletion.entries.update(part.get("entries", {}))
                    deletion.planned = list(part.get("transcripts", []))
                elif event == "commit":
                    deletion.committed = True
                    deletion.keys = list(part.get("keys", []))
                    deletion.store = part.get("store", JSON_STORE)
                    deletion.entries.update(part.get("entries", {}))
                    deletion.promised = dict(part.get("archives", {}))
                elif event == "archived":
                    deletion.committed = True
                    deletion.transcripts.update(part.get("transcripts", {}))
                    deletion.recorded_archives |= record.get("time") == deletion.time  # not a late one
                elif event == "restored":
                    deletion.restored = True
        # A commit that removed nothing (a delete that lost a race) is no deletion to list or restore.
        return [d for d in deletions.values() if d.committed and (d.keys or d.archives())]

    def standing_deletions(self, agent: str | None) -> list[Deletion]:
        """The deletions that stand, newest first: not restored, the latest of each session (a later
        one supersedes), and that happened (Deletion.took_effect); of one agent, or of every agent."""
        deletions = [
            deletion
            for deletion in reversed(self.deletions())
            if not deletion.restored and (agent is None or deletion.agent == agent)
        ]
        indexes: dict[str, dict[str, Any]] = {}
        latest: dict[tuple[str, str], Deletion] = {}
        for deletion in deletions:  # newest first: a later deletion of the same session supersedes
            latest.setdefault((deletion.agent, deletion.session_id), deletion)
        return [d for d in latest.values() if d.took_effect(self.config, indexes)]

    def record_after_commit(
        self, records: list[dict[str, Any]], removals: list[Removal], sync: bool = False
    ) -> None:
        """Append the audit records of a deletion that has happened: a failure (a full disk, a file-size
        limit, the log's lock) is reported with the deletion, on its first removal, never in its place."""
        try:
            self.append(records, sync)
        except SessionManagerError as error:
            done = [removal for removal in removals if removal.removed_keys] or removals
            if done:
                done[0].errors.append(
                    _cut(f"the deletion happened but the audit log could not record it: {error}")
                )

    def record_late_archives(self, agent: str, archived: dict[str, str], reason: str) -> None:
        """Record archives made after the fact (orphans, leftovers of a crashed run).

        An archive that a recorded deletion planned but never made is added to that deletion, so that
        restore_session brings back its keys and this transcript together.
        """
        if not archived:
            return
        owners: dict[str, Deletion] = {}
        for deletion in self.deletions():
            if deletion.agent == agent and not deletion.restored:
                for name in deletion.planned:
                    if name not in deletion.transcripts:
                        owners[name] = deletion
        records: list[dict[str, Any]] = []
        moment = _utc_now()
        for name, archive in archived.items():
            owner = owners.get(name)
            if owner is not None:
                transaction = AuditTransaction.begin(agent, owner.reason, owner.txn, moment)
                session_id = owner.session_id
            else:
                transaction = AuditTransaction.begin(agent, reason, moment=moment)
                session_id = _transcript_owner(name)
            records.append(transaction.record("archived", {session_id: {"transcripts": {name: archive}}}))
        self.append(records)

    def latest_deletion(self, reference: str) -> Deletion:
        for deletion in reversed(self.deletions()):
            if deletion.restored:
                continue
            if deletion.session_id == reference or reference in deletion.keys or deletion.txn == reference:
                return deletion
        raise NothingToRestore(
            f"no deletion of {_echo(reference)} is recorded in the audit log (or it was restored already); "
            "list_deleted shows what can be restored"
        )

    def record_restore(self, deletion: Deletion, keys: list[str]) -> list[str]:
        """The audit record of a restore that happened; a failure is returned, for the answer's errors."""
        restored = {deletion.session_id: {"keys": keys}}
        try:
            self.append(
                [AuditTransaction.begin(deletion.agent, None, deletion.txn).record("restored", restored)]
            )
        except SessionManagerError as error:
            return [_cut(f"the restore happened but the audit log could not record it: {error}", MESSAGE_CAP)]
        return []


class AuditTransaction(NamedTuple):
    """One deletion (or restore) in the audit log: every record it writes carries these fields.

    The life of a deletion in this log, and what a crash leaves after each step:

    1. ``intent`` (before anything changes): each session's entries as the index holds them, word
       for word, and the transcripts it will archive. A crash here: nothing changed; the intent
       alone lists nothing and restores nothing.
    2. ``commit`` (flushed to disk, under the gateway's lock, just before the index is replaced):
       the keys removed, and entries that changed since the intent. A crash after it: the index
       may or may not be written; list_deleted and restore_session check the index
       (Deletion.took_effect), and the outbox's unconfirmed marks wait for the same answer.
    3. ``abort`` instead of a commit when the index write fails: the deletion never happened.
    4. ``archived`` after the transcripts are renamed: their archive names. A crash before it:
       the transcripts are orphans that cleanup_orphans archives and records here later
       (AuditLog.record_late_archives adds them to this deletion, so a restore still brings them back).
    5. ``restored`` when restore_session undoes it: the keys put back; the deletion is then
       no longer listed.
    """

    txn: str
    agent: str
    reason: str | None
    time: str

    @classmethod
    def begin(
        cls, agent: str, reason: str | None, txn: str | None = None, moment: datetime | None = None
    ) -> AuditTransaction:
        """A transaction stamped ``moment`` (now by default); a new txn unless it continues one."""
        return cls(txn or _new_id(), agent, reason, _iso_utc(moment or _utc_now()))

    def record(self, event: str, sessions: dict[str, Any]) -> dict[str, Any]:
        """The record of one event of this transaction; ``sessions`` holds each session's part."""
        record: dict[str, Any] = {"txn": self.txn, "agent": self.agent}
        if self.reason is not None:
            record["reason"] = self.reason
        return {**record, "time": self.time, "event": event, "sessions": sessions}


def _intent_pieces(
    transaction: AuditTransaction,
    planned: list[Session],
    document: IndexDocument | None,
    fingerprints: dict[str, int],
) -> Iterator[str]:
    """The intent record, one session at a time, so a large prune never holds it whole."""
    yield json.dumps(transaction.record("intent", {}))[: -len("}}")]
    for number, session in enumerate(planned):
        texts = {key: _entry_text(document, key, session.entries[key]) for key in session.keys}
        fingerprints.update((key, hash(text)) for key, text in texts.items())
        part = json.dumps({"entries": texts, "transcripts": session.transcripts})
        yield ("" if number == 0 else ", ") + json.dumps(session.session_id) + ": " + part
    yield "}}"


def _is_text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_AUDIT_PART_SHAPES: dict[str, tuple[tuple[str, Callable[[Any], bool]], ...]] = {
    "intent": (("entries", _is_text_map), ("transcripts", _is_text_list)),
    "commit": (
        ("keys", _is_text_list),
        ("entries", _is_text_map),
        ("store", lambda v: isinstance(v, str)),  # a kind this version does not know is kept (STORE_KINDS)
        ("archives", _is_text_map),
    ),
    "archived": (("transcripts", _is_text_map),),
    "restored": (("keys", _is_text_list),),
}


def _audit_parts(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A record's per-session parts, if the record has the shape its event gives it; else none.

    A record edited by hand or cut short must not stop every later call that reads the log.
    """
    sessions, shapes = record.get("sessions"), _AUDIT_PART_SHAPES.get(str(record.get("event")))
    if not isinstance(sessions, dict) or shapes is None or not isinstance(record.get("txn"), str):
        return []
    parts = []
    for session_id, part in sessions.items():
        if isinstance(part, dict) and all(name not in part or check(part[name]) for name, check in shapes):
            parts.append((session_id, part))
    return parts


class Deletion:
    """One recorded deletion, assembled from its audit records."""

    __slots__ = (
        "agent",
        "committed",
        "entries",
        "keys",
        "planned",
        "promised",
        "reason",
        "recorded_archives",
        "restored",
        "session_id",
        "store",
        "time",
        "transcripts",
        "txn",
    )

    def __init__(self, txn: str, agent: str, session_id: str, reason: str, time: str) -> None:
        self.txn = txn
        self.agent = agent
        self.session_id = session_id
        self.reason = reason
        self.time = time
        self.entries: dict[str, Any] = {}
        self.keys: list[str] = []
        self.transcripts: dict[str, str] = {}
        self.planned: list[str] = []
        self.promised: dict[str, str] = {}  # the archives its commit named
        self.recorded_archives = False  # whether its own run recorded the archives it made
        self.committed = False
        self.restored = False
        self.store = JSON_STORE  # the kind of store it was made in (STORE_KINDS); older records name none

    def archives(self) -> dict[str, str]:
        """Transcript -> archive: as its run recorded them, or, when the run died before it could,
        as its commit named them (some may never have been made) with any archived later."""
        return dict(self.transcripts) if self.recorded_archives else {**self.promised, **self.transcripts}

    def took_effect(self, config: Config, indexes: dict[str, dict[str, Any]]) -> bool:
        """Whether a recorded deletion happened, as the kind of store it was made in tells; one made in
        a kind this version does not know stays listed (it is never dropped unseen)."""
        kind = STORE_KINDS.get(self.store)
        return kind is None or kind.took_effect(config, self, indexes)

    def undo(self, call: Call) -> Restored:
        """Put the deletion back in the store it was made in (its kind says whether it can), with its
        history mark queued before and confirmed after, and the restore recorded in the audit log."""
        paths = call.config.agent_paths(self.agent)
        _recorded_kind(self).check_undoable(self, paths)
        store = AgentStore.open(call, paths)
        store.check_restore(self)
        mark = call.outbox.queue_restore_mark(self)
        try:
            keys, renamed, missing = store.restore(self)
        except SessionManagerError:
            call.outbox.confirm(str(mark.txn), [mark], [])
            raise
        call.outbox.confirm(str(mark.txn), [mark], [mark])
        errors = call.audit.record_restore(self, keys)
        return Restored(self, keys, renamed, missing, errors, mark)


# --- The history layer: History, the outbox, marks ------------------------------------------------


class History:
    """The history layer: it delivers the outbox's marks to the history service, paced, and reads
    its rows."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.config = call.config
        self.outbox = call.outbox
        self.folder = StateFolder(call.config)

    def agents_under_root(self) -> set[str]:
        """The agents whose rows a mark of no agent may end (only they were searched for the session)."""
        try:
            return set(self.config.discover_agents())
        except SessionManagerError:
            return set()

    def look_up_and_patch(
        self, marks: list[Mark], deadline: float, pace: Pace, read_timeout: float
    ) -> dict[int, HistoryOutcome | Exception]:
        from concurrent.futures import ThreadPoolExecutor

        results: dict[int, HistoryOutcome | Exception] = {}
        try:
            client = HistoryClient(self.config, deadline, pace, read_timeout)
        except HistoryRefused as error:
            return dict.fromkeys(range(len(marks)), error)
        width = max(1, self.config.history_concurrency)
        try:
            with ThreadPoolExecutor(width) as pool:
                try:
                    missing = client.lookup_rows(marks, self.agents_under_root(), pool, width)
                except (HistoryUnavailable, HistoryRefused) as error:
                    missing = {}
                    for index, mark in enumerate(marks):
                        if mark.row_ids is None:
                            results[index] = error
                todo = []
                for index, mark in enumerate(marks):
                    if index in results:
                        continue
                    if mark.session_id in missing and not mark.row_ids:
                        results[index] = missing[mark.session_id]
                    else:
                        todo.append(index)

                def deliver(index: int) -> None:
                    self.outbox.note_sending(marks[index])
                    try:
                        results[index] = client.patch(marks[index])
                    except (HistoryUnavailable, HistoryRefused) as error:
                        results[index] = error
                    else:
                        self.outbox.note_delivered(marks[index])

                list(pool.map(deliver, todo))
        finally:
            client.close()
        return results

    def deliver(
        self, marks: list[Mark], deadline: float, pace: Pace, read_timeout: float
    ) -> dict[int, HistoryOutcome | Exception]:
        """Look up and PATCH every mark, concurrently, paced, within the deadline; never raises."""
        with _cycle_collection(True):
            return self.look_up_and_patch(marks, deadline, pace, read_timeout)

    def held_session_ids(self, agent: str) -> set[str] | PartlyHeld | None:
        """Every sessionId an agent's store holds now, or None when it cannot be read."""
        try:
            return AgentStore.open(self.call, self.config.agent_paths(agent)).held_session_ids()
        except SessionManagerError:
            return None

    @contextmanager
    def delivery_turn(self, report: HistoryReport, patience: float) -> Iterator[bool]:
        """Whether this process delivers: one at a time (waiting up to ``patience`` seconds for the
        turn), and none where the outbox cannot be opened."""
        with ExitStack() as stack:
            try:
                delivering = stack.enter_context(
                    self.folder.lock(HISTORY_OUTBOX_NAME + ".delivery", patience=patience)
                )
            except OSError as error:
                report.configuration_error = (
                    f"cannot open the history outbox in {self.config.state_dir}: {error.strerror}"
                )
                delivering = False
            if delivering:  # only the holder writes the pace: what a killed save left is swept here
                with suppress(OSError):
                    _remove_files(
                        self.config.state_dir,
                        _abandoned_temporaries(self.config.state_dir, HISTORY_PACE_NAME),
                    )
            yield delivering

    def paced_delivery(
        self, batch: list[Mark], deadline: float, read_timeout: float, report: HistoryReport
    ) -> dict[int, HistoryOutcome | Exception]:
        """Deliver a batch under the pace of every sender, kept in history-pace.json across turns."""
        if not batch:
            return {}
        pace = Pace.load(self.config)
        try:
            return self.deliver(batch, deadline, pace, read_timeout)
        finally:
            pace.save()
            report.pace_trouble = pace.trouble

    def step(
        self,
        marks: list[Mark],
        include_pending: bool,
        report: HistoryReport,
        background: bool,
        reassign: bool = False,
    ) -> None:
        """History.mark's work, which any failure may interrupt: the marks were queued before. Only
        the holder of the delivery turn sends (so one pace holds for every sender): a call waits for
        the turn up to its budget, and without it leaves its marks in the outbox."""
        budget = DELIVERY_ROUND_SECONDS if background else self.config.history_budget
        deadline, now = time.monotonic() + budget, _utc_now()
        with self.delivery_turn(report, budget) as delivering:
            report.outbox_busy = include_pending and not delivering
            if not delivering:
                report.outcomes.update(
                    (m.session_id, HistoryOutcome(HistoryStatus.QUEUED, "another process is delivering"))
                    for m in marks
                )
                report.still_pending = [_pending_item(m) for m in self.outbox.read()]
                return
            waiting: list[Mark] = []
            never_happened: list[Mark] = []
            if include_pending:
                self.outbox.drop_superseded(marks)
                own = {mark.outbox_id for mark in marks if mark.outbox_id}
                waiting, never_happened, elsewhere = self.pending(now, own, reassign)
                report.elsewhere = sorted({str(mark.service) for mark in elsewhere}), len(elsewhere)
            batch = marks + waiting
            read_timeout = DELIVERY_READ_TIMEOUT if background else HISTORY_READ_TIMEOUT
            results = self.paced_delivery(batch, deadline, read_timeout, report)
            report.delivered += [
                {**_pending_item(m), "outcome": "dropped: its deletion never happened"}
                for m in never_happened
            ]
            finished, requeue = report.record_results(batch, len(marks), results, now)
            finished.update(str(mark.outbox_id) for mark in never_happened)
            if requeue or finished:
                self.outbox.settle(report, finished, requeue, now)
            report.still_pending = [_pending_item(m) for m in self.outbox.read()]

    def deliverer_environment(self) -> dict[str, str]:
        """The call's environment with its folders as absolute paths: the process starts in the state
        folder, where a relative ARIA_AGENTS_DIR (or OPENCLAW_CLI) would name nothing."""
        environment = {
            **os.environ,
            "ARIA_AGENTS_DIR": self.config.agents_root,
            "SESSION_MANAGER_STATE_DIR": self.config.state_dir,
        }
        if os.sep in self.config.openclaw_cli:
            environment["OPENCLAW_CLI"] = os.path.abspath(self.config.openclaw_cli)
        return environment

    def start_deliverer(self) -> bool:
        """Start the delivery process of this state folder, detached (its own session, no descriptor
        of the call's), unless one runs or SESSION_HISTORY_BACKGROUND is off. Whether one goes on."""
        if not self.config.background_delivery:
            return False
        try:
            with self.folder.lock(DELIVERER_LOCK_NAME, wait=False) as free:
                if not free:
                    return True
            import subprocess
            import sys

            subprocess.Popen(
                [sys.executable, "-c", _DELIVERER_BOOT, os.path.dirname(os.path.abspath(__file__))],
                env=self.deliverer_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                cwd=self.config.state_dir,
            )
        except (OSError, SessionManagerError):
            return False
        return True

    def deliverer_failure(self) -> str | None:
        """Why the last delivery process could not work, if it left that (_record_delivery_failure)."""
        try:
            with open(os.path.join(self.config.state_dir, DELIVERY_FAILED_NAME), "rb") as handle:
                return _cut(handle.read(4096).decode("utf-8", "replace").strip(), TEXT_CAP) or None
        except OSError:
            return None

    def mark(
        self,
        marks: list[Mark],
        *,
        include_pending: bool = True,
        background: bool = False,
        reassign: bool = False,
    ) -> HistoryReport:
        """Deliver this call's marks and drain the outbox, paced, within one time budget; whatever
        still waits is left to the delivery process, started here (``background``: this is it).

        A mark that cannot be delivered now (its turn has not come, service down, timeout, 5xx, 429,
        or a rejected request that a configuration fix may cure) stays in the outbox; nothing is
        dropped silently: a mark that has failed for days goes to the abandoned file, reported.
        ``reassign``: marks queued for another configuration of the service are sent with this one.
        """
        report = HistoryReport()
        if self.config.history_off:
            return report.switched_off(marks, self.outbox.items())
        if not marks and not include_pending:
            return report
        try:
            self.step(marks, include_pending, report, background, reassign)
        except Exception as error:  # the marks wait in the outbox, and the call's answer stands
            report.failure = (
                f"the history step failed ({type(error).__name__}: {error}); its marks wait in the outbox"
            )
            report.still_pending = self.outbox.items()
            for mark in marks:
                report.outcomes.setdefault(
                    mark.session_id, HistoryOutcome(HistoryStatus.QUEUED, "the history step failed")
                )
        if report.still_pending and not background:
            report.background_failure = self.deliverer_failure()
            report.background = self.start_deliverer()
        return report

    def delivery_log(self) -> Callable[[str], None]:
        """A writer of timestamped lines to history-delivery.log (one older file kept past 1 MiB)."""
        path = self.folder.path(DELIVERY_LOG_NAME)

        def write(text: str) -> None:
            with suppress(OSError):
                if os.path.getsize(path) > DELIVERY_LOG_CAP:
                    os.replace(path, path + ".1")
            with suppress(OSError):
                _append_pieces(path, [f"{_iso_utc(_utc_now())} pid {os.getpid()}: {text}"], sync=False)

        return write

    def round_pause(self, report: HistoryReport, idle_rounds: int) -> float:
        """How long the delivery process rests before its next round: until the pace lets the next
        mark go, at least half a second; after rounds that delivered nothing, 5 s, doubling up to 60."""
        wait = Pace.load(self.config).opens_at(time.time()) - time.time()
        rest = 0.5 if report.delivered else min(5.0 * 2 ** max(idle_rounds - 1, 0), 60.0)
        return min(max(wait, rest), 60.0)

    def delivery_rounds(self, log: Callable[[str], None]) -> None:
        """Rounds of History.mark over the outbox until it is empty, or until nothing was delivered
        for DELIVERY_IDLE_SECONDS (the service down, or every mark rejected: the next call starts a
        new process)."""
        with suppress(OSError):
            os.unlink(os.path.join(self.config.state_dir, DELIVERY_FAILED_NAME))  # a process works again
        log(f"started: {self.outbox.count()} marks wait")
        progress, idle_rounds = time.monotonic(), 0
        while True:
            report = self.mark([], include_pending=True, background=True)
            waiting, error = len(report.still_pending), report.error()
            log(
                f"delivered {len(report.delivered)}, gave up {len(report.gave_up)}, {waiting} wait"
                + (f"; {error['error']}" if error else "")
                + ("; another process held the turn" if report.outbox_busy else "")
                + (f"; {report.pace_trouble}" if report.pace_trouble else "")
            )
            if waiting <= report.elsewhere[1] and not report.outbox_busy:
                log("the outbox is empty: stopping" if not waiting else f"{report.other_service()}: stopping")
                return
            if report.delivered:
                progress, idle_rounds = time.monotonic(), 0
            elif time.monotonic() - progress > DELIVERY_IDLE_SECONDS:
                log(
                    f"nothing delivered for {DELIVERY_IDLE_SECONDS:g} s: stopping; "
                    "the next call starts another"
                )
                return
            else:
                idle_rounds += 1
            time.sleep(self.round_pause(report, idle_rounds))

    def active_rows(
        self, budget: float = RECONCILE_BUDGET_SECONDS, read_timeout: float = DELIVERY_READ_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Every row the service lists as active (every page, cron and runtime rows included), each
        once, read within ``budget`` (by default with the delivery process's patience for the
        service's sync). Raises HistoryUnavailable or HistoryRefused when it cannot be read whole."""
        deadline = time.monotonic() + budget
        rows: dict[str, dict[str, Any]] = {}
        with _cycle_collection(True):
            client = HistoryClient(
                self.config, deadline, Pace(self.config.history_pace, [], 0.0), read_timeout
            )
            try:
                query, number = _lookup_query(MarkStatus.ACTIVE, None), 1
                while True:
                    page = client.read_page(query, number)
                    rows.update(
                        (r["id"], r)
                        for r in page.items
                        if isinstance(r, dict) and isinstance(r.get("id"), str)
                    )
                    if (
                        not page.items
                        or page.pages is None
                        or number >= min(page.pages, HISTORY_LISTING_MAX_PAGES)
                    ):
                        break
                    number += 1
            finally:
                client.close()
        return list(rows.values())

    def vanished_rows(self, held: dict[str, Holding]) -> dict[str, Any]:
        """How many active history rows belong to sessions that no store holds (what reconcile_history
        would end), if the service answers within the call's history budget; else why it is unknown."""
        if self.config.history_off:
            return {"vanished_history_rows": None, "vanished_history_rows_unknown": HISTORY_OFF_TEXT}
        try:
            rows = self.active_rows(self.config.history_budget, HISTORY_READ_TIMEOUT)
        except (HistoryUnavailable, HistoryRefused) as error:
            return {
                "vanished_history_rows": None,
                "vanished_history_rows_unknown": _cut(str(error), MESSAGE_CAP),
            }
        now = _utc_now()
        # A row whose mark waits in the outbox is being ended already: counting it would send the
        # agent to reconcile_history for nothing while delivery catches up.
        queued = {mark.session_id for mark in self.outbox.read()}
        view = HeldSessions.of(held)
        vanished = [row for row in rows if _row_fate(row, view, now, set(held)) == "vanished"]
        return {"vanished_history_rows": sum(_row_session_id(row) not in queued for row in vanished)}

    def end_vanished(self, reconciliation: Reconciliation) -> HistoryReport:
        """Queue a mark for each vanished session's rows, record them in the audit log as their own
        event, and deliver them as every mark is delivered (paced, then in the background)."""
        marks = [
            Mark(session_id, agent, row_ids=[row["id"] for row in rows])
            for (agent, session_id), rows in reconciliation.to_end.items()
        ]
        self.outbox.queue(marks)
        by_agent: dict[str, dict[str, Any]] = {}
        for mark in marks:
            by_agent.setdefault(str(mark.agent), {})[mark.session_id] = {"row_ids": mark.row_ids}
        records = [
            AuditTransaction.begin(agent, "reconcile").record("reconciled", parts)
            for agent, parts in by_agent.items()
        ]
        with suppress(SessionManagerError):  # the marks are queued: the record is for the reader
            self.call.audit.append(records)
        return self.mark(marks)

    def held_by_agent(self, scope: list[AgentPaths]) -> dict[str, Holding]:
        """Every sessionId each agent's store holds now, or the error that kept it from being read."""
        stores = AgentStore.open_all(self.call, scope, complete=True)
        held: dict[str, Holding] = {}
        for store in stores:
            try:
                held[store.paths.agent] = store.held_session_ids()
            except SessionManagerError as error:
                held[store.paths.agent] = error
        return held

    def reconcile(self, agent: str | None, dry_run: bool) -> dict[str, Any]:
        """reconcile_history's answer, before its size is fitted: the active rows read first (a
        session that appears later has no row in them), then every agent's store (a row's session
        may sit in another agent's folder); the rows of the vanished sessions marked ended."""
        config = self.config
        if config.history_off:
            raise ConfigurationError(
                f"reconcile_history ends rows of the history service, and {HISTORY_OFF_TEXT}; "
                "set ARIA_API_URL to the service to reconcile it"
            )
        scope = config.selected_agents(agent)
        report = HistoryReport()
        try:
            rows = self.active_rows()
        except (HistoryUnavailable, HistoryRefused) as error:
            rows, unread = [], f"the history service could not be read ({error}); nothing was changed"
            if isinstance(error, HistoryRefused):
                report.configuration_error = unread
            else:
                report.failure = unread
        held = self.held_by_agent(config.selected_agents(None)) if rows else {}
        reconciliation = Reconciliation(rows, held, {paths.agent for paths in scope})
        unreadable = [
            _error_record(error, agent=name)
            for name, error in held.items()
            if isinstance(error, SessionManagerError)
        ]
        if reconciliation.to_end and not dry_run:
            report = self.end_vanished(reconciliation)
        answer = _reconcile_answer(len(rows), reconciliation, report, dry_run, unreadable=unreadable)
        return answer | _not_listed({name: h.reason for name, h in held.items() if isinstance(h, PartlyHeld)})

    def pending(
        self, now: datetime, own: set[str], reassign: bool = False
    ) -> tuple[list[Mark], list[Mark], list[Mark]]:
        """Outbox marks to deliver now, unconfirmed ones whose deletion never reached the index, and
        those queued for another service (Mark.is_for), which wait for a call configured for it (or,
        ``reassign``, are taken over by this configuration: the other one was a mistake, now fixed).

        An unconfirmed mark within its grace belongs to a call still running, and is left alone.
        """
        deliver: list[Mark] = []
        dropped: list[Mark] = []
        elsewhere: list[Mark] = []
        unconfirmed: dict[str, list[Mark]] = {}
        service_id, shown = self.config.service_id, _shown_url(self.config.api_url)
        for mark in self.outbox.read():
            if mark.outbox_id in own:
                continue
            if reassign and not mark.is_for(service_id):
                mark.service_id, mark.service = service_id, shown
            if not mark.is_for(service_id):
                elsewhere.append(mark)
            elif mark.confirmed or mark.agent is None:
                deliver.append(mark)
            elif now - (_parse_timestamp(mark.queued_at) or now) > timedelta(
                seconds=UNCONFIRMED_GRACE_SECONDS
            ):
                unconfirmed.setdefault(mark.agent, []).append(mark)
        for agent, marks in unconfirmed.items():
            held = self.held_session_ids(agent)
            if held is None:
                continue
            present = held.ids if isinstance(held, PartlyHeld) else held
            for mark in marks:
                if isinstance(held, PartlyHeld) and mark.session_id not in present:
                    continue  # it may be a cron run that the reading left out: asked again next time
                took_effect = (mark.session_id in present) == mark.status.held_when_done
                (deliver if took_effect else dropped).append(mark)
        return deliver, dropped, elsewhere


class MarkStatus(str, Enum):
    """The status a mark gives a session's history rows: ended once the session has left its store,
    active again once a restore has brought it back. The value is what the service is sent."""

    ENDED = "ended"
    ACTIVE = "active"

    def __str__(self) -> str:
        return str(self.value)

    @property
    def rows_to_change(self) -> MarkStatus:
        """The status of the rows this mark looks for: the ones it changes (MARK_RULES)."""
        return MARK_RULES[self][0]

    @property
    def held_when_done(self) -> bool:
        """Whether the store holds the session once the change that queued this mark took effect
        (it decides an unconfirmed mark after a crash; MARK_RULES)."""
        return MARK_RULES[self][1]


#: Each mark status: the status of the rows it looks for (the ones it changes), and whether the
#: store holds the session once the change that queued the mark took effect. Every member has its
#: row (a new one without it fails tests/test_history.py, not a delivery).
MARK_RULES: dict[MarkStatus, tuple[MarkStatus, bool]] = {
    MarkStatus.ENDED: (MarkStatus.ACTIVE, False),
    MarkStatus.ACTIVE: (MarkStatus.ENDED, True),
}


class Mark:
    """One status change for one session's history rows, made now or waiting in the outbox.

    A deletion queues its marks before it changes the index (``txn`` names it, ``confirmed`` is
    False) and confirms them once the index is written; see Outbox.queue.
    """

    __slots__ = (
        "agent",
        "attempts",
        "confirmed",
        "failing_since",
        "last_error",
        "maybe_sent",
        "outbox_id",
        "queued_at",
        "row_ids",
        "service",
        "service_id",
        "session_id",
        "status",
        "txn",
    )

    def __init__(
        self,
        session_id: str,
        agent: str | None,
        status: MarkStatus = MarkStatus.ENDED,
        row_ids: list[str] | None = None,
        outbox_id: str | None = None,
        attempts: int = 0,
        queued_at: str | None = None,
        last_error: str | None = None,
        txn: str | None = None,
        confirmed: bool = True,
        failing_since: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.agent = agent
        self.status = status
        self.row_ids = row_ids
        self.outbox_id = outbox_id
        self.attempts = attempts
        self.queued_at = queued_at
        self.last_error = last_error
        self.txn = txn
        self.confirmed = confirmed
        # When its deliveries began to fail for real (no answer, a rejection); a wait is no failure.
        self.failing_since = failing_since
        # The service it is for (Config.service_id), and that service's URL as answers show it; set
        # when it is queued. None for a mark queued by a release that did not record it.
        self.service_id: str | None = None
        self.service: str | None = None
        # Sent by a process that stopped before it recorded the answer (Outbox.note_sending): its rows
        # are looked up again, and a row no longer waiting for the mark counts as marked.
        self.maybe_sent = False

    def as_record(self) -> dict[str, Any]:
        return ({"maybe_sent": True} if self.maybe_sent else {}) | {
            "id": self.outbox_id or _new_id(),
            "session_id": self.session_id,
            "agent": self.agent,
            "status": self.status.value,
            "row_ids": self.row_ids,
            "attempts": self.attempts,
            "queued_at": self.queued_at or _iso_utc(_utc_now()),
            "last_error": self.last_error,
            "txn": self.txn,
            "confirmed": self.confirmed,
            "failing_since": self.failing_since,
            "service": self.service,
            "service_id": self.service_id,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Mark:
        """A mark from its outbox record; ValueError for a record of the wrong shape (a status
        that is no MarkStatus included)."""
        status = MarkStatus(record.get("status", MarkStatus.ENDED.value))
        fields = (
            (record.get("session_id"), str, False),
            (record.get("id"), str, False),
            (record.get("agent"), str, True),
            (record.get("queued_at"), str, True),
            (record.get("last_error"), str, True),
            (record.get("txn"), str, True),
            (record.get("failing_since"), str, True),
            (record.get("service"), str, True),
            (record.get("service_id"), str, True),
        )
        row_ids = record.get("row_ids")
        attempts = record.get("attempts", 0)
        if (
            any(
                not isinstance(value, kind) and not (optional and value is None)
                for value, kind, optional in fields
            )
            or not (
                row_ids is None or (isinstance(row_ids, list) and all(isinstance(r, str) for r in row_ids))
            )
            or type(attempts) is not int
            or type(record.get("confirmed", True)) is not bool
        ):
            raise ValueError("not a history mark")
        mark = cls(
            record["session_id"],
            record.get("agent"),
            status,
            row_ids,
            record["id"],
            attempts,
            record.get("queued_at"),
            record.get("last_error"),
            record.get("txn"),
            record.get("confirmed", True),
            record.get("failing_since"),
        )
        mark.service, mark.service_id = record.get("service"), record.get("service_id")
        mark.maybe_sent = record.get("maybe_sent") is True
        return mark

    def is_for(self, service_id: str) -> bool:
        """Whether a call of this Config.service_id may send it: the service it was queued for (a
        mark sent elsewhere would find no row there and be finished as if its row were gone)."""
        return self.service_id is None or self.service_id == service_id


def _marks_of_records(records: list[dict[str, Any]]) -> tuple[list[Mark], list[dict[str, Any]]]:
    """The marks of the outbox's records, oldest first, and the records that are no mark at all.

    A confirmation record (see Outbox.confirm) confirms the marks of its deletion and drops the
    ones it names; a delivery record (Outbox.note_delivered) drops the mark it names; a sending record
    (Outbox.note_sending) without its delivery makes the mark ``maybe_sent``. All are folded in here,
    and gone from the file after its next rewrite.
    """
    marks, unreadable = [], []
    dropped: dict[str, set[str]] = {}
    delivered: set[str] = set()
    sending: set[str] = set()
    for record in records:
        if isinstance(record.get("confirm"), str) and _is_text_list(record.get("dropped")):
            dropped.setdefault(record["confirm"], set()).update(record["dropped"])
            continue
        if isinstance(record.get("delivered"), str):
            delivered.add(record["delivered"])
            continue
        if isinstance(record.get("sending"), str):
            sending.add(record["sending"])
            continue
        try:
            marks.append(Mark.from_record(record))
        except (ValueError, KeyError, TypeError):
            unreadable.append(record)
    if dropped:
        marks = [m for m in marks if m.txn not in dropped or m.outbox_id not in dropped[m.txn]]
        for mark in marks:
            mark.confirmed = mark.confirmed or mark.txn in dropped
    if delivered:
        marks = [m for m in marks if m.outbox_id not in delivered]
    for mark in marks:
        if mark.outbox_id in sending:
            mark.maybe_sent, mark.row_ids = True, None
    return marks, unreadable


#: A change of the outbox: from the marks waiting, those to keep and those to give up on.
OutboxChange = Callable[[list[Mark]], tuple[list[Mark], list[Mark]]]


class Outbox:
    """The history outbox: marks waiting for the history service, and what their delivery did."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.folder = StateFolder(config)

    def read(self) -> list[Mark]:
        """Marks waiting in the outbox, oldest first."""
        return _marks_of_records(_read_json_lines(os.path.join(self.config.state_dir, HISTORY_OUTBOX_NAME)))[
            0
        ]

    def count(self) -> int:
        """How many history marks wait in the outbox."""
        return len(self.read())

    def abandon(self, records: list[dict[str, Any]]) -> None:
        """Keep what leaves the outbox undelivered in the abandoned file, for an operator to look at."""
        if records:
            _append_lines(self.folder.path(HISTORY_ABANDONED_NAME), records)

    def rewrite(self, change: OutboxChange) -> list[Mark]:
        """Change the outbox under its lock; returns the marks given up on, which go to the abandoned file.

        A record that is no mark (edited by hand, say) goes to the abandoned file too, not lost.
        """

        def rewrite(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, list[Mark]]:
            marks, unreadable = _marks_of_records(records)
            before = [mark.as_record() for mark in marks]  # ``change`` may alter the marks themselves
            kept, given_up = change(marks)
            moment = _iso_utc(_utc_now())
            self.abandon([{**mark.as_record(), "abandoned_at": moment} for mark in given_up])
            self.abandon(
                [{"record": r, "abandoned_at": moment, "reason": "not a history mark"} for r in unreadable],
            )
            after = [mark.as_record() for mark in kept]
            folded = len(records) > len(marks) + len(unreadable)  # confirmations and deliveries, now in
            return (after if unreadable or folded or after != before else None), given_up

        return self.folder.rewrite(HISTORY_OUTBOX_NAME, rewrite)

    def queue(self, marks: list[Mark]) -> None:
        """Append a deletion's marks to the outbox, flushed, before its index is written.

        So any end of the call after the commit (a signal, a crash, a later agent's failure) leaves
        them to be delivered. Fails with StoreWriteFailed, before anything changed, if it cannot.
        Without a history layer (ARIA_API_URL=none) nothing is queued.
        """
        if self.config.history_off:
            return
        moment, service_id, shown = (
            _iso_utc(_utc_now()),
            self.config.service_id,
            _shown_url(self.config.api_url),
        )
        for mark in marks:
            mark.outbox_id = mark.outbox_id or _new_id()
            mark.queued_at = mark.queued_at or moment
            mark.service_id, mark.service = mark.service_id or service_id, mark.service or shown
        try:
            with self.folder.lock(HISTORY_OUTBOX_NAME):
                records = (
                    json.dumps(mark.as_record()) for mark in marks
                )  # streamed: a prune may queue 60,000
                _append_pieces(self.folder.path(HISTORY_OUTBOX_NAME), records, sync=True, separate=True)
        except OSError as error:
            raise StoreWriteFailed(
                f"cannot queue history marks in {self.config.state_dir}: {error.strerror or error}; "
                "nothing was deleted (set SESSION_MANAGER_STATE_DIR to a writable folder)"
            ) from None

    def confirm(self, txn: str, marks: list[Mark], done: list[Mark]) -> None:
        """After the index is written: confirm the marks of sessions it removed, drop the others.

        One small appended record does it (the outbox is not rewritten while the index may still be in
        memory). A failure is left for later: the marks stay unconfirmed and, past the grace, the
        index decides (History.pending).
        """
        if self.config.history_off:
            return
        confirmed = {mark.outbox_id for mark in done}
        for mark in done:
            mark.confirmed = True
        record = {"confirm": txn, "dropped": [m.outbox_id for m in marks if m.outbox_id not in confirmed]}
        try:
            with self.folder.lock(HISTORY_OUTBOX_NAME):
                _append_lines(self.folder.path(HISTORY_OUTBOX_NAME), [record])
        except (OSError, SessionManagerError):
            pass

    def note(self, mark: Mark, event: str) -> None:
        """Append one event of a mark's delivery to the outbox; a failure is left to the settle."""
        if mark.outbox_id is None:
            return
        try:
            with self.folder.lock(HISTORY_OUTBOX_NAME):
                _append_lines(self.folder.path(HISTORY_OUTBOX_NAME), [{event: mark.outbox_id}], sync=False)
        except (OSError, SessionManagerError):
            pass  # the settle at the end of the step records it too

    def note_delivered(self, mark: Mark) -> None:
        """Record at once that a waiting mark was delivered (an appended record, folded in by
        _marks_of_records): a delivery killed before it settles the outbox sends it no second time."""
        self.note(mark, "delivered")

    def note_sending(self, mark: Mark) -> None:
        """Record, before its PATCH goes out, that a mark is being sent: a delivery killed while the
        request was under way leaves its next sender to look at the row first, not to end it twice
        (the service sets ended_at at each PATCH)."""
        self.note(mark, "sending")

    def queue_removal_marks(self, transaction: AuditTransaction, removals: list[Removal]) -> None:
        """Queue the removals' history marks, unconfirmed; a failure aborts the deletion here."""
        for removal in removals:
            removal.mark.txn, removal.mark.confirmed = transaction.txn, False
        try:
            self.queue([removal.mark for removal in removals])
        except SessionManagerError:
            AuditLog(self.config).append([transaction.record("abort", {})])
            raise

    def queue_restore_mark(self, deletion: Deletion) -> Mark:
        """The restore's history mark, queued unconfirmed before anything is put back: a call that
        dies later leaves it to the crash rule (the store then says whether the restore happened)."""
        mark = Mark(deletion.session_id, deletion.agent, MarkStatus.ACTIVE, txn=_new_id(), confirmed=False)
        self.queue([mark])
        return mark

    def items(self) -> list[dict[str, Any]]:
        """What waits in the outbox, as answers list it; empty when it cannot be read."""
        try:
            return [_pending_item(mark) for mark in self.read()]
        except (SessionManagerError, OSError):
            return []

    def drop_superseded(self, marks: list[Mark]) -> None:
        """Rewrite the outbox without what waits there for the sessions of this call's newer ``marks``."""
        own_ids = {mark.session_id for mark in marks}
        own_queued = {mark.outbox_id for mark in marks if mark.outbox_id}

        def supersede(queued: list[Mark]) -> tuple[list[Mark], list[Mark]]:
            return [m for m in queued if m.session_id not in own_ids or m.outbox_id in own_queued], []

        self.rewrite(supersede)

    def settle(self, report: HistoryReport, finished: set[str], requeue: list[Mark], now: datetime) -> None:
        """Write the outbox after a delivery; what it gives up on is reported."""
        try:
            given_up = self.rewrite(lambda queued: _settle_outbox(queued, finished, requeue, now))
        except (OSError, SessionManagerError) as error:
            report.configuration_error = (
                f"could not record undelivered history marks in {self.config.state_dir}: "
                f"{getattr(error, 'strerror', None) or error}"
            )
            return
        report.gave_up += [_pending_item(mark) for mark in given_up]


def _expired(mark: Mark, now: datetime) -> bool:
    """Whether a waiting mark is given up: its deliveries have really failed (no answer, a
    rejection) for HISTORY_GIVE_UP_DAYS. Waiting (the budget, the pace, a 429) is no failure."""
    since = _parse_timestamp(mark.failing_since)
    return since is not None and now - since > timedelta(days=HISTORY_GIVE_UP_DAYS)


def _pending_item(mark: Mark) -> dict[str, Any]:
    return {
        "session_id": mark.session_id,
        "agent": mark.agent,
        "status": mark.status.value,
        "attempts": mark.attempts,
        "queued_at": mark.queued_at,
        "last_error": mark.last_error,
    }


def _settle_outbox(
    queued: list[Mark], finished: set[str], requeue: list[Mark], now: datetime
) -> tuple[list[Mark], list[Mark]]:
    """The outbox after a delivery: (marks still waiting, marks given up on).

    ``finished`` outbox ids leave it; ``requeue`` marks replace their queued copy or join it.
    """
    updates = {m.outbox_id: m for m in requeue if m.outbox_id}
    kept = [updates.get(m.outbox_id or "", m) for m in queued if m.outbox_id not in finished]
    present = {m.outbox_id for m in kept}
    kept += [m for m in requeue if not m.outbox_id or m.outbox_id not in present]
    for mark in kept:
        mark.outbox_id = mark.outbox_id or _new_id()
    return [m for m in kept if not _expired(m, now)], [m for m in kept if _expired(m, now)]


class HistoryStatus(str, Enum):
    """What happened to one session's history rows; the value is how answers say it."""

    MARKED = "marked"
    NO_HISTORY_ROW = "no_history_row"  # nothing to mark
    QUEUED = "queued"  # waits in the outbox
    FAILED = "failed"
    OFF = "off"  # ARIA_API_URL=none


class HistoryOutcome(NamedTuple):
    """What happened to one session's history rows, and why (the reason), with the rows."""

    status: HistoryStatus
    reason: str | None = None
    row_ids: tuple[str, ...] = ()

    @property
    def updated(self) -> bool:
        return self.status is HistoryStatus.MARKED

    @property
    def settled(self) -> bool:
        """Whether nothing is left to do about it: marked, or no history layer to mark."""
        return self.status in (HistoryStatus.MARKED, HistoryStatus.OFF)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason, "row_ids": list(self.row_ids)}


class HistoryReport:
    """The history step of one call: its own marks, and what it did with the outbox."""

    __slots__ = (
        "background",
        "background_failure",
        "configuration_error",
        "delivered",
        "elsewhere",
        "failure",
        "gave_up",
        "layer_off",
        "outbox_busy",
        "outcomes",
        "pace_trouble",
        "still_pending",
    )

    def __init__(self) -> None:
        self.outcomes: dict[str, HistoryOutcome] = {}
        self.delivered: list[dict[str, Any]] = []
        self.still_pending: list[dict[str, Any]] = []
        self.gave_up: list[dict[str, Any]] = []
        self.configuration_error: str | None = None
        self.failure: str | None = None  # the step broke off (its marks wait in the outbox)
        self.outbox_busy = False
        self.layer_off = False  # ARIA_API_URL=none: nothing was queued or sent
        self.background = False  # whether the delivery process goes on with what waits
        self.background_failure: str | None = None  # why the last delivery process could not work
        self.pace_trouble: str | None = None  # history-pace.json unreadable or unwritable (Pace)
        # Marks queued for another service: its URLs, and how many.
        self.elsewhere: tuple[list[str], int] = ([], 0)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
        return counts

    def sync_answer(self) -> dict[str, Any]:
        """sync_pending's answer, before its size is fitted: what was delivered, what still waits."""
        message = (
            f"{len(self.delivered)} delivered, {len(self.still_pending)} still pending, "
            f"{len(self.gave_up)} given up"
        )
        if self.outbox_busy:
            message = "another process is delivering the outbox right now; nothing was sent by this call"
        if self.still_pending:
            message += "; delivery continues in the background" if self.background else ""
        if self.layer_off:
            waiting = len(self.still_pending)
            message = f"{HISTORY_OFF_TEXT}: nothing was sent, {waiting} marks wait in the outbox"
        result = {
            "delivered": self.delivered,
            "still_pending": self.still_pending,
            "gave_up": self.gave_up,
            "busy": self.outbox_busy,
            "message": message,
        }
        if self.layer_off:
            result["history_layer"] = HISTORY_OFF_TEXT
        if self.error() is not None:
            result["history_error"] = self.error()
        if self.elsewhere[1]:
            result["history_other_service"] = self.other_service()
        return result

    def annotate(self, result: dict[str, Any]) -> dict[str, Any]:
        """Add the outbox figures (and a configuration error, loudly) to a function's result."""
        result["history_pending"] = len(self.still_pending)
        if self.layer_off:
            result["history_layer"] = HISTORY_OFF_TEXT
        elif self.still_pending:
            result["history_delivery"] = (
                "continues in the background, paced (history-delivery.log in the state folder)"
                if self.background
                else "waits for the next call or sync_pending (SESSION_HISTORY_BACKGROUND is off)"
            )
            if self.background_failure is not None:
                result["history_delivery"] += (
                    f"; the last delivery process could not work ({self.background_failure}): "
                    "run sync_pending to deliver now"
                )
        if self.pace_trouble is not None:
            result["history_pace_error"] = self.pace_trouble
        if self.elsewhere[1]:
            result["history_other_service"] = self.other_service()
        if self.delivered:
            result["history_pending_delivered"] = len(self.delivered)
        if self.gave_up:
            result["history_gave_up"] = self.gave_up
        error = self.error()
        if error is not None:
            result["history_error"] = error
        return result

    def switched_off(self, marks: list[Mark], waiting: list[dict[str, Any]]) -> HistoryReport:
        """The report of a call without a history layer: its marks are off, and what an earlier
        configuration queued (``waiting``) stays in the outbox, counted."""
        self.layer_off, self.still_pending = True, waiting
        self.outcomes.update(
            (mark.session_id, HistoryOutcome(HistoryStatus.OFF, HISTORY_OFF_TEXT)) for mark in marks
        )
        return self

    def other_service(self) -> str:
        """What waits in the outbox for another configuration of the service, in words."""
        services, count = self.elsewhere
        return _cut(
            f"{count} marks were queued for another history service configuration ({', '.join(services)}: "
            "ARIA_API_URL, ARIA_API_KEY or ARIA_AGENTS_DIR differ); they wait for a call configured as "
            'they were. If that configuration was a mistake, now fixed, sync_pending with "reassign": '
            "true sends them with this one",
            MESSAGE_CAP,
        )

    def error(self) -> dict[str, str] | None:
        """What went wrong with the history step as a whole, if anything: the answer's history_error."""
        if self.failure:
            return {"error": _cut(self.failure, MESSAGE_CAP), "error_type": "history_step_failed"}
        if self.configuration_error:
            return {"error": self.configuration_error, "error_type": "history_configuration_error"}
        return None

    def record_results(
        self,
        batch: list[Mark],
        own: int,
        results: dict[int, HistoryOutcome | Exception],
        now: datetime,
    ) -> tuple[set[str], list[Mark]]:
        """Put each delivery's outcome in the report (the first ``own`` marks are this call's).

        Returns the outbox ids delivered and the marks that go back to the outbox; a mark that was not
        sent, or that the service asked to wait for (HistoryDeferred), counts no attempt.
        """
        finished: set[str] = set()
        requeue: list[Mark] = []
        for index, mark in enumerate(batch):
            result = results.get(index)
            if isinstance(result, HistoryOutcome):
                if index < own:
                    self.outcomes[mark.session_id] = result
                else:
                    self.delivered.append({**_pending_item(mark), "outcome": result.status.value})
                if mark.outbox_id:
                    finished.add(mark.outbox_id)
                continue
            reason = str(result) if result is not None else "not attempted"
            if isinstance(result, HistoryRefused):
                self.configuration_error = reason
            if result is not None and not isinstance(result, HistoryDeferred):
                mark.attempts += 1
                mark.failing_since = mark.failing_since or _iso_utc(now)
            elif isinstance(result, HistoryBusy):
                mark.failing_since = None  # the service is there: whatever failed before is no streak
            mark.last_error = reason
            mark.queued_at = mark.queued_at or _iso_utc(now)
            if index < own:
                self.outcomes[mark.session_id] = HistoryOutcome(
                    HistoryStatus.QUEUED, reason, tuple(mark.row_ids or ())
                )
            requeue.append(mark)
        return finished, requeue

    def deletion_answer(self, deleted: str, message: str, **fields: Any) -> dict[str, Any]:
        """delete_session's answer; ``fields`` are its other keys, in this order."""
        outcome = self.outcomes.get(deleted)
        answer = {
            "deleted": deleted,
            "found": fields.get("found", True),
            "removed_keys": fields["removed_keys"],
            "transcript_archived": fields["transcript_archived"],
            "pg_status_updated": bool(outcome and outcome.updated),
            "message": message,
            "agentId": fields["agentId"],
            "dry_run": fields["dry_run"],
            "archived_files": fields["archived_files"],
            "would_archive": fields["would_archive"],
            "kept_transcripts": fields["kept_transcripts"],
            "history": outcome.as_dict() if outcome else None,
            "errors": fields["errors"],
        }
        answer |= {"not_listed": fields["not_listed"]} if "not_listed" in fields else {}
        return self.annotate(answer)


def _history_phrase(outcome: HistoryOutcome | None, status: MarkStatus = MarkStatus.ENDED) -> str:
    if outcome is None:
        return "history not touched"
    if outcome.status is HistoryStatus.MARKED:
        return f"PG marked {status.value}"
    if outcome.status is HistoryStatus.NO_HISTORY_ROW:
        return "no history row to mark"
    if outcome.status is HistoryStatus.OFF:
        return "history layer off"
    if outcome.status is HistoryStatus.QUEUED:
        return f"PG mark queued for a later call ({outcome.reason})"
    return f"PG mark failed ({outcome.reason})"


# --- The history layer: the delivery process ------------------------------------------------------


# The delivery process: this module, imported from its own folder, running deliver_in_background.
_DELIVERER_BOOT = "; ".join(
    (
        "import sys",
        "sys.path.insert(0, sys.argv[1])",
        "import session_manager",
        "session_manager.deliver_in_background()",
    )
)


def _record_delivery_failure(why: str) -> None:
    """Leave why a delivery process could not work where the next call finds it: a line in its log
    and history-delivery.failed, in the folder it was started in (the state folder: the
    configuration that names it may be what failed)."""
    with suppress(OSError):
        _append_pieces(
            DELIVERY_LOG_NAME, [f"{_iso_utc(_utc_now())} pid {os.getpid()}: cannot work: {why}"], sync=False
        )
    with suppress(OSError):
        write_atomic(DELIVERY_FAILED_NAME, [why.encode("utf-8")], durable=False)


def deliver_in_background() -> None:
    """The delivery process of one state folder, started detached by a call that left marks
    waiting (History.start_deliverer): one at a time (a lock of its own), paced like every sender,
    logging each round to history-delivery.log. Killed, it leaves the outbox whole."""
    try:
        config = Config.from_environment()
        with StateFolder(config).lock(DELIVERER_LOCK_NAME, wait=False) as mine:
            if mine and not config.history_off:
                history = History(Call(config, connects=False))
                history.delivery_rounds(history.delivery_log())
    except (SessionManagerError, OSError) as error:
        _record_delivery_failure(_cut(str(error), TEXT_CAP))


# --- The history service's client: pace, requests, row lookups ------------------------------------


class Pace:
    """When the next PATCH may go: SESSION_HISTORY_PACE's windows over every mark sent from this
    state folder, and the service's own Retry-After. Kept in history-pace.json: only the holder
    of the delivery turn (History.delivery_turn) sends, and it loads the file at the start of its turn
    and saves it at the end, so calls and the delivery process share one pace."""

    def __init__(
        self, limits: tuple[tuple[int, float], ...], sent: list[float], blocked_until: float
    ) -> None:
        import threading

        self.limits, self.sent, self.blocked_until = limits, sorted(sent), blocked_until
        self.lock = threading.Lock()
        self.path: str | None = None  # history-pace.json, for a pace read from it (see load)
        self.trouble: str | None = None  # why the file could not be read or written, for the answer

    @classmethod
    def load(cls, config: Config) -> Pace:
        """The pace as history-pace.json keeps it, read whole (its size follows from the windows,
        see _state); one that cannot be read starts afresh, and says so (``trouble``)."""
        path, trouble = os.path.join(config.state_dir, HISTORY_PACE_NAME), None
        cap = PACE_FILE_SLACK + PACE_BYTES_PER_SEND * max(count for count, _ in config.history_pace)
        try:
            with open(_open_regular(path, False), "rb") as handle:
                raw = handle.read(cap + 1)
            if len(raw) > cap:
                raise ValueError(f"over {cap} bytes")
            state = _loads_strict(raw)
            sent = [float(moment) for moment in state["sent"]]
            blocked_until = float(state["blocked_until"])
        except FileNotFoundError:
            sent, blocked_until = [], 0.0
        except (OSError, ValueError, KeyError, TypeError) as error:
            sent, blocked_until = [], 0.0
            why = getattr(error, "strerror", None) or _cut(str(error) or type(error).__name__)
            trouble = (
                f"{HISTORY_PACE_NAME} in the state folder could not be read ({why}); the pace started afresh"
            )
        pace = cls(config.history_pace, *_times_up_to_now(sent, blocked_until))
        pace.path, pace.trouble = StateFolder(config).path(HISTORY_PACE_NAME), trouble
        return pace

    def save(self) -> None:
        """The turn's last save, durable; one that fails is said (``trouble``): the next turn would
        not know this one's sends."""
        if self.path is not None:
            try:
                write_atomic(self.path, self._state())
            except (OSError, SessionManagerError) as error:
                why = getattr(error, "strerror", None) or _cut(str(error))
                self.trouble = (
                    f"{HISTORY_PACE_NAME} in the state folder could not be written ({why}); remove "
                    "whatever is in its place, or calls and the delivery process may exceed the pace"
                )

    def _state(self) -> bytes:
        """The sends that any window still counts: within the longest window, and no more than the
        largest count (the older ones can no longer fill a window), in milliseconds."""
        longest = max(seconds for _, seconds in self.limits)
        most = max(count for count, _ in self.limits)
        now = time.time()
        sent = [round(m, 3) for m in self.sent if m > now - longest][-most:]
        return json.dumps({"sent": sent, "blocked_until": self.blocked_until}).encode("ascii")

    def _record_send(self) -> None:
        """Each send on disk before it goes: a sender killed mid-turn once forgot its sends, and the
        next sent 10 PATCHes in a window of 5. A rename without fsync survives a kill, which is
        what this guards against; the turn's last save is durable."""
        if self.path is None:
            return
        with suppress(OSError, SessionManagerError):
            write_atomic(self.path, self._state(), durable=False)

    def opens_at(self, now: float) -> float:
        """The first moment from ``now`` at which one more mark keeps within every window
        (``sent`` stays sorted: each window is two bisections)."""
        from bisect import bisect_right

        moment = max(now, self.blocked_until)
        for count, seconds in self.limits:
            recent = len(self.sent) - bisect_right(self.sent, moment - seconds)
            if recent >= count:
                moment = max(moment, self.sent[len(self.sent) - count] + seconds)
        return moment

    def take(self, until: float) -> bool:
        """Wait for the next free moment and claim it; False (and no wait) when it comes after
        ``until`` (wall clock)."""
        from bisect import bisect_right, insort

        with self.lock:
            now = time.time()
            longest = max(seconds for _, seconds in self.limits)
            del self.sent[: bisect_right(self.sent, now - longest)]  # no window reaches them
            moment = self.opens_at(now)
            if moment > until:
                return False
            insort(self.sent, moment)
            self._record_send()
        time.sleep(max(0.0, moment - time.time()))
        return True

    def block(self, seconds: float) -> None:
        """The service asked to wait (429 or 503 with Retry-After): nothing is sent before then."""
        with self.lock:
            self.blocked_until = max(self.blocked_until, time.time() + seconds)


class HistoryClient:
    """Requests to the history service under one deadline, with retries, a circuit breaker and
    the pace (PATCHes only: the service's limiter counts every request that is not a read).

    One httpx.Client, shared by the worker threads, keeps SESSION_HISTORY_CONCURRENCY keep-alive
    connections; httpx is imported here only, by a call that marks history. Every request ends by
    its own deadline (at most ``read_timeout``, never past the budget and its grace), however
    slowly the service answers, and no answer is held beyond HISTORY_ANSWER_CAP.
    """

    def __init__(self, config: Config, deadline: float, pace: Pace, read_timeout: float) -> None:
        httpx = _import_httpx()
        self.httpx = httpx
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        if config.api_key:
            headers["X-API-Key"] = config.api_key
        width = max(1, config.history_concurrency)
        self.read_timeout = read_timeout
        # An http:// service needs no TLS: loading the CA bundle would cost ~100 ms a call.
        # (Redirects are not followed, so a plain URL never reaches a TLS server.)
        self.http = httpx.Client(
            base_url=config.api_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=HISTORY_CONNECT_TIMEOUT),
            transport=_history_transport(httpx, width, config.api_url.startswith("https:")),
        )
        self.deadline, self.pace = deadline, pace
        self.refused = False
        where = _shown_url(config.api_url)
        self.refusal = f"the history service refused the connection at {where} (check ARIA_API_URL)"

    def close(self) -> None:
        self.http.close()

    def _send(
        self, method: str, path: str, payload: bytes | None, remaining: float
    ) -> tuple[int, bytes, Any]:
        """One request and its capped body, over by its deadline: status, body, Retry-After."""
        limit = min(self.read_timeout, remaining + HISTORY_GRACE_SECONDS)
        _RequestDeadline.set(time.monotonic() + limit)
        timeout = self.httpx.Timeout(limit, connect=min(HISTORY_CONNECT_TIMEOUT, limit))
        with self.http.stream(method, path, content=payload, timeout=timeout) as response:
            return response.status_code, _read_body(response), response.headers.get("retry-after")

    def _wait_for_turn(self, paced: bool) -> None:
        """HistoryDeferred unless a request may go now: within the budget, and, for a PATCH, when
        the pace and the service's Retry-After allow before the budget ends."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.05:
            raise BudgetSpent("the history time budget ran out before it was sent (no attempt counted)")
        if paced and not self.pace.take(time.time() + remaining - 0.05):
            wait = max(0.0, self.pace.opens_at(time.time()) - time.time())
            raise HistoryDeferred(
                f"paced: its turn comes in {wait:.0f} s (SESSION_HISTORY_PACE, Retry-After)"
            )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request, retrying transient failures with back-off while the budget lasts.

        A 429 or 503 is no failure: its Retry-After holds every PATCH back, and the mark waits.
        """
        httpx = self.httpx
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        reason = ""
        for attempt in range(HISTORY_RETRIES + 1):
            if self.refused:
                raise HistoryUnavailable(self.refusal)
            if attempt and self.deadline - time.monotonic() <= 0.05:
                break
            self._wait_for_turn(paced=method != "GET")
            try:
                status, content, retry_after = self._send(
                    method, path, payload, self.deadline - time.monotonic()
                )
            except httpx.ConnectError as error:
                if _refused_connection(error):
                    self.refused = True
                    raise HistoryUnavailable(self.refusal) from None
                reason = "connection to the history service failed (ConnectError)"
            except httpx.TimeoutException:
                reason = "the history service did not answer in time"
            except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as error:  # IDNA: a ValueError
                reason = f"connection to the history service failed ({type(error).__name__})"
            else:
                if status in (429, 503):
                    wait = _retry_after(retry_after)
                    self.pace.block(wait)
                    raise HistoryBusy(f"HTTP {status} from the history service: sent again after {wait:g} s")
                if status < 500:
                    return status, content
                reason = _server_error(status, content)
            if attempt < HISTORY_RETRIES:
                time.sleep(max(0.0, min(0.2 * 2**attempt, self.deadline - time.monotonic() - 0.05)))
        raise HistoryUnavailable(reason)

    def read_page(self, query: dict[str, Any], page: int) -> Page:
        from urllib.parse import urlencode

        status, data = self.request("GET", "/sessions?" + urlencode({"page": page, **query}))
        if status != 200:
            raise _refusal(status, "the session lookup")
        try:
            body = _loads_strict(data)
            items = body["items"]
            assert isinstance(items, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise HistoryUnavailable(
                "the history service answered a page that is not a JSON list of rows"
            ) from None
        pages = body.get("pages")
        return Page(
            items,
            pages if isinstance(pages, int) and not isinstance(pages, bool) else None,
            body.get("total"),
        )

    def find_rows(
        self,
        session_ids: set[str],
        row_status: MarkStatus,
        agent: str | None,
        agents: set[str],
        pool: Any = None,
        width: int = 1,
    ) -> Lookup:
        """Read the pages of rows in ``row_status`` until every session's row is found.

        Page 1 says how many pages there are; the rest are read ``width`` at a time over ``pool``.
        """
        query = _lookup_query(row_status, agent)
        found: dict[str, dict[str, None]] = {}  # row ids in order, each once (a page may come twice)
        openclaw = [0]  # rows that carry an OpenClaw session id at all

        def take(items: list[Any]) -> None:
            for row in items:
                session_id = _row_session_id(row)
                openclaw[0] += session_id is not None
                if session_id in session_ids and _row_matches(row, agent, agents):
                    found.setdefault(session_id, {})[row["id"]] = None

        first = self.read_page(query, 1)
        take(first.items)
        seen = {(first.pages, repr(first.total))}
        if not first.items or first.pages is None or first.pages <= 1:
            _refuse_a_foreign_listing(first.items, openclaw[0])
            return Lookup({sid: list(ids) for sid, ids in found.items()}, True, True)
        last = min(first.pages, _page_bound(len(session_ids)))
        page, complete = 2, False
        while page <= last and not found.keys() >= session_ids:
            batch = range(page, min(page + max(1, width), last + 1))
            if pool is not None and len(batch) > 1:
                results = list(pool.map(lambda number: self.read_page(query, number), batch))
            else:
                results = [self.read_page(query, number) for number in batch]
            for result in results:
                take(result.items)
                seen.add((result.pages, repr(result.total)))
            page += len(batch)
            if any(not result.items for result in results):
                complete = True
                break
        complete = complete or page > first.pages
        if complete:
            _refuse_a_foreign_listing(first.items, openclaw[0])
        return Lookup({sid: list(ids) for sid, ids in found.items()}, complete, len(seen) == 1)

    def lookup_rows(
        self, marks: list[Mark], agents: set[str], pool: Any = None, width: int = 1
    ) -> dict[str, HistoryOutcome | HistoryUnavailable]:
        """Fill in ``row_ids`` of marks that lack them, one scan per agent. For a mark without a row:
        its final outcome, or, when the listing moved while it was read, the reason to look again."""
        outcomes: dict[str, HistoryOutcome | HistoryUnavailable] = {}
        groups: dict[tuple[MarkStatus, str | None], list[Mark]] = {}
        for mark in marks:
            if mark.row_ids is None:
                groups.setdefault((mark.status.rows_to_change, mark.agent), []).append(mark)
        for (row_status, agent), group in groups.items():
            wanted = {mark.session_id for mark in group}
            lookup = self.find_rows(wanted, row_status, agent, agents, pool, width)
            for mark in group:
                mark.row_ids = lookup.found.get(mark.session_id) or None
                if mark.row_ids:
                    continue
                if not lookup.still:
                    outcomes[mark.session_id] = HistoryUnavailable(
                        "the service's listing changed while it was read, so the row may have been missed; "
                        "it is looked up again later"
                    )
                    continue
                if mark.maybe_sent and lookup.complete:
                    outcomes[mark.session_id] = HistoryOutcome(HistoryStatus.MARKED, MAYBE_SENT_MARKED)
                    continue
                bound = _page_bound(len(wanted)) * HISTORY_PAGE_LIMIT
                where = "" if lookup.complete else f" among the newest {bound}"
                outcomes[mark.session_id] = HistoryOutcome(
                    HistoryStatus.NO_HISTORY_ROW,
                    f"no {row_status.value} row for this session in the history service{where}",
                )
        return outcomes

    def patch(self, mark: Mark) -> HistoryOutcome:
        row_ids = mark.row_ids or []
        for row_id in row_ids:
            if not _UUID_PATTERN.match(row_id):
                return HistoryOutcome(HistoryStatus.FAILED, "a row id is not a UUID", ())
            status, _ = self.request("PATCH", f"/sessions/{row_id}", {"status": mark.status.value})
            if status == 404:
                return HistoryOutcome(
                    HistoryStatus.NO_HISTORY_ROW, "the row is gone from the history service", tuple(row_ids)
                )
            if not 200 <= status < 300:
                raise _refusal(status, f"the mark of row {row_id}")
        return HistoryOutcome(HistoryStatus.MARKED, None, tuple(row_ids))


_UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _refused_connection(error: BaseException) -> bool:
    """Whether an httpx connection error was the service's port refusing it (nothing listens)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _import_httpx() -> Any:
    """httpx and the httpcore it loads, without trio and anyio.

    httpcore imports both, when installed, for async back-ends that this synchronous client never
    uses: about 100 ms of every call that marks history (measured with python -X importtime). They
    are hidden while httpx loads, and only if no one loaded them before.
    """
    import sys

    hidden = [name for name in ("trio", "anyio") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401  (httpx imports it lazily: now, while the two are hidden)
        import httpx
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return httpx


class _RequestDeadline:
    """When the request under way in this thread must be over (monotonic seconds), for the sockets
    of HistoryClient: httpx's timeouts bound each read, not the whole answer, and a service that
    sends a byte every half second (or one 102 Processing after another) would never time out."""

    local: Any = None

    @classmethod
    def set(cls, moment: float) -> None:
        if cls.local is None:
            import threading

            cls.local = threading.local()
        cls.local.moment = moment

    @classmethod
    def remaining(cls, timeout: float | None, error: Any) -> float:
        """``timeout`` shortened to what is left before the deadline; ``error`` once it has passed."""
        left = getattr(cls.local, "moment", float("inf")) - time.monotonic()
        if left <= 0:
            raise error("the history service's answer did not arrive within its time")
        return left if timeout is None else min(timeout, left)


def _deadline_backend(httpcore: Any) -> Any:
    """httpcore's own network backend, each read and write of its sockets ended at the current
    request's deadline (_RequestDeadline)."""

    class Stream(httpcore.NetworkStream):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return bytes(
                self.inner.read(max_bytes, _RequestDeadline.remaining(timeout, httpcore.ReadTimeout))
            )

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self.inner.write(buffer, _RequestDeadline.remaining(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self.inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Any:
            limit = _RequestDeadline.remaining(timeout, httpcore.ConnectTimeout)
            return Stream(self.inner.start_tls(ssl_context, server_hostname, limit))

        def get_extra_info(self, info: str) -> Any:
            return self.inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = httpcore.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            limit = _RequestDeadline.remaining(timeout, httpcore.ConnectTimeout)
            return Stream(self.inner.connect_tcp(host, port, limit, local_address, socket_options))

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    return Backend()


def _history_transport(httpx: Any, width: int, verify: bool) -> Any:
    """An httpx transport whose sockets end every read and write at the request's deadline
    (_deadline_backend). httpx has no public place for a network backend: the transport is
    HTTPTransport with its connection pool (``_pool`` since httpx 0.18) built here."""
    import httpcore

    class Transport(httpx.HTTPTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            self._pool = httpcore.ConnectionPool(
                ssl_context=httpx.create_ssl_context() if verify else None,
                max_connections=width,
                max_keepalive_connections=width,
                network_backend=_deadline_backend(httpcore),
            )

    return Transport()


def _read_body(response: Any) -> bytes:
    """A response's body, at most HISTORY_ANSWER_CAP bytes once decompressed (an endless or bomb-like
    answer is refused without being held); encodings other than gzip and deflate are refused."""
    import zlib

    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "deflate"):
        raise HistoryUnavailable(
            f"the history service answered in an encoding it was not asked for ({_cut(encoding)})"
        )
    inflate = zlib.decompressobj(wbits=47) if encoding in ("gzip", "deflate") else None  # gzip or zlib
    chunks: list[bytes] = []
    size = 0
    for raw in response.iter_raw():
        try:
            data = raw if inflate is None else inflate.decompress(raw, HISTORY_ANSWER_CAP + 1 - size)
        except zlib.error:
            raise HistoryUnavailable("the history service answered a body that does not decompress") from None
        size += len(data)
        if size > HISTORY_ANSWER_CAP or (inflate is not None and inflate.unconsumed_tail):
            raise HistoryUnavailable(
                f"the history service answered more than {HISTORY_ANSWER_CAP >> 20} MiB; it was refused"
            )
        chunks.append(data)
    return b"".join(chunks)


def _times_up_to_now(sent: list[float], blocked_until: float) -> tuple[list[float], float]:
    """A pace read back, with no time ahead of now: a send recorded in the future (the clock was
    stepped back) counts as sent now, and a block ends within the longest Retry-After honoured.
    Otherwise a clock stepped back hours, or a corrupt block, stalls delivery for ever: waits
    count no attempt, so nothing is ever given up."""
    now = time.time()
    sent = [min(moment, now) for moment in sent if math.isfinite(moment)]
    if math.isnan(blocked_until):
        blocked_until = 0.0
    return sent, min(blocked_until, now + LONGEST_RETRY_AFTER_SECONDS)


def _retry_after(value: str | None) -> float:
    """Seconds to wait, from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None:
        return DEFAULT_RETRY_AFTER_SECONDS
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = (parsedate_to_datetime(text) - _utc_now()).total_seconds()
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER_SECONDS
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER_SECONDS
    return min(max(seconds, 1.0), LONGEST_RETRY_AFTER_SECONDS)


def _server_error(status: int, content: bytes) -> str:
    """A 5xx in words, with the service's own detail (its first line, cut, without secrets)."""
    try:
        body = _loads_strict(content)
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail.strip():
        return f"HTTP {status} from the history service"
    line = _cut(_without_secrets(detail.strip().splitlines()[0]))
    hint = ""
    if "started_at" in detail and "null" in detail.lower():
        hint = (
            "; its sync of the indexes fails on an entry without an integer updatedAt (epoch ms): "
            "every listing fails until that entry is fixed"
        )
    return f"HTTP {status} from the history service: {line}{hint}"


def _row_session_ids(row: Any) -> list[str]:
    """Every session id a row names (its aria_session_id, its openclaw_session_id)."""
    metadata = row.get("metadata") if isinstance(row, dict) else None
    if not isinstance(metadata, dict):
        return []
    return [
        str(metadata[name])
        for name in ("aria_session_id", "openclaw_session_id")
        if isinstance(metadata.get(name), str)
    ]


def _row_session_id(row: Any) -> str | None:
    """The id a row is marked by: its aria_session_id, else its openclaw_session_id."""
    names = _row_session_ids(row)
    return names[0] if names else None


def _refusal(status: int, what: str) -> HistoryRefused:
    hint = " (check ARIA_API_KEY)" if status in (401, 403) else ""
    return HistoryRefused(f"the history service rejected {what} with HTTP {status}{hint}")


def _page_bound(wanted: int) -> int:
    """How many pages one lookup may read: enough for the rows it seeks, and never fewer than 50."""
    return max(HISTORY_LOOKUP_MIN_PAGES, 2 * -(-wanted // HISTORY_PAGE_LIMIT) + 10)


class Page(NamedTuple):
    """One page of the service's listing: its rows, and what it says of the whole listing."""

    items: list[Any]
    pages: int | None
    total: Any


class Lookup(NamedTuple):
    """What a lookup found: session id -> row ids; whether every page was read (so a session not
    found has no row rather than one beyond the bound); whether the listing held still meanwhile
    (a row that moved from a page not yet read to one already read was never seen)."""

    found: dict[str, list[str]]
    complete: bool
    still: bool


def _row_matches(row: Any, agent: str | None, agents: set[str]) -> bool:
    """Whether a listed row may be marked: a UUID id, and the agent asked for (whatever the
    service did with ``agent_id``), or, for a mark of no agent, one of the agents under the root."""
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not _UUID_PATTERN.match(row["id"]):
        return False
    return row.get("agent_id") == agent if agent is not None else row.get("agent_id") in agents


def _lookup_query(row_status: MarkStatus, agent: str | None) -> dict[str, Any]:
    """The listing's filters: rows in ``row_status``, cron and runtime rows included (§5)."""
    query: dict[str, Any] = {
        "limit": HISTORY_PAGE_LIMIT,
        "status": row_status.value,
        "include_cron_events": "true",
        "include_runtime_events": "true",
    }
    if agent is not None:
        query["agent_id"] = agent
    return query


def _refuse_a_foreign_listing(rows: list[Any], openclaw: int) -> None:
    """HistoryRefused when a whole listing held rows but none of an OpenClaw session: the service
    at ARIA_API_URL does not track OpenClaw sessions (a newer aria-api lists its own, §5)."""
    if rows and not openclaw:
        raise HistoryRefused(
            "the history service lists sessions, but none carries an OpenClaw session id "
            "(metadata.openclaw_session_id or aria_session_id): it does not track OpenClaw sessions "
            "(a newer aria-api?); check ARIA_API_URL. The marks wait in the outbox"
        )


# --- Transcripts: archives ------------------------------------------------------------------------


def archive_transcript(paths: AgentPaths, name: str, moment: datetime) -> str:
    """Rename a transcript to ``_archive_name(name, moment)``, or the next free millisecond's name,
    without overwriting any file."""
    source = paths.file(name)
    for step in range(1000):
        target = _archive_name(name, moment + timedelta(milliseconds=step))
        if _rename_without_overwrite(source, paths.file(target)):
            return target
    raise FileExistsError(errno.EEXIST, "no free archive name", source)


def _archive_stamp(moment: datetime) -> str:
    """The gateway's archive stamp: ISO-8601 UTC with milliseconds, ':' replaced by '-'."""
    return _iso_utc(moment).replace(":", "-")


def _stamp_time(archive_name: str) -> datetime | None:
    """When an archive was made, read from the stamp in its name (a rename keeps the old mtime)."""
    match = ARCHIVE_PATTERN.search(archive_name)
    if not match:
        return None
    date, _, clock = match.group(2).partition("T")
    return _parse_timestamp(f"{date}T{clock[:8].replace('-', ':')}{clock[8:]}")


_AT_FDCWD = -100


_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    """Linux's renameat2 from the C library, or False where there is none."""
    global _renameat2
    if _renameat2 is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            _renameat2 = getattr(libc, "renameat2", False)
        except OSError:
            _renameat2 = False
    return _renameat2


def _rename_without_overwrite(source: str, target: str) -> bool:
    """Rename ``source`` to ``target`` atomically; False when ``target`` exists.

    renameat2(RENAME_NOREPLACE) makes the check and the rename one step, so a crash never leaves
    the file under both names; where the kernel or filesystem lacks it, link + unlink.
    """
    renameat2 = _load_renameat2()
    if renameat2:
        import ctypes

        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), source)
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        return False
    os.unlink(source)
    return True


def _archive_name(name: str, moment: datetime) -> str:
    """The name a transcript archived at ``moment`` gets (§4): what a deletion's commit names."""
    return f"{name}.deleted.{_archive_stamp(moment)}"


_renameat2: Any = None


# --- Shared primitives: the skill's own files, atomic writes, paths -------------------------------


class StateFolder:
    """The skill's own files in SESSION_MANAGER_STATE_DIR: their paths, locks and whole rewrites."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def path(self, name: str) -> str:
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        return os.path.join(self.config.state_dir, name)

    @contextmanager
    def lock(self, name: str, wait: bool = True, patience: float | None = None) -> Iterator[bool]:
        """Serialise the skill's own processes on one of its state files (the gateway never reads them).

        Yields True once held; with ``wait=False``, yields False at once when another process holds it,
        and with ``patience`` seconds, False once they have passed. Otherwise a wait lasts at most
        SESSION_LOCK_TIMEOUT_SECONDS, then LockTimeout.
        """
        import fcntl

        # A permanent file: unlinking a flock file while another process waits on it breaks the lock.
        path = self.path(name + ".flock")
        descriptor = _open_state_file(path, os.O_WRONLY)
        try:
            deadline = time.monotonic() + (self.config.lock_timeout if patience is None else patience)
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait or (patience is not None and time.monotonic() >= deadline):
                        yield False
                        return
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"{path} is held by another session manager call; gave up after "
                            f"{self.config.lock_timeout:g} s. Try again shortly",
                            path,
                        ) from None
                    time.sleep(LOCK_RETRY_STEP_SECONDS)
            yield True
        finally:
            os.close(descriptor)

    def rewrite(
        self,
        name: str,
        change: Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]] | None, Outcome]],
    ) -> Outcome:
        """Rewrite one of the skill's logs: under its lock, sweep what a crashed rewrite left, re-read
        the records, and write what ``change`` makes of them atomically (None: leave the file as it
        is). Returns what ``change`` says about the change."""
        path = self.path(name)
        with self.lock(name):
            _remove_files(self.config.state_dir, _abandoned_temporaries(self.config.state_dir, name))
            changed, outcome = change(_read_json_lines(path))
            if changed is not None:
                write_atomic(path, "".join(json.dumps(record) + "\n" for record in changed).encode("utf-8"))
        return outcome

    def transcripts_turn(self, agent: str) -> AbstractContextManager[bool]:
        """The skill's own lock on an agent's transcripts: a restore renames archives back before its
        keys return, and an orphan cleanup in between would take them for orphans."""
        return self.lock(f"agent-{agent}.transcripts")


def _open_state_file(path: str, flags: int) -> int:
    """Open (creating) one of the skill's own files; anything but a regular file is refused at once."""
    return _open_checked(path, flags | os.O_CREAT | os.O_NOFOLLOW)


def _append_pieces(path: str, pieces: Iterable[str], sync: bool, separate: bool = False) -> None:
    """Append text to a log file: whole lines (``separate``: one per piece) or one line in pieces.

    A line torn by a crash is closed with a newline first, so that it never swallows the next one.
    """
    descriptor = _open_state_file(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            os.write(descriptor, b"\n")
        buffer: list[str] = []
        length = 0
        for piece in pieces:
            buffer.append(piece + "\n" if separate else piece)
            length += len(piece)
            if length >= 1 << 20:
                _write_all(descriptor, "".join(buffer).encode("utf-8"))
                buffer, length = [], 0
        _write_all(descriptor, ("".join(buffer) + ("" if separate else "\n")).encode("utf-8"))
        if sync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _append_lines(path: str, records: list[dict[str, Any]], sync: bool = True) -> None:
    _append_pieces(path, [json.dumps(record) for record in records], sync, separate=True)


def _read_json_lines(path: str) -> list[dict[str, Any]]:
    """The objects of a JSON-lines log, oldest first; a line torn by a crash is skipped."""
    try:
        with open(_open_regular(path, follow_symlinks=False), "rb") as handle:
            lines = handle.readlines()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise StoreUnreadable(
            f"cannot read the skill's own {path}: {error.strerror}; move it aside (the audit log and the "
            "history outbox must be regular files)",
            path,
        ) from None
    records = []
    for line in lines:
        try:
            record = _loads_strict(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


Outcome = TypeVar("Outcome")


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(
    path: str,
    data: bytes | Iterable[bytes],
    mode: int = 0o600,
    before_replace: Callable[[], None] | None = None,
    durable: bool = True,
) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it, and rename it over ``path``.

    ``before_replace`` runs last, just before the rename; if it raises, ``path`` is left as it was.
    ``durable=False`` skips the fsync: the file survives a killed process, not a power loss.
    """
    folder = os.path.dirname(path)
    temporary, descriptor = _new_temporary(path, mode)
    try:
        try:
            for chunk in [data] if isinstance(data, bytes) else data:
                _write_all(descriptor, chunk)
            os.fchmod(descriptor, mode)
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_folder(folder)


def _temporary_writer(name: str) -> int:
    """The pid that _new_temporary wrote into a temporary's name."""
    return int(name[-16:-8], 16)


class AgentPaths:
    """The resolved files of one agent; every path here lies inside the agents root."""

    __slots__ = ("agent", "folder", "root")

    def __init__(self, agent: str, folder: str, root: str) -> None:
        self.agent = agent
        self.folder = folder
        self.root = root

    @property
    def index(self) -> str:
        return os.path.join(self.folder, INDEX_NAME)

    def index_file(self) -> str:
        """The file the index is: sessions.json itself, or where a link inside the agents root
        leads (the gateway locks and replaces that file, and so does the skill)."""
        real = os.path.realpath(self.index)
        if not _is_inside(real, self.root):
            raise StoreUnreadable(
                f"{self.index} is a symbolic link that leads outside the agents root; it is not followed",
                self.index,
            )
        if os.path.islink(self.index) and not os.path.lexists(real):
            # No empty index: the sessions it held are out of sight, and reconcile_history would
            # take every row of the agent for vanished.
            raise StoreUnreadable(
                f"{self.index} is a symbolic link to {real}, which does not exist; it was left as it is",
                self.index,
            )
        return real

    def file(self, name: str) -> str:
        """Path of a file directly in the sessions folder; ``name`` must be a plain file name."""
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise UnsafePath(f"{_echo(name)} is not a plain file name in {self.folder}")
        return os.path.join(self.folder, name)


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_regular(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _open_checked(path: str, flags: int) -> int:
    """os.open with O_NONBLOCK, then refuse the descriptor unless it is a regular file."""
    descriptor = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return descriptor


def _open_regular(path: str, follow_symlinks: bool = True) -> int:
    """Open a file for reading, refusing anything but a regular file without waiting on it.

    O_NONBLOCK makes opening a FIFO return at once (a plain open would wait for a writer forever).
    """
    return _open_checked(path, os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW))


# --- Shared primitives: clock, ids, times, texts, garbage collection ------------------------------


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _new_id() -> str:
    """A random id for a deletion (its audit transaction) or an outbox record."""
    return os.urandom(16).hex()


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_timestamp(value: Any) -> datetime | None:
    """An aware UTC time from epoch ms, epoch seconds or an ISO-8601 string; None if it is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return _parse_timestamp(float(text))
        from dateutil.parser import isoparse

        try:
            moment = isoparse(text)
        except (ValueError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        try:
            return moment.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            return None
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        try:
            if isinstance(value, int):  # exact: no float rounding of epoch milliseconds
                return EPOCH + (
                    timedelta(milliseconds=value) if abs(value) >= 1e11 else timedelta(seconds=value)
                )
            return datetime.fromtimestamp(value / 1000.0 if abs(value) >= 1e11 else value, tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            return None
    return None


#: Variables whose values never appear in an answer (run_skill.py redacts them from every answer too).
SECRET_VARIABLES = ("ARIA_API_KEY", "OPENCLAW_GATEWAY_TOKEN")
#: A shorter secret could not be taken out of an answer without mangling it, so it is refused.
SECRET_MIN_LENGTH = 4


def _without_secrets(text: str) -> str:
    """``text`` with the deployment's secrets replaced: done before any cut, which could otherwise
    leave a secret's first characters in an answer."""
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name, "").strip()
        if len(secret) >= SECRET_MIN_LENGTH and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _cut(text: str, cap: int = TEXT_CAP) -> str:
    """A text for an answer or a message, at most ``cap`` characters, its secrets taken out before
    the cut (which could otherwise leave a secret's first characters): an echoed argument, a label
    or a key can be any length."""
    if len(text) <= cap:
        return text
    text = _without_secrets(text)
    return text if len(text) <= cap else text[: cap - 1] + "…"


def _shown_url(url: str, variable: str = "ARIA_API_URL") -> str:
    """A URL as answers may show it: scheme, host and port, never a user or password in it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"the URL in {variable}"
    return _cut(f"{parts.scheme}://{host}{port}", 200)


def _some_names(names: list[str], shown: int = 20) -> str:
    """Names for a message: the first ``shown`` of them, and how many more there are."""
    listed = ", ".join(names[:shown]) or "none"
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def _echo(value: Any) -> str:
    """An argument as an error message quotes it: its repr, cut."""
    return _cut(repr(value))


@contextmanager
def _cycle_collection(enabled: bool) -> Iterator[None]:
    """Python's cyclic garbage collector on or off for a block, then as it was.

    The one place the collector is switched. Off while a call reads and changes sessions: a large
    index is millions of live objects with no cycles, and every full collection walks them all
    again (about 20% of a 100,000-session listing). On while httpx runs: each request leaves
    reference cycles behind, and without the collector a 60,000-mark history step held 700 MB.
    """
    was_enabled = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        yield
    finally:
        (gc.enable if was_enabled else gc.disable)()


# --- Errors ---------------------------------------------------------------------------------------


class SessionManagerError(Exception):
    """Base of every error the skill reports; the dispatcher turns it into JSON.

    ``path``, where there is one, is the file the error is about (never printed on its own).
    """

    error_type = "error"
    exit_code = 1

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class InvalidArgument(SessionManagerError):
    """An argument has the wrong name, type or value."""

    error_type = "invalid_argument"
    exit_code = 2


class UnknownAgent(InvalidArgument):
    """The named agent has no sessions folder under the agents root."""

    error_type = "unknown_agent"


class UnsafePath(InvalidArgument):
    """A name would build a path outside the agents root."""

    error_type = "unsafe_path"


class ProtectedSession(SessionManagerError):
    """The session must not be deleted (running conversation, main session, live transcript)."""

    error_type = "protected_session"
    exit_code = 2


class ConfigurationError(SessionManagerError):
    """The environment does not describe a usable deployment."""

    error_type = "configuration_error"


class StoreUnreadable(SessionManagerError):
    """An agent's sessions.json cannot be read or is not a JSON object; it is left untouched."""

    error_type = "store_unreadable"


class StoreNotLive(SessionManagerError):
    """The change needs sessions.json, which the SQLite-era gateway no longer reads (a restore)."""

    error_type = "store_not_live"


class StoreWriteFailed(SessionManagerError):
    """Writing sessions.json failed (disk full, read-only folder); the old index is intact."""

    error_type = "store_write_failed"


class GatewayUnavailable(SessionManagerError):
    """The SQLite-era gateway's CLI could not be run, or the gateway could not be reached.

    ``maybe_changed``: the CLI was stopped while a delete was under way (a timeout), so some keys
    may be gone; otherwise nothing was deleted.
    """

    error_type = "gateway_unavailable"

    def __init__(self, message: str, maybe_changed: bool = False) -> None:
        super().__init__(message)
        self.maybe_changed = maybe_changed


class LockTimeout(SessionManagerError):
    """The gateway's lock on sessions.json stayed held by a live process for too long."""

    error_type = "lock_timeout"


class NothingToRestore(SessionManagerError):
    """No deletion of that session is recorded in the audit log, or it cannot be undone."""

    error_type = "nothing_to_restore"
    exit_code = 2


class RestoreConflict(SessionManagerError):
    """A key or transcript of the deleted session exists again, so restoring would overwrite it."""

    error_type = "restore_conflict"
    exit_code = 2


class HistoryUnavailable(Exception):
    """The service could not be reached or failed for now (refused, timeout, 5xx, 429, bad body)."""


class HistoryRefused(Exception):
    """The service rejected the request itself (a 4xx such as a wrong key): retrying will not help."""


class HistoryDeferred(HistoryUnavailable):
    """The mark was not sent now, or the service asked to wait (429, 503): no attempt is counted."""


class HistoryBusy(HistoryDeferred):
    """The service answered 429 or 503: it is there, and asks to wait (Retry-After)."""


class BudgetSpent(HistoryDeferred):
    """The history step's time budget for this call ran out."""


# --- What run_skill.py reads: the functions, their arguments, help --------------------------------


FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "list_sessions": list_sessions,
    "delete_session": delete_session,
    "prune_sessions": prune_sessions,
    "get_session_stats": get_session_stats,
    "cleanup_after_delegation": cleanup_after_delegation,
    "cleanup_orphans": cleanup_orphans,
    "list_deleted": list_deleted,
    "restore_session": restore_session,
    "sync_pending": sync_pending,
    "reconcile_history": reconcile_history,
}


def run_function(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call one of FUNCTIONS as run_skill.py does: a one-shot call, without cycle collection."""
    with _cycle_collection(False):
        return FUNCTIONS[name](**arguments)


#: The variables a deployment sets (README's table); run_skill's help lists them.
ENVIRONMENT = {
    "ARIA_AGENTS_DIR": "agents root: each folder with a sessions/ folder is an agent (default /app/agents; "
    "where that is missing, $OPENCLAW_STATE_DIR/agents, else ~/.openclaw/agents)",
    "ARIA_API_URL": "history service base URL, with or without /api (default http://aria-api:8000); "
    "none: no history service (nothing is marked or queued)",
    "ARIA_API_KEY": "sent as X-API-Key to the history service; never printed",
    "ARIA_SESSION_ID": "the conversation running the skill: never deleted",
    "SESSION_STALE_MINUTES": "default staleness threshold in minutes (60)",
    "SESSION_LOCK_TIMEOUT_SECONDS": "how long to wait for the gateway's lock (10)",
    "SESSION_HISTORY_BUDGET_SECONDS": "time budget of a call's history step (5)",
    "SESSION_HISTORY_CONCURRENCY": "connections for history marks (8)",
    "SESSION_HISTORY_PACE": "marks sent at most, count/seconds per window (20/5,60/60,1500/3600)",
    "SESSION_HISTORY_BACKGROUND": "1: a detached process delivers what calls leave; 0: sync_pending does (1)",
    "SESSION_MANAGER_STATE_DIR": "audit log and history outbox (default <agents root>/.session-manager)",
    "OPENCLAW_CLI": "OpenClaw's CLI: lists the cron runs the gateway protocol hides, and stands in where "
    "the protocol cannot serve (default openclaw)",
    "OPENCLAW_GATEWAY_URL": "the gateway the call's connection reaches, and the CLI's for its deletes "
    "(ws://host:port); else ws://127.0.0.1:$OPENCLAW_GATEWAY_PORT (18789), and the CLI's config",
    "OPENCLAW_GATEWAY_TOKEN": "the connection's token, and the CLI's for its deletes (in its environment, "
    "never on a command line); never printed",
    "OPENCLAW_TIMEOUT_SECONDS": "how long one CLI call or gateway request may take (60), plus 5 per key "
    "a CLI call deletes",
    "OPENCLAW_DELETE_BUDGET_SECONDS": "how long a call starts deletes through the gateway connection (60)",
}


#: delete_session's and cleanup_after_delegation's answer keys, in their order.
DELETE_ANSWER_KEYS = (
    "deleted",
    "found",
    "removed_keys",
    "transcript_archived",
    "pg_status_updated",
    "message",
    "agentId",
    "dry_run",
    "archived_files",
    "would_archive",
    "kept_transcripts",
    "history",
    "errors",
    "history_pending",
)
#: Keys an answer carries only when there is something to say (lists cut, marks delivered from the
#: outbox or given up, a history error); run_skill's per-function help names them too.
OCCASIONAL_ANSWER_KEYS = (
    "truncated",
    "message",
    "vanished_history_rows_unknown",
    "history_delivery",
    "history_pending_delivered",
    "history_gave_up",
    "history_error",
    "history_pace_error",
    "history_other_service",
    "gateway_path",
    "not_listed",
    "remaining",
    "error",
    "error_type",
)

#: Every argument of FUNCTIONS as JSON Schema, with what it means: run_skill's --help and --schema
#: (skill.json's tools) read it; tests/test_schema.py proves that each function's checks accept
#: and refuse exactly what it says.
PARAMETERS: dict[str, dict[str, Any]] = {
    "agent": {
        "type": ["string", "null"],
        "pattern": AGENT_ID_PATTERN.pattern,
        "description": 'One agent, by its id such as "main"; null or absent: every agent.',
    },
    "session_id": {
        "type": "string",
        "pattern": (
            r"^(?:global|agent:[a-z0-9][a-z0-9_-]{0,63}:[^\u0000-\u001f]{1,512}"
            r"|[a-zA-Z0-9][a-zA-Z0-9._-]{0,127})$"
        ),
        "description": 'A sessionId, or a full session key ("agent:<agent>:<rest>").',
    },
    "session_type": {
        "type": ["string", "null"],
        "pattern": "^[a-z0-9_-]{1,64}$",
        "description": 'Only sessions of this type, such as "cron", "cron_run" or "subagent"; null: all.',
    },
    "limit": {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": 10_000}, {"const": "all"}],
        "description": 'How many items a page holds at most, or "all".',
    },
    "offset": {
        "type": "integer",
        "minimum": 0,
        "maximum": 10**9,
        "description": "Where the page starts: the previous page's next_offset.",
    },
    "min_idle_minutes": {
        "type": ["number", "null"],
        "minimum": 0,
        "description": "Only sessions idle at least this long (never-active sessions count as idle).",
    },
    "max_age_minutes": {
        "type": ["number", "null"],
        "minimum": 0,
        "description": "Sessions idle longer than this are stale; null: $SESSION_STALE_MINUTES or 60.",
    },
    "stale_threshold_minutes": {
        "type": ["number", "null"],
        "minimum": 0,
        "description": "Sessions idle longer than this count as stale; null: $SESSION_STALE_MINUTES or 60.",
    },
    "dry_run": {"type": "boolean", "description": "Say what would change, and change nothing."},
    "force": {
        "type": "boolean",
        "description": "Delete a protected session too (never the running conversation); only when asked to.",
    },
    "archive_retention_days": {
        "type": "number",
        "minimum": 0,
        "exclusiveMaximum": 100_000,
        "description": "Archived transcripts older than this many days are deleted.",
    },
    "detail": {
        "enum": list(DETAIL_LEVELS),
        "description": '"summary": lists cut to keep the answer under 32 KiB; "full": every list whole.',
    },
    "reassign": {
        "type": "boolean",
        "description": "Send marks queued under another ARIA_API_URL/ARIA_API_KEY with this one "
        "(only when the operator says the old configuration was a mistake).",
    },
}

#: skill.json's head, in the format of Aria's skill catalogue (run_skill's --schema adds the tools
#: and the command that runs one; {baseDir} is the skill's folder, as OpenClaw names it).
SKILL_CARD: dict[str, Any] = {
    "name": "aria-sessionmanager",
    "version": SKILL_VERSION,
    "description": "Two-layer session management: sessions leave the gateway's store (sessions.json or, "
    "from OpenClaw 2026.8, its SQLite database through the gateway) with their transcripts archived, "
    "then their history rows are marked ended; with undo where the store allows it.",
    "author": "aria-sessionmanager developers",
    "layer": 2,
    "dependencies": [],
    "focus_affinity": ["orchestrator"],
}
SKILL_RUN = "python3 {baseDir}/run_skill.py session_manager {{tool}} '{{args_json}}'"
#: The skill's folder: what `run_skill.py session_manager --install` puts there, and nothing else.
SKILL_FILES = ("SKILL.md", "run_skill.py", "session_manager.py", "skill.json")
#: The Python packages the skill needs, each with the oldest release it works with (pyproject.toml).
PACKAGES = {"httpx": "0.23", "python-dateutil": "2.8", "websockets": "15"}

#: For each function: one example call and the keys of its answer (run_skill's per-function help).
HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "list_sessions": (
        '{"agent": "main", "min_idle_minutes": 60, "limit": 50, "offset": 0}',
        ("session_count", "returned", "offset", "has_more", "next_offset", "sessions", "agents", "errors"),
    ),
    "get_session_stats": (
        '{"stale_threshold_minutes": 60}',
        (
            "total_sessions",
            "stale_sessions",
            "active_sessions",
            "by_agent",
            "stale_threshold_minutes",
            "by_type",
            "protected_sessions",
            "stale_unprotected_sessions",
            "oldest_session",
            "orphaned_transcripts",
            "pending_history_marks",
            "vanished_history_rows",
            "disk",
            "agents",
            "errors",
        ),
    ),
    "prune_sessions": (
        '{"max_age_minutes": 60, "dry_run": true}',
        (
            "total_sessions",
            "pruned_count",
            "kept_count",
            "dry_run",
            "deleted_ids",
            "errors",
            "threshold_minutes",
            "protected",
            "skipped",
            "archived_transcripts",
            "history",
            "history_by_session",
            "history_pending",
        ),
    ),
    "delete_session": ('{"session_id": "sub-1", "dry_run": true}', DELETE_ANSWER_KEYS),
    "cleanup_after_delegation": ('{"session_id": "sub-1"}', DELETE_ANSWER_KEYS),
    "cleanup_orphans": (
        '{"dry_run": true, "archive_retention_days": 30}',
        (
            "dry_run",
            "archive_retention_days",
            "archived_orphans",
            "removed_keys",
            "deleted_archives",
            "stale_locks_removed",
            "skipped",
            "errors",
            "audit_records_expired",
            "history",
            "history_pending",
        ),
    ),
    "list_deleted": (
        '{"agent": "main", "limit": 20, "offset": 0}',
        ("count", "total", "deleted", "offset", "has_more", "next_offset"),
    ),
    "restore_session": (
        '{"session_id": "sub-1"}',
        (
            "restored",
            "agentId",
            "restored_keys",
            "restored_transcripts",
            "missing_archives",
            "pg_status_updated",
            "history",
            "message",
            "errors",
            "history_pending",
        ),
    ),
    "sync_pending": ("{}", ("delivered", "still_pending", "gave_up", "busy", "message")),
    "reconcile_history": (
        '{"dry_run": true}',
        (
            "dry_run",
            "rows_read",
            "openclaw_rows",
            "present_rows",
            "rows_ended",
            "by_agent",
            "by_type",
            "skipped",
            "unreadable_agents",
            "sessions",
            "history",
            "message",
            "history_pending",
        ),
    ),
}


__all__ = [
    "ENVIRONMENT",
    "FUNCTIONS",
    "HELP",
    "ConfigurationError",
    "InvalidArgument",
    "LockTimeout",
    "NothingToRestore",
    "ProtectedSession",
    "RestoreConflict",
    "SessionManagerError",
    "StoreNotLive",
    "StoreUnreadable",
    "StoreWriteFailed",
    "UnknownAgent",
    "UnsafePath",
    "deliver_in_background",
    "run_function",
    *FUNCTIONS,
]


if __name__ == "__main__":
    # The dispatcher imports this module, never the reverse: point the caller to it.
    raise SystemExit(
        "run the session manager through its dispatcher: "
        "python3 run_skill.py session_manager <function> '<json>' (or python3 -m run_skill ...)"
    )
