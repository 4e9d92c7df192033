"""What the second adversarial pass broke (issue 18), one class per section, each a table of cases.

Run against the code before the fixes (commit 10bbf75), 57 of these 58 rows fail; the one that
held (a state folder that is a link to a sessions folder) pins the rule beside its new twin.
Peers are real: HTTP services on 127.0.0.1 (tests/hostile.py), stand-in CLIs that leave children
behind, the skill as a subprocess where time and memory are measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hostile
import pytest
from helpers import REPO, add_transcript, ago, read_index, run_cli, snapshot, sqlite_era_agent, write_index
from history_service import HistoryService

import session_manager as sm

HERE = Path(__file__).resolve().parent
SKILL = "session_manager"
BUDGET_BYTES = 32 * 1024


def measured_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 150
) -> tuple[int, Any, float, int]:
    """The skill's command line in a wrapper that reports its peak memory: exit code, answer,
    seconds, and the largest resident size (KiB) of the skill and of what it started."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "started = time.monotonic()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(done.stdout)\n"
        "print(time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, str(REPO / "run_skill.py"), SKILL, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    *answer, figures = completed.stdout.strip().splitlines()
    seconds, peak = figures.split()
    return completed.returncode, json.loads("\n".join(answer)), float(seconds), int(peak)


@pytest.fixture
def service() -> Iterator[Callable[..., hostile.HostileService]]:
    started: list[hostile.HostileService] = []

    def start(handler: Any, listing: bool = False) -> hostile.HostileService:
        made = hostile.ListingService(handler) if listing else hostile.HostileService(handler)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


def one_stale_subagent(root: Path, session_id: str = "sub-1", agent: str = "main") -> None:
    write_index(
        root,
        agent,
        {f"agent:{agent}:subagent:{session_id}": {"sessionId": session_id, "updatedAt": ago(300)}},
    )
    add_transcript(root, agent, f"{session_id}.jsonl", age_minutes=300)


