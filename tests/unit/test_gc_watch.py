"""The node process logs full garbage collections longer than GC_FULL_LOG_S and freezes their
survivors out of later scans (issue 20)."""

import gc
import logging

import pytest

from chronik_trio.node import main

pytestmark = pytest.mark.timeout(60)


def test_a_full_collection_longer_than_the_limit_is_logged_and_freezes_and_a_young_one_is_not(monkeypatch, caplog):
    before = list(gc.callbacks)
    frozen_before = gc.get_freeze_count()
    monkeypatch.setattr(main, "GC_FULL_LOG_S", -1.0)  # every full collection counts as long
    main._watch_gc()
    try:
        with caplog.at_level(logging.WARNING, logger=main.log.name):
            gc.collect(0)
            assert not [r for r in caplog.records if "garbage collection" in r.message]
            gc.collect(2)
        assert len([r for r in caplog.records if "full garbage collection took" in r.message]) == 1
        assert gc.get_freeze_count() > frozen_before  # the survivors of the long collection
    finally:
        gc.callbacks[:] = before
        gc.unfreeze()
