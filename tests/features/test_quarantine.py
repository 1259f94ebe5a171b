"""Row problems and the quarantine (features/quarantine.py); end-to-end quarantine cases are in test_validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.parsing import STR_DTYPE
from features.quarantine import _drop_rows


@pytest.mark.parametrize("n_bad", [0, 1, 5, 1001])
def test_drop_rows_slice_and_take_paths_agree(n_bad):
    rng = np.random.default_rng(n_bad)
    frame = pd.DataFrame(
        {
            "s": pd.Series([f"v{i}" for i in range(1200)], dtype=STR_DTYPE),
            "x": np.arange(1200, dtype=float),
        }
    )
    bad = np.zeros(len(frame), dtype=bool)
    bad[rng.choice(len(frame), n_bad, replace=False)] = True
    bad[[0, -1]] = n_bad > 0  # rejects at both ends are the edge cases of slicing
    out = _drop_rows(frame, bad)
    expected = frame[~bad].reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)
    assert out["s"].dtype == STR_DTYPE