def paused_call(
    function: str, arguments: str, step: str, seconds: float, tmp_path: Path
) -> subprocess.Popen[str]:
    """The skill in its own process, paused ``seconds`` at ``step`` (tests/skill_harness.py); returns
    once it is paused there, so that the test can act as another process would meanwhile."""
    marker = tmp_path / "paused"
    env = {
        "FAULT_STEP": step,
        "FAULT_ACTION": "pause",
        "FAULT_SLEEP": str(seconds),
        "FAULT_MARKER": str(marker),
    }
    process = subprocess.Popen(
        [sys.executable, str(HERE / "skill_harness.py"), "call", function, arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


# --- H1. The history step keeps its budget and its memory, whatever the service does ---------------


@pytest.mark.parametrize(
    "handler",
    [
        hostile.drip_body,
        hostile.drip_headers,
        hostile.processing_forever,
        hostile.endless_chunks,
        hostile.gzip_bomb,
    ],
    ids=["dripped-body", "dripped-headers", "102-forever", "endless-chunks", "gzip-bomb"],
)
def test_a_hostile_service_costs_a_delete_its_budget_and_no_memory(
    root: Path, service: Callable[..., hostile.HostileService], handler: hostile.Handler
) -> None:
    one_stale_subagent(root)
    hostile.bomb_body()  # made before the clock starts: the service answers at once
    hostile_service = service(handler)
    code, answer, seconds, peak_kib = measured_cli(
        "delete_session", '{"session_id": "sub-1"}', env={"ARIA_API_URL": hostile_service.url}
    )
    assert (code, answer["removed_keys"], answer["history"]["status"]) == (
        0,
        ["agent:main:subagent:sub-1"],
        "queued",
    )
    assert seconds < 20  # a 3 s budget plus its grace; before: 42 s to 74 s
    assert peak_kib < 250_000  # before: 2.1 GB (bomb) to 7.2 GB (endless body)


# --- H2. A mark goes only to a session no store holds, of the agent its row names --------------------


@pytest.mark.parametrize(
    ("running", "arguments"),
    [
        (None, {"session_id": "m-live", "agent": "analyst"}),
        ("agent:main:telegram:direct:7", {"session_id": "m-live", "agent": "analyst"}),
    ],
    ids=["main-session-named-in-another-agent", "running-conversation-by-its-key"],
)
def test_a_live_sessions_row_is_never_ended_by_a_delete_in_the_wrong_agent(
    root: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch, running: str | None, arguments: Any
) -> None:
    write_index(root, "main", {"agent:main:main": {"sessionId": "m-live", "updatedAt": ago(1)}})
    write_index(root, "analyst", {})
    if running:
        monkeypatch.setenv("ARIA_SESSION_ID", running)
    live_row = history.add_row("m-live", agent="main")
    code, answer, _ = run_cli(SKILL, "delete_session", json.dumps(arguments))
    assert code == 0 and "agent analyst" in answer["message"]
    assert history.row_of("m-live")["status"] == "active"
    assert [row_id for row_id, _ in history.patches] == [] and live_row


# --- H3. A transcript in use is never archived, not even by a forced delete ---------------------------


def lock_of_this_process(root: Path, agent: str, transcript: str) -> None:
    lock = root / agent / "sessions" / (transcript + ".lock")
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2020-01-01T00:00:00.000Z"}))


@pytest.mark.parametrize(
    ("case", "call"),
    [
        ("forced-delete-of-a-locked-transcript", ("delete_session", {"session_id": "sub-1", "force": True})),
        ("session-file-of-the-running-conversation", ("delete_session", {"session_id": "sub-1"})),
        ("session-file-of-the-running-conversation", ("prune_sessions", {"max_age_minutes": 60})),
    ],
)
def test_a_transcript_in_use_stays_where_it_is(
    root: Path, monkeypatch: pytest.MonkeyPatch, case: str, call: tuple[str, dict[str, Any]]
) -> None:
    entry: dict[str, Any] = {"sessionId": "sub-1", "updatedAt": ago(300)}
    (root / "main" / "sessions").mkdir(parents=True)
    if case == "forced-delete-of-a-locked-transcript":
        in_use = "sub-1.jsonl"
        lock_of_this_process(root, "main", in_use)
    else:
        in_use = "talk-now.jsonl"
        entry["sessionFile"] = in_use
        monkeypatch.setenv("ARIA_SESSION_ID", "talk-now")
    write_index(root, "main", {"agent:main:subagent:sub-1": entry})
    add_transcript(root, "main", in_use, "in use\n", age_minutes=300)
    function, arguments = call
    code, _, _ = run_cli(SKILL, function, json.dumps(arguments))
    assert code == 0 and read_index(root, "main") == {}
    assert (root / "main" / "sessions" / in_use).read_text() == "in use\n"
    assert not list((root / "main" / "sessions").glob(in_use + ".deleted.*"))


@pytest.mark.parametrize("function", ["delete_session", "prune_sessions"])
def test_a_run_that_starts_writing_after_the_read_keeps_its_transcript(
    root: Path, tmp_path: Path, function: str
) -> None:
    """Another run takes the transcript a stale entry's sessionFile names between the read and the
    archive: the lock is read again just before the rename."""
    write_index(
        root,
        "main",
        {
            "agent:main:subagent:sub-1": {
                "sessionId": "sub-1",
                "updatedAt": ago(300),
                "sessionFile": "run-2.jsonl",
            }
        },
    )
    add_transcript(root, "main", "run-2.jsonl", "in use\n", age_minutes=300)
    arguments = '{"session_id": "sub-1"}' if function == "delete_session" else '{"max_age_minutes": 60}'
    process = paused_call(function, arguments, "after_replace", 2, tmp_path)
    lock_of_this_process(root, "main", "run-2.jsonl")
    process.communicate(timeout=60)
    assert process.returncode == 0 and read_index(root, "main") == {}
    assert (root / "main" / "sessions" / "run-2.jsonl").read_text() == "in use\n"


# --- H4. cleanup_orphans asks the transcript rule before it finishes an interrupted rename -----------


@pytest.mark.parametrize("use", ["live-lock", "running-conversation", "written-seconds-ago"])
def test_an_orphan_in_use_keeps_its_name_even_beside_its_twin_archive(
    root: Path, monkeypatch: pytest.MonkeyPatch, use: str
) -> None:
    write_index(root, "main", {})
    orphan = add_transcript(
        root,
        "main",
        "o-1.jsonl",
        "still written\n",
        age_minutes=None if use == "written-seconds-ago" else 300,
    )
    os.link(orphan, orphan.parent / "o-1.jsonl.deleted.2020-01-01T00-00-00.000Z")  # a rename cut in half
    if use == "live-lock":
        lock_of_this_process(root, "main", "o-1.jsonl")
    elif use == "running-conversation":
        monkeypatch.setenv("ARIA_SESSION_ID", "o-1")
    code, answer, _ = run_cli(SKILL, "cleanup_orphans", "{}")
    assert code == 0 and orphan.read_text() == "still written\n"
    assert [item["file"] for item in answer["skipped"]] == ["o-1.jsonl"]


# --- H5. No secret reaches stdout, escaped, cut or echoed ---------------------------------------------

KEY = 'k3y"with\\quote-0123456789'


@pytest.mark.parametrize("where", ["label", "label-cut-mid-key", "row-id-echo"])
def test_no_secret_is_printed_in_any_form(
    root: Path, service: Callable[..., hostile.HostileService], where: str
) -> None:
    label = "x" * 190 + KEY if where == "label-cut-mid-key" else f"about {KEY}"
    write_index(
        root, "main", {"agent:main:subagent:s": {"sessionId": "s", "updatedAt": ago(300), "label": label}}
    )
    listing = service(lambda target: hostile.pages_of([hostile.row("s", row_id=KEY)], target), listing=True)
    env = {"ARIA_API_KEY": KEY, "ARIA_API_URL": listing.url}
    printed = [
        run_cli(SKILL, "list_sessions", "{}", env=env)[1],
        run_cli(SKILL, "delete_session", '{"session_id": "s"}', env=env)[1],
    ]
    text = json.dumps(printed, ensure_ascii=False)
    for form in (KEY, json.dumps(KEY)[1:-1], KEY[:8]):
        assert form not in text and form not in json.dumps(printed)


@pytest.mark.parametrize("variable", ["ARIA_API_KEY", "OPENCLAW_GATEWAY_TOKEN"])
def test_a_secret_too_short_to_redact_is_refused(root: Path, variable: str) -> None:
    code, answer, _ = run_cli(SKILL, "list_sessions", "{}", env={variable: "ab"})
    assert (code, answer["error_type"]) == (1, "configuration_error") and "ab" not in answer["error"].split(
        variable
    )[1]


# --- H6. A deletion's archives can be found again whatever stops the run after its commit -----------


def harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "skill_harness.py"), "call", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize("stop", ["after_archive", "before_archive"])
def test_a_run_killed_after_its_commit_leaves_a_deletion_that_restores_whole(root: Path, stop: str) -> None:
    one_stale_subagent(root)
    add_transcript(root, "main", "sub-1-topic-3.jsonl", "topic\n", age_minutes=300)
    before = snapshot(root / "main")
    harness("delete_session", '{"session_id": "sub-1"}', env={"FAULT_STEP": stop, "FAULT_ACTION": "kill"})
    (listed,) = sm.list_deleted()["deleted"]
    assert sorted(listed["transcripts"]) == ["sub-1-topic-3.jsonl", "sub-1.jsonl"]
    sm.cleanup_orphans()  # what the next calls do; the orphans it archives stay the deletion's
    restored = sm.restore_session("sub-1")
    assert restored["missing_archives"] == [] and snapshot(root / "main") == before


def test_an_audit_log_that_cannot_grow_after_the_commit_loses_no_archive(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_stale_subagent(root)
    original = sm.append_audit

    def full_after_commit(config: sm.Config, records: list[dict[str, Any]], sync: bool = False) -> None:
        if any(record["event"] == "archived" for record in records):
            raise sm.StoreWriteFailed("No space left on device")
        original(config, records, sync)

    monkeypatch.setattr(sm, "append_audit", full_after_commit)
    answer = sm.delete_session("sub-1")
    assert answer["removed_keys"] == ["agent:main:subagent:sub-1"] and "audit log" in answer["errors"][0]
    monkeypatch.setattr(sm, "append_audit", original)
    assert sm.restore_session("sub-1")["restored_transcripts"] == ["sub-1.jsonl"]
    assert (root / "main" / "sessions" / "sub-1.jsonl").exists()


# --- H7. A call that stalls while holding the gateway's lock never replaces the gateway's write -----


def test_a_lock_taken_over_during_a_stall_leaves_the_gateways_write(root: Path, tmp_path: Path) -> None:
    one_stale_subagent(root)
    process = paused_call("delete_session", '{"session_id": "sub-1"}', "locked", 2, tmp_path)
    # The gateway judges the lock stale, takes it, and writes a new session into the index.
    lock = root / "main" / "sessions" / "sessions.json.lock"
    lock.unlink()
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2026-01-01T00:00:00.000Z"}))
    gateways = {
        **read_index(root, "main"),
        "agent:main:subagent:new": {"sessionId": "new", "updatedAt": ago(0)},
    }
    write_index(root, "main", gateways)
    lock.unlink()
    output, _ = process.communicate(timeout=60)
    answer = json.loads(output)
    assert (process.returncode, answer["error_type"]) == (1, "lock_timeout") and "taken over" in answer[
        "error"
    ]
    assert read_index(root, "main") == gateways
    assert (root / "main" / "sessions" / "sub-1.jsonl").exists() and sm.list_deleted()["total"] == 0


def test_a_held_lock_is_kept_fresh_so_the_gateway_never_judges_it_stale(root: Path, tmp_path: Path) -> None:
    one_stale_subagent(root)
    process = paused_call("delete_session", '{"session_id": "sub-1"}', "locked", 11, tmp_path)
    lock = root / "main" / "sessions" / "sessions.json.lock"
    first = json.loads(lock.read_text())["createdAt"]
    time.sleep(10.5)
    assert json.loads(lock.read_text())["createdAt"] > first
    process.communicate(timeout=60)
    assert process.returncode == 0 and read_index(root, "main") == {}


# --- H8 and M6. A CLI's leftover children neither hang a call nor spoil its answer -------------------


@pytest.fixture
def detaching_cli(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_websockets: None
) -> Path:
    """A SQLite-era agent whose CLI leaves children behind; the skill without websockets, so that
    its deletes go through the CLI too."""
    store = sqlite_era_agent(root, "ops")
    monkeypatch.setenv("OPENCLAW_CLI", str(hostile.detaching_cli(tmp_path)))
    monkeypatch.setenv("FAKE_STORE", str(store))
    monkeypatch.setenv("OPENCLAW_TIMEOUT_SECONDS", "2")
    return root


@pytest.mark.parametrize(
    ("mode", "call", "expected"),
    [
        ("answers", ("list_sessions", {}), {"ops": {"sessions": 1, "store": "sqlite"}}),
        ("hangs", ("list_sessions", {}), {"ops": {"sessions": 1, "store": "sqlite"}}),
        ("answers", ("delete_session", {"session_id": "ops-a"}), ["agent:ops:subagent:a"]),
        ("hangs", ("delete_session", {"session_id": "ops-a"}), ["agent:ops:subagent:a"]),
    ],
)
def test_a_cli_that_leaves_a_child_holding_its_output_is_answered_in_time(
    detaching_cli: Path, mode: str, call: tuple[str, dict[str, Any]], expected: Any
) -> None:
    function, arguments = call
    code, answer, seconds, _ = measured_cli(function, json.dumps(arguments), env={"FAKE_OPENCLAW": mode})
    assert code == 0 and seconds < 15  # before: 60 s, the child's life
    assert (answer["agents"] if function == "list_sessions" else answer["removed_keys"]) == expected


def test_a_cli_listing_too_large_to_hold_is_refused_in_bounded_memory(detaching_cli: Path) -> None:
    code, answer, _, peak_kib = measured_cli(
        "list_sessions", "{}", env={"FAKE_OPENCLAW": "huge", "OPENCLAW_TIMEOUT_SECONDS": "60"}
    )
    assert code == 0 and answer["errors"][0]["error_type"] == "gateway_unavailable"
    assert "MiB" in answer["errors"][0]["error"] and peak_kib < 400_000  # before: 915 MB for 300 MB


# --- H9. The state folder is never inside a sessions folder, links or not ---------------------------


@pytest.mark.parametrize(
    "link", ["state-folder-is-a-link-to-a-sessions-folder", "sessions-folder-is-a-link-to-the-state"]
)
def test_a_state_folder_reached_through_a_link_is_refused(root: Path, link: str) -> None:
    (root / "main").mkdir()
    if link == "state-folder-is-a-link-to-a-sessions-folder":
        write_index(root, "main", {})
        (root / "state").symlink_to(root / "main" / "sessions")
    else:
        (root / "state").mkdir()
        (root / "main" / "sessions").symlink_to(root / "state")
        write_index(root, "main", {})
    code, answer, _ = run_cli(
        SKILL, "cleanup_orphans", "{}", env={"SESSION_MANAGER_STATE_DIR": str(root / "state")}
    )
    assert (code, answer["error_type"]) == (1, "configuration_error")
    assert sorted(p.name for p in (root / "state").iterdir()) == ["sessions.json"]


# --- H10. A row missed because the listing moved is looked for again ---------------------------------


def test_a_row_that_moved_between_pages_is_marked_by_a_later_lookup(
    root: Path, service: Callable[..., hostile.HostileService]
) -> None:
    one_stale_subagent(root, "target")
    rows = [hostile.row(f"other-{n}") for n in range(150)] + [hostile.row("target")]
    served = {"pages": 0}

    def listing(target: str) -> bytes:
        page = hostile.pages_of(rows, target)
        served["pages"] += 1
        if served["pages"] == 1:
            del rows[:60]  # another client ends 60 rows of page 1 meanwhile: the target moves up
        return page

    listing_service = service(listing, listing=True)
    env = {"ARIA_API_URL": listing_service.url}
    first = run_cli(SKILL, "delete_session", '{"session_id": "target"}', env=env)[1]
    assert first["history"]["status"] == "queued" and listing_service.patched == []
    assert run_cli(SKILL, "sync_pending", "{}", env=env)[1]["delivered"][0]["outcome"] == "marked"
    assert listing_service.patched == [rows[-1]["id"]]


# --- M1. After the commit, the answer is the deletion's, with any error beside it -------------------


def nested_page(target: str) -> bytes:
    return b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("world", ["hostile-page", "idna-host", "odd-cli-answer"])
def test_an_error_after_the_commit_never_replaces_the_deletions_answer(
    root: Path,
    service: Callable[..., hostile.HostileService],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    world: str,
) -> None:
    one_stale_subagent(root)
    env: dict[str, str] = {}
    if world == "hostile-page":
        env["ARIA_API_URL"] = service(nested_page, listing=True).url
    elif world == "idna-host":
        env["ARIA_API_URL"] = "http://" + "a" * 64 + ".invalid:1"
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "sub-1"}', env=env)
    assert code == 0 and answer["removed_keys"] == ["agent:main:subagent:sub-1"], answer
    assert answer["history"]["status"] == "queued"
    assert sm.list_deleted()["total"] == 1


def test_an_odd_cli_answer_after_a_delete_keeps_the_deletions_answer(detaching_cli: Path) -> None:
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "ops-a"}', env={"FAKE_OPENCLAW": "odd"}
    )
    assert code == 0 and answer["removed_keys"] == ["agent:ops:subagent:a"], answer


