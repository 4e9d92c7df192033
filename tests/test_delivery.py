"""History marks against a stand-in true to the real aria-api (issue 19, docs/FORMATS.md §5): its
limiter, its sync inside GET, uuid5 rows; delivered paced, in the background, never given up.

The stand-in is bench/history_stub.py's Service, in this process; the skill and its delivery
process are real subprocesses. A faster clock (``SCALE``) divides every duration of the limiter
and of the skill's pace alike, so that minutes of real delivery take seconds here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, add_transcript, ago, run_cli, write_index
from history_service import HistoryService

import session_manager as sm

sys.path.insert(0, str(REPO / "bench"))
from history_stub import Limiter, Rows, Service

SKILL = "session_manager"


def scaled_pace(scale: float) -> str:
    """The skill's default pace with every window divided by ``scale``."""
    return ",".join(f"{count}/{seconds / scale:g}" for count, seconds in sm.DEFAULT_HISTORY_PACE)


def stale_tree(root: Path, agents: int, per_agent: int) -> list[str]:
    """``agents`` agents of ``per_agent`` sub-agent sessions, three in four stale; the stale ids."""
    stale = []
    for a in range(agents):
        agent = f"agent-{a}"
        store = {}
        for n in range(per_agent):
            session_id = f"{agent}-s{n}"
            store[f"agent:{agent}:subagent:{n}"] = {
                "sessionId": session_id,
                "updatedAt": ago(300 if n % 4 else 1),
            }
            stale += [session_id] if n % 4 else []
        write_index(root, agent, store)
    return stale


@pytest.fixture
def service(root: Path) -> Iterator[Any]:
    made: list[Service] = []

    def start(**options: Any) -> Service:
        limiter = Limiter(**options.pop("limiter", {}))
        served = Service(Rows([]), limiter=limiter, agents_root=str(root), **options)
        made.append(served)
        return served

    yield start
    for served in made:
        served.stop()


def sync_now(served: Service) -> None:
    """One GET, which runs the service's sync: every session of the indexes gets its row."""
    urllib.request.urlopen(f"{served.url}/api/sessions?limit=1", timeout=60).read()


def row_status(served: Service) -> dict[str, str]:
    with served.rows.lock:
        return {row["metadata"]["openclaw_session_id"]: row["status"] for row in served.rows.rows}


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def aim_the_skill(
    monkeypatch: pytest.MonkeyPatch, served: Service, pace: str, background: bool = True
) -> None:
    """The skill's environment for a test of delivery: this service, this pace, the delivery
    process on or off."""
    monkeypatch.setenv("ARIA_API_URL", served.url)
    monkeypatch.setenv("SESSION_HISTORY_PACE", pace)
    monkeypatch.setenv("SESSION_HISTORY_BACKGROUND", "1" if background else "0")


class OtherClient(threading.Thread):
    """Another skill behind the same IP, writing once every ``every`` seconds; counts its 429s."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.refused, self.sent = url, every, 0, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            request = urllib.request.Request(
                f"{self.url}/api/sessions/{uuid.uuid4()}", data=b'{"status": "ended"}', method="PATCH"
            )
            try:
                urllib.request.urlopen(request, timeout=10).read()
                self.sent += 1
            except urllib.error.HTTPError as error:
                self.refused += error.code == 429
            except OSError:
                pass  # the service stopped under a last request


def deliverer_starts(root: Path) -> int:
    log = root / ".session-manager" / "history-delivery.log"
    return log.read_text().count(": started:") if log.exists() else 0


# --- Paced, in the background, beside another client --------------------------------------------


def test_a_large_prune_returns_at_once_and_its_rows_end_in_the_background(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 x 200 sessions, 600 marks: the real numbers would take ten minutes (60 marks a minute);
    the clock here runs 20 times faster for the service and the skill alike."""
    scale = 20.0
    stale = stale_tree(root, 4, 200)
    served = service(limiter={"scale": scale}, sync_interval=30 / scale)
    sync_now(served)
    aim_the_skill(monkeypatch, served, scaled_pace(scale))
    other = OtherClient(served.url, every=2 / scale)
    other.start()
    started = time.monotonic()
    code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    returned = time.monotonic() - started
    assert code == 0 and answer["pruned_count"] == len(stale) == 600
    assert returned < 20 and "background" in answer["history_delivery"]
    ended = wait_until(lambda: all(row_status(served)[s] == "ended" for s in stale), 12 * 60 / scale + 60)
    other.stopping.set()
    other.join(timeout=15)
    assert ended, f"{sum(row_status(served)[s] == 'ended' for s in stale)} of {len(stale)} rows ended"
    assert other.sent > 100 and other.refused == 0
    assert served.limiter.blocks == 0  # the skill never triggered the service's block
    assert len(served.rows.patches) == len(set(served.rows.patches))  # each row once
    assert not (root / ".session-manager" / "history-abandoned.jsonl").exists()
    assert deliverer_starts(root) == 1


