"""Section computations on small hand-made inputs, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from serving.report import sections
from serving.report.inputs import check_effects
from serving.report.render import build_report
from serving.report.stats import auc_interval, median_interval, proportion
from tests.serving.report import factories as f


# -- intervals ----------------------------------------------------------------------------------------
def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (120, 1017), (1, 100_000)])
def test_proportion_is_the_wilson_interval(k: int, n: int) -> None:
    rate = proportion(k, n)
    low, high = _wilson(k, n)
    assert rate.value == k / n
    assert rate.low == pytest.approx(max(low, 0.0), abs=1e-9)
    assert rate.high == pytest.approx(min(high, 1.0), abs=1e-9)
    assert 0.0 <= rate.low <= rate.value <= rate.high <= 1.0


def test_proportion_of_nothing_is_empty_and_bad_counts_are_refused() -> None:
    assert proportion(0, 0).value is None and proportion(0, 0).empty
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion(5, 3)


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        est = median_interval(rng.exponential(2.0, 60))
        assert est is not None and est.low is not None and est.high is not None
        hits += est.low <= 2.0 * math.log(2) <= est.high
    assert 0.92 <= hits / 400 <= 0.99
    assert median_interval(np.array([])) is None
    tiny = median_interval(np.array([1.0, 2.0]))
    assert tiny is not None and tiny.low is None  # too few values for a 95 % interval


def test_auc_interval_narrows_with_more_rows() -> None:
    small, large = auc_interval(0.8, 20, 200), auc_interval(0.8, 2000, 20000)
    assert small.low is not None and large.low is not None and small.high is not None and large.high is not None
    assert small.low < large.low < 0.8 < large.high < small.high
    assert auc_interval(float("nan"), 10, 10).low is None


# -- 2. grades -----------------------------------------------------------------------------------------
def test_conversion_per_grade_matches_an_independent_count() -> None:
    inputs = f.inputs()
    section = sections.grades_section(inputs)
    assert section.source == "served"
    out = inputs.outcomes
    assert out is not None
    for row in section.grades:
        part = out[out["grade"] == row.grade]
        assert row.conversion.n == len(part)
        assert row.conversion.k == int(part["converted"].sum())
        assert row.conversion.value == pytest.approx(part["converted"].mean())
    assert section.base is not None and section.base.n == len(out)
    assert sum(d.conversion.n for d in section.deciles) == len(out)
    best = out.sort_values("readiness", ascending=False).head(len(out) // 10)
    assert section.deciles[0].conversion.k == int(best["converted"].sum())
    assert sum(c.observed.n for c in section.calibration) == len(out)
    assert section.gains is not None and section.gains[1][-1] == pytest.approx(1.0)
    assert section.auc is not None and 0.5 < section.auc.value < 1.0


def test_no_matured_scores_shows_the_test_set_labelled_and_says_when_it_fills() -> None:
    inputs = f.inputs(n_outcomes=0)
    section = sections.grades_section(inputs)
    assert section.source == "test"
    assert section.missing is not None
    assert "No served score has matured yet" in section.missing and "test-set" in section.missing
    assert f.NOW.strftime("%Y") in (section.matures_on or "")
    assert [r.conversion.n for r in section.grades] == [100, 200, 300, 400]
    html, _ = build_report(inputs)
    assert "champion&#39;s test set" in html or "champion's test set" in html


def test_without_history_or_test_table_the_section_says_what_is_missing() -> None:
    inputs = f.inputs(with_outcomes=False)
    inputs.model = f.model_facts(test_grades=False)
    section = sections.grades_section(inputs)
    assert section.source == "none" and section.grades == []
    assert "--data" in (section.missing or "")


# -- 3. handoff ----------------------------------------------------------------------------------------
def test_acceptance_overall_per_grade_and_per_source() -> None:
    inputs = f.inputs()
    section = sections.handoff_section(inputs)
    fb = inputs.feedback.merge(inputs.handoffs[["handoff_id", "grade"]], on="handoff_id")
    assert section.acceptance.k == int((fb["outcome"] == "accepted").sum()) == 100
    assert section.acceptance.n == 200
    for row in section.per_grade:
        part = fb[fb["grade"] == row.name]
        assert (row.rate.k, row.rate.n) == (int((part["outcome"] == "accepted").sum()), len(part))
    assert sum(r.rate.n for r in section.per_source) == 200
    assert {r.name for r in section.per_source} <= {"web", "event", "(unknown)"}
    counts = [r.count for r in section.reasons]
    assert counts == sorted(counts, reverse=True) and sum(counts) == 100
    delays = (fb["recorded_at"] - fb["handed_off_at"]).dt.total_seconds() / 86400
    assert section.median_days is not None
    assert section.median_days.value == pytest.approx(float(delays.median()))
    assert sum(w.handoffs for w in section.weeks) == 200
    assert section.capacity is None and "no weekly sales capacity" in section.capacity_note


def test_handed_off_converted_and_missed() -> None:
    inputs = f.inputs()
    out = inputs.outcomes
    assert out is not None
    section = sections.handoff_section(inputs)
    converted_leads = set(out.loc[out["converted"] == 1, "lead_id"])
    handed = set(out.loc[(out["converted"] == 1) & out["handed_off"], "lead_id"])
    assert section.converted_handed is not None and section.converted_handed.n == len(converted_leads)
    assert section.converted_handed.k == len(handed)
    assert section.n_missed == len(converted_leads - handed)
    assert section.handoffs_converted is not None
    assert section.handoffs_converted.n == int(out["handed_off"].sum())


def test_no_feedback_is_a_stated_empty_state() -> None:
    inputs = f.inputs(with_feedback=False, with_outcomes=False)
    section = sections.handoff_section(inputs)
    assert section.acceptance.n == 0 and section.per_grade == [] and section.reasons == []
    assert "No feedback from sales yet on the 200 handoffs" in (section.feedback_missing or "")
    assert "--data" in (section.outcomes_missing or "")
    html, s = build_report(inputs)
    assert "Not available yet." in html
    assert 'data-chart="acceptance-grade"' not in html  # no empty axes
    assert any("no feedback has been recorded yet" in sentence for sentence in s.summary)


def test_rejection_reasons_show_plain_labels_with_the_code_kept() -> None:
    inputs = f.inputs()
    codes = ["not_ready", "bad_fit", "duplicate", "no_budget", "crm_disqualified", "went_dark"]
    rejected = inputs.feedback.index[inputs.feedback["outcome"] == "rejected"]
    inputs.feedback.loc[rejected, "reason_code"] = [codes[i % len(codes)] for i in range(len(rejected))]
    section = sections.handoff_section(inputs)
    labels = {r.reason: r.label for r in section.reasons}
    assert labels["not_ready"] == "Not ready to buy yet" and labels["no_budget"] == "No budget"
    assert labels["crm_disqualified"] == "Closed as disqualified in the CRM"
    assert labels["went_dark"] == "went dark"  # an unknown code: itself, spaces for underscores
    assert sections.reason_label("bad_timing") == "Bad timing"
    html, _ = build_report(inputs)
    table = html.split("Why sales rejected leads", 1)[1].split("</table>", 1)[0]
    for code, label in labels.items():
        # the label is what the cell says; the code stays visible (brackets) and in the tooltip, to match the CRM
        assert (
            f'<td title="CRM reason code: {code}">{label} <span class="small">(<code>{code}</code>)</span></td>'
            in table
        )
    assert "<td>not_ready</td>" not in table
    chart = html.split('data-chart="rejection-reasons"', 1)[1].split("</figure>", 1)[0]
    assert "Not ready to buy yet" in chart and "went dark" in chart


def test_without_the_history_the_report_says_to_pass_data_not_that_nothing_matured() -> None:
    inputs = f.inputs(with_outcomes=False)
    html, s = build_report(inputs)
    text = " ".join(s.summary) + " " + (s.grades.missing or "") + " " + (s.handoff.outcomes_missing or "")
    assert "matured" not in text.lower()
    assert "no data directory was given" in s.summary[0] and "--data DIR" in s.summary[0]
    assert "no data directory was given" in s.summary[2] and "--data DIR" in s.summary[2]
    assert "--data DIR" in (s.grades.missing or "") and "--data DIR" in (s.handoff.outcomes_missing or "")
    assert "no served score has matured" not in html.lower()
    # with the history but nothing matured yet, the maturity explanation stays
    _, waiting = build_report(f.inputs(n_outcomes=0))
    assert "no served score has matured yet" in waiting.summary[0]
    assert "--data DIR" not in " ".join(waiting.summary)


# -- 4. conversions ------------------------------------------------------------------------------------
def test_campaign_figures_are_association_with_independent_counts() -> None:
    inputs = f.inputs()
    section = sections.conversions_section(inputs)
    touches, conv = f.touches()
    assert inputs.data_end is not None
    cutoff = inputs.data_end - pd.Timedelta(days=f.HORIZON)
    c1 = touches[touches["campaign_id"] == "C1"].copy()
    c1["converted_at"] = c1["lead_id"].map(conv)
    c1 = c1[c1["converted_at"].isna() | (c1["occurred_at"] < c1["converted_at"])]
    first = c1.groupby("lead_id")["occurred_at"].min()
    matured = first[first <= cutoff]
    hit = (conv.reindex(matured.index) <= matured + pd.Timedelta(days=f.HORIZON)).sum()
    row = next(r for r in section.groups["campaign"] if r.name == "C1")
    assert row.touched == len(first)
    assert (row.conversion.k, row.conversion.n) == (int(hit), len(matured))
    assert not section.has_effects
    html, _ = build_report(inputs)
    assert "Association only, not effect." in html
    assert '<th class="num">Estimated effect</th>' not in html


def test_an_effects_table_plugs_into_section_4() -> None:
    # shaped like models.explain.effects' table: overall and per-segment rows, "evidence" as the flag
    effects = pd.DataFrame(
        {
            "kind": ["campaign", "campaign", "campaign", "action"],
            "campaign_id": ["C1", "C1", "C2", ""],
            "action": ["webinar", "webinar", "event_attendance", "invite_to_webinar"],
            "segment": ["all", "mql", "all", "all"],
            "n_exposed": [120, 40, 80, 300],
            "estimate": [0.031, 0.5, -0.004, 0.012],
            "ci_low": [0.01, 0.2, -0.03, 0.001],
            "ci_high": [0.052, 0.8, 0.022, 0.023],
            "evidence": ["effect", "effect", "no evidence of effect", "effect"],
        }
    )
    table = check_effects(effects)
    assert len(table) == 3 and set(table["flag"]) == {"effect", "no evidence of effect"}
    inputs = f.inputs(effects=table)
    section = sections.conversions_section(inputs)
    assert section.has_effects and len(section.effects) == 3
    row = next(r for r in section.groups["campaign"] if r.name == "C1")
    assert row.effect is not None and row.effect["estimate"] == pytest.approx(0.031)  # the overall row
    html, _ = build_report(inputs)
    assert '<th class="num">Estimated effect</th>' in html and "no evidence of effect" in html and "+3.1 pp" in html
    assert "+1.0 pp to +5.2 pp" in html
    assert "Association only, not effect." not in html
    with pytest.raises(ValueError, match=r"lacks columns \['estimate'\]"):
        check_effects(effects.drop(columns=["estimate"]))


# -- 5. drift ------------------------------------------------------------------------------------------
def test_drift_flags_the_shifted_feature_only() -> None:
    inputs = f.inputs()
    section = sections.drift_section(inputs)
    assert section.flagged == ["f2"] and section.n_features == 4
    assert section.top[0].variable == "f2"
    assert section.score is not None and not section.score.flagged
    inputs.drift = f.drift(shifted=())
    same = sections.drift_section(inputs)
    assert same.flagged == [] and all(r.psi < 0.05 for r in same.top)
    html, s = build_report(inputs)
    assert "No feature drifted" in html
    assert any("None of the 4 features drifted" in sentence for sentence in s.summary)


# -- 6. model card and summary -----------------------------------------------------------------------
def test_model_card_says_plainly_what_the_score_is() -> None:
    card = sections.model_card(f.inputs())
    assert card.score_is_percentile and "PERCENTILE, not a probability" in card.score_semantics
    assert card.models[0] == "leadscore" and "logistic_regression" in card.models
    auc = next(r for r in card.metrics if r.metric == "roc_auc")
    assert auc.auc is not None and auc.auc["leadscore"].low is not None
    assert card.test_positives == 49
    inputs = f.inputs()
    inputs.model = f.model_facts()
    object.__setattr__(inputs.model, "score_method", "probability")
    assert "PROBABILITY in percent" in sections.model_card(inputs).score_semantics


def test_summary_has_five_sentences_from_the_numbers() -> None:
    _, s = build_report(f.inputs())
    assert len(s.summary) == 5
    a = next(r for r in s.grades.grades if r.grade == "A").conversion
    assert f"{100 * (a.value or 0):.1f} %" in s.summary[0]
    assert "50 %" in s.summary[1] and "100 of 200" in s.summary[1]
    assert "f2" in s.summary[4]


def test_grades_out_of_order_are_named_in_section_2_and_the_summary() -> None:
    rows = [
        sections.GradeRow("A", proportion(60, 1000), 0.06),
        sections.GradeRow("B", proportion(6, 1000), 0.01),  # 0.6 % (0.3-1.3 %)
        sections.GradeRow("C", proportion(16, 2000), 0.008),  # 0.8 %: above B
        sections.GradeRow("D", proportion(10, 2000), 0.004),
    ]
    grades = sections.GradesSection(source="served", horizon_days=90, grades=rows)
    assert grades.out_of_order() == [("B", "C")]
    in_order = sections.GradesSection(source="served", horizon_days=90, grades=[rows[0], rows[3]])
    assert in_order.out_of_order() == []
    few = [sections.GradeRow("A", proportion(0, 50), None), sections.GradeRow("B", proportion(1, 50), None)]
    assert sections.GradesSection(source="served", horizon_days=90, grades=few).out_of_order() == []  # too few
    inputs = f.inputs()
    html, built = build_report(inputs)
    assert "Grades out of order" not in html  # the factory's grades separate
    summary = sections.summary_sentences(grades, built.handoff, built.conversions, built.drift, built.card)
    assert "; but grade B converted no better than C: those grades do not separate leads" in summary[0]
