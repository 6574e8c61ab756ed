"""The console's filter forms read from the query string: a bad value is named on the page, never a 500."""

from __future__ import annotations

import pytest

from services.console.letters import LetterForm
from services.console.pages import ConversationForm


@pytest.mark.parametrize("zone", ["America", "Etc", "__pycache__", "A" * 256])
def test_a_time_zone_that_is_a_folder_or_too_long_a_name_is_named_not_a_500(zone: str) -> None:
    """ZoneInfo raises OSError (IsADirectoryError for a folder of the zone database, a name too long
    for a file) beside ValueError and ZoneInfoNotFoundError: ?tz=America was a 500 on every page."""
    form = ConversationForm.read({"tz": zone, "since": "2026-03-10"}, [])
    assert any("unknown time zone" in n for n in form.notes) and not form.errors, form.notes  # a 200 page
    assert form.filters.since is not None and form.filters.since.utcoffset() is not None  # read as UTC
    letters = LetterForm.read({"tz": zone})
    assert any("unknown time zone" in e for e in letters.errors), letters.errors