def test_more_marks_than_an_hour_allows_go_in_as_many_windows_none_given_up(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,532 marks at most 1,500 an hour: two windows of the pace; a 100 times faster clock."""
    scale = 100.0
    stale = stale_tree(root, 4, 511)
    assert len(stale) == 1532
    served = service(limiter={"scale": scale}, sync_interval=30 / scale)
    sync_now(served)
    aim_the_skill(monkeypatch, served, scaled_pace(scale))
    code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert code == 0 and answer["pruned_count"] == len(stale)
    window = 3600 / scale
    assert wait_until(lambda: all(row_status(served)[s] == "ended" for s in stale), 4 * window + 60)
    assert served.limiter.blocks <= 1 and not (root / ".session-manager" / "history-abandoned.jsonl").exists()


# --- A delivery killed, two started at once -------------------------------------------------------


def deliverer_pid(root: Path) -> int | None:
    log = root / ".session-manager" / "history-delivery.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        if ": started:" in line:
            return int(line.split(" pid ", 1)[1].split(":", 1)[0])
    return None


def test_a_killed_delivery_is_finished_by_the_next_call_each_row_once(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = stale_tree(root, 1, 160)
    served = service(limiter={"on": False})
    sync_now(served)
    aim_the_skill(monkeypatch, served, "20/1")  # 120 marks: six seconds
    run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert wait_until(lambda: deliverer_pid(root) is not None and len(served.rows.patches) > 30, 30)
    os.kill(deliverer_pid(root) or 0, signal.SIGKILL)
    killed_at = len(served.rows.patches)
    assert killed_at < len(stale)
    time.sleep(1.5)
    assert run_cli(SKILL, "sync_pending", "{}")[0] == 0
    assert wait_until(lambda: all(row_status(served)[s] == "ended" for s in stale), 60)
    assert len(served.rows.patches) == len(set(served.rows.patches)) == len(stale)  # exactly once


@pytest.mark.parametrize(
    ("left", "swept"),
    [
        (".history-pace.json.0123456789ab.tmp", True),  # a save killed before its rename
        (".history-pace.json.draft.tmp", False),  # not a name the skill makes
        (".audit.jsonl.0123456789ab.tmp", False),  # another file's: swept under that file's lock
    ],
)
def test_what_a_killed_pace_save_left_is_swept_by_the_next_turn(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch, left: str, swept: bool
) -> None:
    served = service(limiter={"on": False})
    aim_the_skill(monkeypatch, served, "20/1", background=False)
    state = root / ".session-manager"
    state.mkdir()
    (state / left).write_text('{"sent": [')
    assert sm.sync_pending()["still_pending"] == []
    assert (state / left).exists() is not swept


def test_two_calls_at_once_start_one_delivery_process(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = stale_tree(root, 2, 120)
    served = service(limiter={"on": False})
    sync_now(served)
    aim_the_skill(monkeypatch, served, "20/1")
    calls = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "run_skill.py"),
                SKILL,
                "prune_sessions",
                json.dumps({"agent": agent}),
            ],
            stdout=subprocess.DEVNULL,
            env=os.environ,
        )
        for agent in ("agent-0", "agent-1")
    ]
    assert [call.wait(timeout=60) for call in calls] == [0, 0]
    assert wait_until(lambda: all(row_status(served)[s] == "ended" for s in stale), 60)
    assert deliverer_starts(root) == 1


def test_with_background_delivery_off_sync_pending_drains_with_the_same_pace(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = stale_tree(root, 1, 40)
    served = service(limiter={"on": False})
    sync_now(served)
    aim_the_skill(monkeypatch, served, "10/2", background=False)
    answer = sm.prune_sessions(max_age_minutes=60)
    assert 0 < answer["history_pending"] < len(stale) and "sync_pending" in answer["history_delivery"]
    for _ in range(5):
        if sm.sync_pending()["still_pending"] == []:
            break
    assert all(row_status(served)[s] == "ended" for s in stale)
    assert not (root / ".session-manager" / "history-delivery.log").exists()


# --- What the service says, in words --------------------------------------------------------------


def test_a_500_quotes_the_services_detail_and_says_what_to_fix(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(root, "main", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(300)}})
    write_index(root, "other", {"agent:other:main": {"sessionId": "o", "updatedAt": "yesterday"}})
    served = service()
    monkeypatch.setenv("ARIA_API_URL", served.url)
    answer = sm.delete_session("x")
    reason = answer["history"]["reason"]
    assert answer["history"]["status"] == "queued"
    assert 'null value in column "started_at"' in reason and "integer updatedAt" in reason


def test_a_service_that_tracks_no_openclaw_session_is_named_as_the_wrong_one(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(root, "main", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(300)}})
    rows = [{"id": str(uuid.uuid4()), "agent_id": "main", "status": "active", "metadata": {"engine": "chat"}}]
    served = Service(Rows(rows))
    try:
        monkeypatch.setenv("ARIA_API_URL", served.url)
        answer = sm.delete_session("x")
    finally:
        served.stop()
    assert answer["history"]["status"] == "queued"
    assert answer["history_error"]["error_type"] == "history_configuration_error"
    assert "does not track OpenClaw sessions" in answer["history_error"]["error"]


def test_a_lookup_slowed_by_the_services_sync_is_finished_in_the_background(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first GET of a call runs the service's sync (seconds at 2,000 sessions): past the
    call's budget, its mark waits; the delivery process gives the lookup the time it needs."""
    write_index(root, "main", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(300)}})
    served = service(sync_delay=0.0)
    sync_now(served)
    served.sync.delay, served.sync.interval = 4.0, 0.0  # every GET now syncs, slowly
    monkeypatch.setenv("ARIA_API_URL", served.url)
    monkeypatch.setenv("SESSION_HISTORY_BACKGROUND", "1")
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "x"}')
    assert code == 0 and answer["history"]["status"] == "queued"
    assert wait_until(lambda: row_status(served)["x"] == "ended", 60)


