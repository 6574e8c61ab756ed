"""Integration tests: a record a service produced that breaks its published schema fails the test that read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.contract import Watch


@pytest.fixture(autouse=True)
def records_read_keep_the_contract(contract_watch: Watch) -> Iterator[None]:
    before = len(contract_watch.violations)
    yield
    found = contract_watch.violations[before:]
    assert not found, "records produced by the services break the published schemas:\n" + "\n".join(found[:20])