# --- M2 and M3. Every answer stays within 32 KiB, and every page advances -----------------------------


def many_agents(root: Path, count: int, store: Callable[[int], dict[str, Any]]) -> None:
    for n in range(count):
        write_index(root, f"agent-{n:05d}", store(n))


@pytest.mark.parametrize(
    ("world", "call"),
    [
        ("10000-agents", ("list_sessions", {"agent": "nobody"})),
        ("one-session-in-3000-agents", ("delete_session", {"session_id": "dup"})),
        ("60kb-session-id", ("get_session_stats", {})),
        ("60kb-session-id", ("delete_session", {"session_id": "agent:main:subagent:big"})),
        ("50kb-model", ("get_session_stats", {})),
        ("100kb-key", ("delete_session", {"session_id": "tg-1"})),
        ("none", ("list_sessions", {"agent": "x" * 100_000})),
        ("none", ("delete_session", {"session_id": "x" * 100_000})),
        ("none", ("list_sessions", {"detail": "x" * 100_000})),
        ("none", ("list_sessions", {"x" * 100_000: 1})),
        ("none", ("no_such_function_" + "x" * 100_000, {})),
    ],
)
def test_no_answer_passes_32_kib(root: Path, world: str, call: tuple[str, dict[str, Any]]) -> None:
    big = "x" * 60_000
    if world == "10000-agents":
        many_agents(root, 10_000, lambda n: {})
    elif world == "one-session-in-3000-agents":
        for n in range(3_000):
            name = f"agent-with-a-rather-long-name-{n:05d}"
            write_index(root, name, {f"agent:{name}:subagent:d": {"sessionId": "dup", "updatedAt": ago(5)}})
    elif world == "60kb-session-id":
        write_index(root, "main", {"agent:main:subagent:big": {"sessionId": big, "updatedAt": ago(5)}})
    elif world == "50kb-model":
        model = {"name": "m", "notes": "n" * 50_000}
        write_index(
            root, "main", {"agent:main:subagent:m": {"sessionId": "m", "updatedAt": ago(5), "model": model}}
        )
    elif world == "100kb-key":
        write_index(
            root, "main", {"agent:main:telegram:" + "x" * 100_000: {"sessionId": "tg-1", "updatedAt": ago(5)}}
        )
    else:
        write_index(root, "main", {})
    function, arguments = call
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, function, json.dumps(arguments)],
        capture_output=True,
        env=os.environ,
        timeout=120,
    )
    assert json.loads(completed.stdout) and len(completed.stdout) <= BUDGET_BYTES