def test_a_single_delete_is_marked_within_its_call_where_the_service_is_quick(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(root, "main", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(300)}})
    add_transcript(root, "main", "x.jsonl", age_minutes=300)
    served = service()
    sync_now(served)
    monkeypatch.delenv("SESSION_HISTORY_PACE")  # the default pace
    monkeypatch.setenv("ARIA_API_URL", served.url)
    started = time.monotonic()
    answer = sm.cleanup_after_delegation("x")
    assert answer["pg_status_updated"] is True and time.monotonic() - started < 5
    assert row_status(served)["x"] == "ended"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 60.0), ("120", 120.0), ("0", 1.0), ("nonsense", 60.0), ("999999", 3600.0)],
)
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float) -> None:
    assert sm._retry_after(header) == seconds


def test_retry_after_is_read_as_an_http_date() -> None:
    later = sm._utc_now().timestamp() + 90
    from email.utils import formatdate

    assert 85 <= sm._retry_after(formatdate(later, usegmt=True)) <= 91


HOUR = 3600.0


@pytest.mark.parametrize(
    ("sent_ahead", "blocked_ahead", "waits_at_most"),
    [
        ([], -1.0, 0.0),
        ([], 10 * 24 * HOUR, HOUR),  # a block 10 days ahead
        ([], 1e300, HOUR),
        ([2 * HOUR] * 20, -1.0, 5.0),  # the clock stepped back 2 h: 20 sends fill the 5 s window
        ([2 * HOUR] * 60, -1.0, 60.0),
        ([1e300] * 30, 2 * HOUR, HOUR),
    ],
)
def test_a_pace_read_back_never_waits_longer_than_its_longest_window_or_retry_after(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    sent_ahead: list[float],
    blocked_ahead: float,
    waits_at_most: float,
) -> None:
    """Times ahead of now in history-pace.json (a clock stepped back, a corrupt block) once queued
    marks with "turn comes in 863999 s" for ever; now they count as now, a block as an hour."""
    monkeypatch.setenv("SESSION_HISTORY_PACE", "20/5,60/60,1500/3600")
    now = time.time()
    state = root / ".session-manager"
    state.mkdir(exist_ok=True)
    saved = {"sent": [now + ahead for ahead in sent_ahead], "blocked_until": now + blocked_ahead}
    (state / "history-pace.json").write_text(json.dumps(saved))

    pace = sm.Pace.load(sm.Config.from_environment())

    assert pace.opens_at(time.time()) - now <= waits_at_most + 1


