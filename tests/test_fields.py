"""The checks modules run on what users type: any text gives a value or InvalidInput, never another error."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from hemei.core.errors import InvalidInput
from hemei.core.fields import iso_date, local_time, past_time, query_flag, since_date, text, whole_number

#: Text that looks like what the checks parse, with the odd characters users and scripts produce.
TYPED = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-+:. T²١٢٣", max_size=40),
    st.from_regex(r"-?[0-9]{1,6}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2})?([+-][0-9]{2}:[0-9]{2}|Z)?)?",
                  fullmatch=True),
)


@given(TYPED)
def test_any_text_is_a_whole_number_or_refused_plainly(value):
    try:
        number = whole_number(value, "n", low=-10**18, high=10**18)
    except InvalidInput:
        return
    assert value.strip().isascii() and number == int(value.strip())


@given(TYPED)
def test_any_text_is_a_time_and_date_or_refused_plainly(value):
    for check in (local_time, past_time, iso_date):
        try:
            shown = check(value, "at")
        except InvalidInput:
            continue
        assert "2000" <= shown[:4] <= "2999"


@given(TYPED)
def test_any_text_is_a_since_date_or_refused_plainly(value):
    try:
        shown = since_date(value)
    except InvalidInput:
        return
    assert shown is None if value == "" else len(shown) == 10 and since_date(shown) == shown


@given(st.dates())
def test_every_date_is_a_since_date_whatever_its_year(day):
    assert since_date(day.isoformat()) == day.isoformat() == since_date(day)


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 5000, "1.5", "", "--1"])
def test_digits_other_than_ascii_and_huge_numbers_are_refused(value):
    with pytest.raises(InvalidInput, match="whole number"):
        whole_number(value, "limit")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1999-12-31 23:00",
                                   "3000-01-01"])
def test_times_outside_the_years_people_record_are_refused(value):
    with pytest.raises(InvalidInput, match="between the years 2000 and 2999"):
        local_time(value, "at")


def test_ordinary_input_is_read_as_typed():
    assert whole_number(" 12 ", "n") == 12 and whole_number("-3", "n", low=-5) == -3
    assert local_time("2026-11-01 10:00", "at") == "2026-11-01T10:00:00"
    assert iso_date("2026-11-01") == "2026-11-01"


@pytest.mark.parametrize("value, lines, said", [
    ("王丽\x00", False, "U+0000"), ("王丽\r伪造", False, "a line break"), ("a\nb", False, "a line break"),
    ("\u202e丽王", False, "U+202E"), ("a\x1bb", True, "U+001B"), ("注意\u2066x", True, "U+2066"),
    ("\u200b\u200d", False, "is required"),
])
def test_text_refuses_control_characters_a_table_or_a_reader_would_be_fooled_by(value, lines, said):
    with pytest.raises(InvalidInput, match=re.escape(said)):
        text(value, "name", lines=lines)


def test_text_of_several_lines_keeps_line_breaks_and_tabs():
    assert text(" 楼道堆物\r\n已清理\t完毕 ", "note", lines=True) == "楼道堆物\n已清理\t完毕"
    assert text("旧式\r换行", "note", lines=True) == "旧式\n换行"
    assert text("👨\u200d👩\u200d👧 一家", "name") == "👨\u200d👩\u200d👧 一家"  # joiners inside text are fine
    assert text("\u200b", "note", required=False) is None


@given(st.text(max_size=30))
def test_any_text_is_taken_without_controls_or_refused_plainly(value):
    for lines in (False, True):
        try:
            got = text(value, "name", lines=lines)
        except InvalidInput:
            continue
        assert got is None or not any(ord(c) < 32 and c not in ("\n\t" if lines else "") for c in got)


def test_json_values_of_the_wrong_type_are_refused_not_read_as_something_else():
    """Found by a hostile review: a JSON number 20261121 was taken as a date, ?open=yes as no."""
    for value in (20261121, 2026.1, True, ["2026-11-21"]):
        with pytest.raises(InvalidInput, match="not a date"):
            iso_date(value)
        with pytest.raises(InvalidInput, match="not a time"):
            local_time(value)
    assert iso_date(" 2026-11-21 ") == "2026-11-21"
    assert [query_flag(v, "open") for v in (None, "", "0", "false", "1", "true", "TRUE")] == \
        [False, False, False, False, True, True, True]
    for odd in ("yes", "2", "on"):
        with pytest.raises(InvalidInput, match="open must be 1 or 0"):
            query_flag(odd, "open")
