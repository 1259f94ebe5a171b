"""The report's section 4 uses the estimated effects the champion carries when no --effects table is given."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from pipelines.flows import _champion_effects


def test_the_champion_s_effects_feed_the_report_and_their_absence_is_none() -> None:
    effects = pd.DataFrame(
        {
            "kind": ["campaign", "campaign", "action"],
            "campaign_id": ["C1", "C1", None],
            "action": ["webinar", "webinar", "invite_to_webinar"],
            "segment": ["all", "mql", "all"],
            "n_exposed": [120, 40, 300],
            "estimate": [0.031, 0.5, 0.012],
            "ci_low": [0.01, 0.2, 0.001],
            "ci_high": [0.052, 0.8, 0.023],
            "evidence": ["effect", "effect", "effect"],
        }
    )
    table = _champion_effects(SimpleNamespace(effects=effects))
    assert table is not None and len(table) == 2  # the overall rows; the per-segment one is left out
    assert list(table["campaign_id"]) == ["C1", ""] and set(table["flag"]) == {"effect"}
    assert _champion_effects(SimpleNamespace(effects=None)) is None
    assert _champion_effects(SimpleNamespace(effects=effects.iloc[:0])) is None
    assert _champion_effects(object()) is None  # a model logged before effects existed
