"""Parsing raw values (features/parsing.py); validation of whole tables is in test_validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.parsing import STR_DTYPE, parse_time_text

_ISO_FORMS = st.sampled_from(
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d", "%Y%m%dT%H%M%S"]
)
_OFFSETS = st.sampled_from(["", "", "Z", "+01:00", "-05:30", "+0200", "-03", " +01:00"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=pd.Timestamp("1990-01-01"), max_value=pd.Timestamp("2030-12-31")),
            _ISO_FORMS,
            _OFFSETS,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_offset_detection_agrees_with_pandas(values):
    texts = [d.strftime(form) + ("" if form == "%Y-%m-%d" else offset) for d, form, offset in values]
    series = pd.Series(texts, dtype=STR_DTYPE)
    parsed, aware = parse_time_text(series, np.ones(len(texts), dtype=bool))
    for text, value, has_offset in zip(texts, parsed, aware, strict=True):
        expected = pd.to_datetime(pd.Series([text]), format="ISO8601", errors="coerce")
        assert has_offset == isinstance(expected.dtype, pd.DatetimeTZDtype), text
        reference = expected.dt.tz_convert("UTC").dt.tz_localize(None) if has_offset else expected
        assert pd.Timestamp(value) == reference.iloc[0], text
