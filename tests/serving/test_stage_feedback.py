"""Sales verdicts read from the stage history: accepted, rejected or undecided per handoff."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from features.contract import StageSpec
from serving.stage_feedback import accepting_stages, derive_verdicts, record_stage_feedback
from serving.stores import ScoreStore

STAGES = StageSpec()  # new, mql, sql, opportunity, won, lost, disqualified
T = pd.Timestamp("2025-03-03", tz="UTC")


def _days(n: float) -> pd.Timestamp:
    return T + pd.Timedelta(days=n)


def test_verdicts_follow_the_first_deciding_stage_entry_in_the_window() -> None:
    handoffs = pd.DataFrame(
        {
            "handoff_id": ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"],
            "lead_id": ["A", "B", "C", "D", "E", "F", "G", "H"],
            "handed_off_at": [T] * 8,
        }
    )
    stages = pd.DataFrame(
        [
            ("A", "mql", _days(-5)),
            ("A", "sql", _days(3)),  # accepted on entering sql
            ("A", "lost", _days(20)),
            ("B", "disqualified", _days(2)),  # thrown back
            ("C", "sql", _days(-1)),  # before the handoff: not a verdict on it
            ("D", "sql", _days(45)),  # outside the 30-day window
            ("E", "opportunity", _days(4)),  # a later stage counts as accepted
            ("F", "lost", _days(1)),
            ("F", "sql", _days(1)),  # same instant: the acceptance wins
            ("G", "won", _days(6)),
            ("H", "opportunity", _days(-3)),  # already sales' at the handoff: its loss is no rejection
            ("H", "lost", _days(5)),
        ],
        columns=["lead_id", "stage", "entered_at"],
    )
    got = derive_verdicts(handoffs, stages, STAGES).set_index("handoff_id")
    assert sorted(got.index) == ["h1", "h2", "h5", "h6", "h7"]  # C (at sql already), D and H undecided
    assert got.loc["h1", "outcome"] == "accepted" and got.loc["h1", "recorded_at"] == _days(3)
    assert got.loc["h1", "text"] == "from the CRM stage history: entered sql"
    assert (got.loc["h2", "outcome"], got.loc["h2", "reason_code"]) == ("rejected", "crm_disqualified")
    assert got.loc[["h5", "h6", "h7"], "outcome"].tolist() == ["accepted"] * 3
    assert pd.isna(got.loc["h1", "reason_code"])
    wider = derive_verdicts(handoffs, stages, STAGES, within_days=60).set_index("handoff_id")
    assert wider.loc["h4", "outcome"] == "accepted"
    stricter = derive_verdicts(handoffs, stages, STAGES, accept_stage="opportunity").set_index("handoff_id")
    # sql no longer counts: A's loss after 20 days and F's loss decide them
    assert (stricter.loc["h1", "outcome"], stricter.loc["h1", "reason_code"]) == ("rejected", "crm_lost")
    assert stricter.loc["h6", "outcome"] == "rejected" and stricter.loc["h5", "outcome"] == "accepted"


def test_accept_stage_must_be_an_open_or_converted_stage() -> None:
    assert accepting_stages(STAGES, "sql") == ["sql", "opportunity", "won"]
    with pytest.raises(ValueError, match=r"accept stage 'lost' is not a stage .* pass --accept-stage"):
        accepting_stages(STAGES, "lost")
    with pytest.raises(ValueError, match="'qualified'"):
        accepting_stages(STAGES, "qualified")
    with pytest.raises(ValueError, match="within_days must be positive"):
        derive_verdicts(pd.DataFrame(), pd.DataFrame(), STAGES, within_days=0)


def test_record_stage_feedback_stores_once_and_keeps_existing_verdicts(tmp_path: Path) -> None:
    from tests.serving.test_stores import _frame, _write

    with ScoreStore(f"sqlite:///{tmp_path / 'leadscore.db'}") as store:
        _write(store, _frame(12, handoff_top=4), at=datetime(2025, 3, 3, 2, 0, tzinfo=UTC))
        open_ = store.handoffs_without_feedback()
        leads = open_["lead_id"].tolist()
        store.record_feedback(leads[0], open_["handoff_id"].iloc[0], "rejected", "no_budget")
        at = open_["handed_off_at"].iloc[0]
        stage_history = pd.DataFrame(
            {
                "lead_id": leads,
                "stage": ["sql", "sql", "disqualified", "mql"],
                "entered_at": [at + pd.Timedelta(days=d) for d in (1, 2, 3, 4)],
            }
        )
        history = SimpleNamespace(contract=SimpleNamespace(stages=STAGES), stage_history=stage_history)
        summary = record_stage_feedback(store, history)  # type: ignore[arg-type]
        assert (summary.handoffs_without_feedback, summary.accepted, summary.rejected) == (3, 1, 1)
        assert (summary.undecided, summary.stored) == (1, 2)
        assert "1 accepted, 1 rejected, 1 without a verdict yet" in summary.text()
        assert [f.reason_code for f in store.feedback_for(leads[0])] == ["no_budget"]  # kept
        again = record_stage_feedback(store, history)  # type: ignore[arg-type]
        assert (again.handoffs_without_feedback, again.stored) == (1, 0)