def test_a_pace_file_as_large_as_its_windows_need_is_read_whole(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 L2: 100,000 sends in one window (1.9 MB) were read cut at 1 MiB, the file taken
    for corrupt and the pace reset: the next sender went at once into a full window."""
    monkeypatch.setenv("SESSION_HISTORY_PACE", "100000/3600")
    config = sm.Config.from_environment()
    pace = sm.Pace(config.history_pace, [time.time() - 60 + n / 10_000 for n in range(100_000)], 0.0)
    state = root / ".session-manager"
    pace.path = str(state / "history-pace.json")
    state.mkdir()
    pace.save()
    assert (state / "history-pace.json").stat().st_size > 1 << 20 and pace.trouble is None
    loaded = sm.Pace.load(config)
    assert loaded.trouble is None and loaded.opens_at(time.time()) > time.time() + 3000  # the window is full


@pytest.mark.parametrize(
    ("windows", "sends", "kept"),
    [
        ("20/5,60/60,1500/3600", 5000, 1500),  # no more than the largest count is kept
        ("5/1", 5000, 5),
        ("100000/1", 50, 50),
    ],
)
def test_a_pace_file_keeps_only_what_a_window_can_still_count(
    root: Path, monkeypatch: pytest.MonkeyPatch, windows: str, sends: int, kept: int
) -> None:
    monkeypatch.setenv("SESSION_HISTORY_PACE", windows)
    config = sm.Config.from_environment()
    pace = sm.Pace(config.history_pace, [time.time() - 0.9 + n / 10**6 for n in range(sends)], 0.0)
    (root / ".session-manager").mkdir()
    pace.path = str(root / ".session-manager" / "history-pace.json")
    pace.save()
    assert len(json.loads(Path(pace.path).read_text())["sent"]) == kept


@pytest.mark.parametrize(
    ("in_its_place", "said"),
    [
        ("folder", "could not be written"),  # every save failed, and nothing said so
        ("garbage", "could not be read"),
    ],
)
def test_a_pace_file_that_cannot_be_read_or_written_is_said_in_the_answer(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch, in_its_place: str, said: str
) -> None:
    stale = stale_tree(root, 1, 4)
    served = service(limiter={"on": False})
    sync_now(served)
    aim_the_skill(monkeypatch, served, "100/1", background=False)
    pace = root / ".session-manager" / "history-pace.json"
    pace.parent.mkdir(exist_ok=True)
    if in_its_place == "folder":
        pace.mkdir()
    else:
        pace.write_text('{"sent": [1, 2')
    answer = sm.prune_sessions()
    assert answer["pruned_count"] == len(stale) and answer["history"] == {"marked": len(stale)}
    assert said in answer["history_pace_error"] and "history-pace.json" in answer["history_pace_error"]


@pytest.mark.parametrize("agents_dir", ["agents", "./agents/../agents"])
def test_a_relative_agents_root_still_reaches_the_delivery_process(
    root: Path, service: Any, monkeypatch: pytest.MonkeyPatch, agents_dir: str
) -> None:
    """The delivery process starts in the state folder: a relative ARIA_AGENTS_DIR once named
    nothing there, it exited without a log line and the marks stayed pending for good."""
    stale = stale_tree(root, 1, 6)
    served = service(limiter={"on": False})
    sync_now(served)
    aim_the_skill(monkeypatch, served, "1/1")
    monkeypatch.setenv("SESSION_HISTORY_BUDGET_SECONDS", "0.5")
    monkeypatch.setenv("ARIA_AGENTS_DIR", agents_dir)
    call = [sys.executable, str(REPO / "run_skill.py"), SKILL, "prune_sessions", "{}"]

    answer = json.loads(subprocess.run(call, cwd=root.parent, capture_output=True, text=True).stdout)

    assert answer["pruned_count"] == len(stale) == 4 and answer["history_pending"] > 0
    assert wait_until(lambda: all(row_status(served)[s] == "ended" for s in stale), 60)
    assert deliverer_starts(root) == 1


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        ({"ARIA_AGENTS_DIR": "/nonexistent/agents"}, "ARIA_AGENTS_DIR"),
        ({"SESSION_HISTORY_PACE": "many/often"}, "SESSION_HISTORY_PACE"),
    ],
)
def test_a_delivery_process_that_cannot_work_says_why_and_the_next_answer_reports_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, breaks: dict[str, str], said: str
) -> None:
    """Issue 26 M3: it started in the state folder with a configuration it could not use, and
    exited without a word while the answer said delivery "continues in the background"."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("SESSION_MANAGER_STATE_DIR", str(state))
    stale = stale_tree(root, 1, 6)
    with monkeypatch.context() as started:  # the process as History.start_deliverer starts it
        started.chdir(state)
        for name, value in breaks.items():
            started.setenv(name, value)
        sm.deliver_in_background()
    (line,) = (state / "history-delivery.log").read_text().splitlines()
    assert "cannot work" in line and said in line
    answer = sm.prune_sessions()  # the service is down: its marks wait
    assert answer["pruned_count"] == len(stale) and answer["history_pending"] == len(stale)
    assert "the last delivery process could not work" in answer["history_delivery"]
    assert said in answer["history_delivery"] and "sync_pending" in answer["history_delivery"]


@pytest.mark.parametrize(
    ("next_call", "sent_there"),
    [
        ({}, True),  # the same configuration: delivered
        ({"ARIA_API_KEY": "another-key"}, False),
        ({"ARIA_API_URL": "the other service"}, False),  # it has rows for them too: never touched
    ],
)
def test_a_mark_goes_only_to_the_service_it_was_queued_for(
    root: Path,
    history: HistoryService,
    monkeypatch: pytest.MonkeyPatch,
    next_call: dict[str, str],
    sent_there: bool,
) -> None:
    """Issue 26 M1: marks queued for service A were sent by a call configured for B, found no row
    there and were finished as "no history row"; A's rows stayed active for good."""
    stale = stale_tree(root, 1, 4)
    other = HistoryService().start()
    try:
        for service in (history, other):
            for session_id in stale:
                service.add_row(session_id, agent="agent-0", legacy=True)
        monkeypatch.setenv("ARIA_API_KEY", "the-key")
        history.faults.status = 500  # failing when the prune queues its marks
        queued = sm.prune_sessions()
        assert queued["history_pending"] == len(stale)
        history.faults.status = None
        for name, value in next_call.items():
            monkeypatch.setenv(name, other.url if value == "the other service" else value)
        answer = sm.sync_pending()

        ended = {s for s in stale if history.row_of(s)["status"] == "ended"}
        assert ended == (set(stale) if sent_there else set())
        assert all(other.row_of(s)["status"] == "active" for s in stale) and other.patches == []
        if not sent_there:
            assert len(answer["still_pending"]) == len(stale)
            assert f"{len(stale)} marks were queued for another" in answer["history_other_service"]
            assert (
                "the-key"
                not in json.dumps(answer) + (root / ".session-manager/history-outbox.jsonl").read_text()
            )
            now_here = other if "ARIA_API_URL" in next_call else history
            assert len(sm.sync_pending(reassign=True)["delivered"]) == len(stale)  # the operator's word
            assert all(now_here.row_of(s)["status"] == "ended" for s in stale)
    finally:
        other.stop()


@pytest.mark.parametrize("sends", [1, 3, 5])
def test_each_send_is_on_disk_before_it_goes(root: Path, monkeypatch: pytest.MonkeyPatch, sends: int) -> None:
    """A sender killed mid-turn once forgot its sends (its pace was saved at the end of the turn
    only), and the next sender went 10 PATCHes into a window of 5."""
    monkeypatch.setenv("SESSION_HISTORY_PACE", "5/10")
    config = sm.Config.from_environment()
    pace = sm.Pace.load(config)

    for _ in range(sends):
        assert pace.take(time.time() + 60)

    recorded = json.loads((root / ".session-manager" / "history-pace.json").read_text())["sent"]
    now = time.time()
    assert len(recorded) == sends
    assert (sm.Pace.load(config).opens_at(now) - now > 9) == (sends == 5)  # a full window, read back
