"""Property tests: every way of writing a time means the same instant; keys map to their kind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

import session_manager as sm

moments = st.datetimes(
    min_value=datetime(2002, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
).map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000))
slugs = st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True)
segments = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)


@given(moments)
def test_epoch_ms_seconds_and_iso_strings_agree(moment: datetime) -> None:
    millis = (moment - sm.EPOCH) // timedelta(milliseconds=1)
    assert sm._parse_timestamp(millis) == moment
    assert sm._parse_timestamp(str(millis)) == moment
    assert sm._parse_timestamp(millis // 1000) == moment.replace(microsecond=0)
    assert sm._parse_timestamp(moment.isoformat()) == moment
    assert sm._parse_timestamp(moment.isoformat().replace("+00:00", "Z")) == moment
    assert sm._parse_timestamp(moment.replace(tzinfo=None).isoformat()) == moment  # naive is UTC
    offset = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert sm._parse_timestamp(offset.isoformat()) == moment


@given(
    st.one_of(
        st.text(max_size=20).filter(lambda t: not t.strip().lstrip("-").replace(".", "").isdigit()),
        st.booleans(),
        st.none(),
        st.lists(st.integers()),
        st.just(float("nan")),
    )
)
def test_what_is_not_a_time_is_none_and_never_raises(value: object) -> None:
    result = sm._parse_timestamp(value)
    assert result is None or result.tzinfo is not None


@given(moments)
def test_archive_stamp_round_trips_through_the_gateway_pattern(moment: datetime) -> None:
    name = f"abc.jsonl.deleted.{sm._archive_stamp(moment)}"
    assert sm.ARCHIVE_PATTERN.search(name)
    assert sm._stamp_time(name) == moment


@given(slugs, st.lists(segments, min_size=1, max_size=4))
def test_key_kinds(agent: str, rest: list[str]) -> None:
    assert sm._session_type_of(f"agent:{agent}:main") == "main"
    assert sm._session_type_of(f"agent:{agent}:cron:{rest[0]}") == "cron"
    assert sm._session_type_of(f"agent:{agent}:cron:{rest[0]}:run:{rest[-1]}") == "cron_run"
    assert sm._session_type_of(f"agent:{agent}:subagent:{rest[0]}") == "subagent"
    kind = sm._session_type_of(f"agent:{agent}:{':'.join(rest)}")
    assert kind == ("main" if rest == ["main"] else "cron" if rest[0] == "cron" else rest[0])


def test_special_keys() -> None:
    assert sm._session_type_of("global") == "global"
    assert sm._session_type_of("weird") == "other"
    assert sm._session_type_of("agent:main:telegram:group:5") == "telegram"
