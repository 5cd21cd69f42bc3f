"""ArtifactRef and the one time parser: round trips and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.artifacts import ArtifactRef, base_name
from strongroom.errors import InvalidInput
from strongroom.timefmt import parse_utc, utc_stamp

names = st.text(st.characters(blacklist_characters="@", blacklist_categories=("Cs",)), min_size=1)


@given(names, st.one_of(st.none(), st.integers(min_value=1, max_value=10**9)))
def test_ref_round_trips(name: str, version: int | None) -> None:
    ref = ArtifactRef(name, version)
    assert ArtifactRef.parse(str(ref)) == ref
    assert base_name(str(ref)) == name


@pytest.mark.parametrize("text", ["", "@3", "minilm@", "minilm@0", "minilm@x", "minilm@-1", "a@1@2"])
def test_bad_refs_are_refused_with_a_remedy(text: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        ArtifactRef.parse(text, obj="--model")
    assert exc.value.obj == "--model" and "NAME@VERSION" in (exc.value.remedy or "")


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_time_round_trips(t: int) -> None:
    assert parse_utc(utc_stamp(t)) == t


def test_times_without_offset_are_utc_and_offsets_count() -> None:
    assert parse_utc("1970-01-02") == 86400
    assert parse_utc("1970-01-01T02:00:00+02:00") == 0


def test_unreadable_time_names_the_argument() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_utc("yesterday", obj="--since")
    assert exc.value.obj == "--since"
