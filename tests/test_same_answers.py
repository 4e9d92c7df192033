"""The skill's answers and files on the demo tree are those of the golden record, byte for byte.

The record (tests/golden/same_answers.jsonl) was made before the module was restructured; a change
that means to alter an answer rewrites it with ``python3 tests/same_answers.py --write`` and shows
the difference in its commit.
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO


def test_every_answer_and_file_matches_the_golden_record() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "same_answers.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    now = completed.stdout.splitlines()
    golden = (REPO / "tests" / "golden" / "same_answers.jsonl").read_text("utf-8").splitlines()
    assert len(now) == len(golden)
    for before, after in zip(golden, now, strict=True):
        call = json.loads(before)["call"]
        assert json.loads(after) == json.loads(before), f"answer or files changed for {call}"
        assert after == before, f"same content, different bytes for {call}"
