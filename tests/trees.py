"""A realistic two-agent tree with every kind of session the rules treat differently."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helpers import add_transcript, ago, write_index

#: sessionId -> why a 60-minute prune must keep it (None: it is pruned)
EXPECTED_AT_60 = {
    "main-live": "fresh",
    "tg-1": "main_agent_conversation",
    "cron-hb": None,
    "run-9": None,
    "sub-1": "fresh",
    "sub-2": "transcript_locked",
    "an-main": "main_session",
    "an-cron": None,
    "an-exp": None,
    "an-dash": None,
    "an-hook": "fresh",
    "an-nots": None,
}


def build_tree(root: Path) -> None:
    """Write the main and analyst agents: indexes, transcripts, topic files and a live lock."""
    old_iso = (datetime.now(timezone.utc) - timedelta(hours=5)).isoformat()
    write_index(
        root,
        "main",
        {
            "agent:main:main": {
                "sessionId": "main-live",
                "updatedAt": ago(1),
                "model": "gpt-4o",
                "skillsSnapshot": {"skills": [{"name": "x", "body": "é" * 50}]},
            },
            "agent:main:telegram:direct:42": {
                "sessionId": "tg-1",
                "updatedAt": ago(600),
                "chatType": "direct",
                "deliveryContext": {"to": "telegram:42"},
            },
            "agent:main:cron:heartbeat": {
                "sessionId": "cron-hb",
                "updatedAt": ago(300),
                "label": "heartbeat",
                "contextTokens": 500,
                "unknownField": [1, {"nested": True}],
            },
            "agent:main:cron:heartbeat:run:r1": {"sessionId": "cron-hb", "updatedAt": ago(200)},
            "agent:main:cron:digest:run:r9": {
                "sessionId": "run-9",
                "updatedAt": ago(90),
                "sessionFile": "run-9.jsonl",
            },
            "agent:main:subagent:abc": {
                "sessionId": "sub-1",
                "updatedAt": ago(5),
                "spawnedBy": "agent:main:main",
            },
            "agent:main:subagent:def": {"sessionId": "sub-2", "updatedAt": ago(400), "status": "running"},
        },
    )
    for name in (
        "main-live.jsonl",
        "tg-1.jsonl",
        "cron-hb.jsonl",
        "run-9.jsonl",
        "run-9-topic-7.jsonl",
        "sub-1.jsonl",
        "sub-2.jsonl",
    ):
        add_transcript(root, "main", name, f'{{"file": "{name}"}}\n')
    lock = root / "main" / "sessions" / "sub-2.jsonl.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": datetime.now(timezone.utc).isoformat()}))
    write_index(
        root,
        "analyst",
        {
            "agent:analyst:main": {"sessionId": "an-main", "updatedAt": ago(900)},
            "agent:analyst:cron:x": {"sessionId": "an-cron", "updatedAt": old_iso},
            "agent:analyst:explicit:report": {
                "sessionId": "an-exp",
                "updatedAt": ago(120) // 1000,
                "displayName": "Report",
            },
            "agent:analyst:dashboard:u": {"sessionId": "an-dash"},
            "agent:analyst:hook:h": {"sessionId": "an-hook"},
            "agent:analyst:subagent:z": {"sessionId": "an-nots"},
        },
    )
    add_transcript(root, "analyst", "an-dash.jsonl", age_minutes=500)
    add_transcript(root, "analyst", "an-hook.jsonl", age_minutes=2)
    add_transcript(root, "analyst", "an-cron.jsonl")
