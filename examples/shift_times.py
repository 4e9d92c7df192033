"""Shift every time in a copy of the demo tree so that it reads as of now, not as of 2025-11-25."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REFERENCE_MS = 1764072000000  # 2025-11-25T12:00:00Z, the moment the demo tree describes


def shift(value: object, offset_ms: int) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value > 10**12:
        return value + offset_ms
    if isinstance(value, int) and value > 10**9:
        return value + offset_ms // 1000
    if isinstance(value, str) and value.startswith("2025-11-25T"):
        from datetime import datetime, timedelta

        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) + timedelta(milliseconds=offset_ms)
        return moment.isoformat().replace("+00:00", "Z")
    return value


def main(root: Path) -> None:
    offset = int(time.time() * 1000) - REFERENCE_MS
    for index in root.glob("*/sessions/sessions.json"):
        store = json.loads(index.read_text("utf-8"))
        for entry in store.values():
            for name in ("updatedAt", "endedAt"):
                if name in entry:
                    entry[name] = shift(entry[name], offset)
        index.write_text(json.dumps(store, indent=2, ensure_ascii=False), "utf-8")
        index.chmod(0o600)
    two_hours_ago = time.time() - 7200
    for transcript in root.glob("*/sessions/*.jsonl"):
        os.utime(transcript, (two_hours_ago, two_hours_ago))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