def test_a_page_always_advances_however_large_a_session(root: Path) -> None:
    store = {
        f"agent:main:subagent:{n}": {"sessionId": f"{n}-" + "x" * 60_000, "updatedAt": ago(n)}
        for n in range(3)
    }
    write_index(root, "main", store)
    seen = []
    for offset in range(3):
        code, answer, _ = run_cli(SKILL, "list_sessions", json.dumps({"limit": 1, "offset": offset}))
        assert (
            code == 0
            and answer["returned"] == 1
            and answer["next_offset"] == (offset + 1 if offset < 2 else None)
        )
        assert len(json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()) <= BUDGET_BYTES
        seen.append(answer["sessions"][0]["id"])
    assert len(set(seen)) == 3


# --- M4. Only valid rows of the right agent are marked, each once ----------------------------------


@pytest.mark.parametrize("listing", ["bad-id-first", "page-repeated-forever", "agent-filter-ignored"])
def test_a_mark_reaches_exactly_the_sessions_own_rows(
    root: Path, service: Callable[..., hostile.HostileService], listing: str
) -> None:
    one_stale_subagent(root)
    good = hostile.row("sub-1")
    if listing == "bad-id-first":
        rows = [hostile.row("sub-1", row_id="not-a-uuid"), good]
        answer_of: Callable[[str], bytes] = lambda target: hostile.pages_of(rows, target)  # noqa: E731
        expected = [good["id"]]
    elif listing == "page-repeated-forever":  # with a second session of the call never on it
        store = read_index(root, "main")
        write_index(
            root,
            "main",
            {**store, "agent:main:subagent:sub-2": {"sessionId": "sub-2", "updatedAt": ago(300)}},
        )
        rows = [good, *(hostile.row(f"o-{n}") for n in range(99))]
        answer_of = lambda target: json.dumps({"items": rows, "total": 10**9, "pages": 10**9}).encode()  # noqa: E731
        expected = [good["id"]]
    else:
        rows = [hostile.row("sub-1", agent="analyst")]
        answer_of = lambda target: hostile.pages_of(rows, target)  # noqa: E731
        expected = []
    listing_service = service(answer_of, listing=True)
    code, answer, _ = run_cli(
        SKILL, "prune_sessions", '{"max_age_minutes": 60}', env={"ARIA_API_URL": listing_service.url}
    )
    assert code == 0 and listing_service.patched == expected  # before: the repeated page, 50 times
    assert answer["history"].get("marked", 0) == len(expected)


