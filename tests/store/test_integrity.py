"""The record's extent: up to which step a store holds every row it should (where a run may resume)."""

import numpy as np

from oppsig.store.integrity import Gap, record_extent


def test_extent_of_a_whole_record_is_its_end():
    assert record_extent(np.arange(0, 12, 3), [], first_step=0, every=3) == (12, "it ends after 4 rows")


def test_extent_stops_at_a_step_out_of_place_or_a_missing_chunk():
    steps = np.array([5, 6, 7, 9, 10])
    assert record_extent(steps, [], first_step=5, every=1) == (8, "row 3 holds step 9")
    gaps = [Gap("correct", 4, 5), Gap("loss", 2, 4, 0, 8)]
    assert record_extent(steps, gaps, first_step=5, every=1) == (7, "chunk files of rows from 2 are missing")


def test_first_recorded_step_is_the_first_multiple_of_every():
    # a segment that starts at step 5 with record.every=4 records 8, 12, ...
    assert record_extent(np.array([8, 12]), [], first_step=5, every=4) == (16, "it ends after 2 rows")
    assert record_extent(np.array([], dtype=int), [], first_step=5, every=4) == (8, "it ends after 0 rows")