# --- M7. A restore's mark waits in the outbox before it is sent --------------------------------------


def test_a_restore_killed_in_its_history_step_is_marked_active_by_the_next_call(
    root: Path, history: HistoryService
) -> None:
    one_stale_subagent(root)
    history.add_row("sub-1")
    sm.delete_session("sub-1")
    assert history.row_of("sub-1")["status"] == "ended"
    harness(
        "restore_session",
        '{"session_id": "sub-1"}',
        env={"FAULT_STEP": "before_history", "FAULT_ACTION": "kill"},
    )
    assert "agent:main:subagent:sub-1" in read_index(root, "main")
    sm.sync_pending()
    assert history.row_of("sub-1")["status"] == "active"


# --- M8. Directories where the skill expects its files fail only what they concern -------------------


@pytest.mark.parametrize("where", ["sessions.json.lock", ".sessions.json.0123456789ab.tmp"])
def test_a_directory_in_place_of_a_lock_or_a_temporary_file(root: Path, where: str) -> None:
    one_stale_subagent(root, "m-1", "main")
    one_stale_subagent(root, "a-1", "analyst")
    (root / "main" / "sessions" / where).mkdir()
    os.utime(root / "main" / "sessions" / where, (time.time() - 60, time.time() - 60))  # "stale"
    code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert code == 0 and "a-1" in answer["deleted_ids"]
    if where.endswith(".lock"):
        assert [(e["agent"], e["error_type"]) for e in answer["errors"]] == [("main", "lock_timeout")]
        assert "is a directory" in answer["errors"][0]["error"]
    else:
        assert answer["deleted_ids"] == ["m-1", "a-1"] or sorted(answer["deleted_ids"]) == ["a-1", "m-1"]
    assert (root / "main" / "sessions" / where).is_dir()


# --- M9. A key held by another agent's index is not called gone ------------------------------------


def test_a_key_in_another_agents_index_is_found_there(root: Path) -> None:
    write_index(root, "main", {})
    write_index(root, "analyst", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(5)}})
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "agent:main:subagent:x"}')
    assert code == 0 and "any index" not in answer["message"] and 'pass "agent"' in answer["message"]
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "agent:main:subagent:x", "agent": "analyst"}'
    )
    assert code == 0 and answer["removed_keys"] == ["agent:main:subagent:x"]


# --- M10. An index that is a link inside the root stays a link, locked where the gateway locks ------


def test_an_index_that_is_a_link_stays_a_link(root: Path) -> None:
    one_stale_subagent(root)
    folder = root / "main" / "sessions"
    (folder / "sessions.json").rename(folder / "store.json")
    (folder / "sessions.json").symlink_to("store.json")
    (folder / "store.json.lock").write_text(
        json.dumps({"pid": os.getpid(), "createdAt": "2099-01-01T00:00:00.000Z"})
    )
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "sub-1"}', env={"SESSION_LOCK_TIMEOUT_SECONDS": "1"}
    )
    assert (code, answer["error_type"]) == (1, "lock_timeout")  # the gateway holds the lock beside the file
    (folder / "store.json.lock").unlink()
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "sub-1"}')
    assert (
        code == 0
        and (folder / "sessions.json").is_symlink()
        and json.loads((folder / "store.json").read_text()) == {}
    )


# --- Low. stdin closed -------------------------------------------------------------------------------


def test_arguments_from_a_closed_stdin_are_the_callers_mistake(root: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, "list_sessions", "-"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=os.environ,
        close_fds=True,
        preexec_fn=lambda: os.close(0),
    )
    answer = json.loads(completed.stdout)
    assert (completed.returncode, answer["error_type"]) == (2, "invalid_argument")
