"""The built-in simulator: determinism, contract validity, ground truth and realism properties."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from features.contract import Contract
from features.simulator import GROUND_TRUTH_DIR, GenerationSummary, SimulatorConfig, generate, simulated_contract
from features.simulator.output import chunk_tables
from features.simulator.process import simulate_chunk
from features.simulator.world import build_world

SMALL = 1200
SMALL_CONFIG = SimulatorConfig(chunk_size=500)  # three chunks: 500, 500, 200
FUNNEL = ["new", "mql", "sql", "opportunity", "won", "lost", "disqualified"]
TERMINAL = {"won", "lost", "disqualified"}
DAY = pd.Timedelta(days=1)


def _read(out: Path) -> dict[str, pd.DataFrame]:
    return {
        "leads": pd.read_parquet(out / "leads.parquet"),
        "activities": pd.read_parquet(out / "activities.parquet"),
        "stages": pd.read_parquet(out / "stage_history.parquet"),
        "truth": pd.read_parquet(out / GROUND_TRUTH_DIR / "leads.parquet"),
        "propensity": pd.read_parquet(out / GROUND_TRUTH_DIR / "propensity.parquet"),
        "campaigns": pd.read_parquet(out / GROUND_TRUTH_DIR / "campaigns.parquet"),
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationSummary, Path, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("sim-small")
    calls: list[tuple[int, int]] = []
    summary = generate(SMALL, 5, out, config=SMALL_CONFIG, progress=lambda d, t: calls.append((d, t)))
    return summary, out, calls


@pytest.fixture(scope="module")
def small_tables(small: tuple[GenerationSummary, Path, list]) -> dict[str, pd.DataFrame]:
    return _read(small[1])


@pytest.fixture(scope="module")
def default5k(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationSummary, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("sim-5k")
    summary = generate(5000, 3, out)
    return summary, _read(out)


# -- files, summary, determinism --------------------------------------------------------------------
def test_writes_every_file_and_an_accurate_summary(small: tuple, small_tables: dict) -> None:
    summary, out, calls = small
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "leads.parquet",
        "activities.parquet",
        "stage_history.parquet",
        "contract.yaml",
        "ground_truth/leads.parquet",
        "ground_truth/propensity.parquet",
        "ground_truth/campaigns.parquet",
    }  # in particular no temporary files are left behind
    t = small_tables
    assert summary.n_leads == len(t["leads"]) == SMALL
    assert summary.n_activities == len(t["activities"])
    assert summary.n_stage_changes == len(t["stages"])
    assert summary.n_propensity_rows == len(t["propensity"])
    assert summary.n_campaigns == len(t["campaigns"]) == SMALL_CONFIG.n_campaigns
    n_won = int((t["stages"]["stage"] == "won").sum())
    assert summary.n_won == n_won and summary.conversion_rate == pytest.approx(n_won / SMALL)
    assert summary.stage_counts == t["stages"]["stage"].value_counts().reindex(FUNNEL, fill_value=0).to_dict()
    assert summary.span_start == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert summary.span_end == summary.span_start + dt.timedelta(days=730)
    assert summary.first_event == t["leads"]["created_at"].min().to_pydatetime()
    assert summary.last_event < summary.span_end
    assert all(p.exists() for p in summary.paths.values())
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in summary.paths.values()), "like normal files"
    assert summary.seconds > 0 and summary.chunks == 3
    assert calls == [(500, SMALL), (1000, SMALL), (1200, SMALL)]
    assert "conversion rate" in str(summary)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path, small: tuple) -> None:
    _, first, _ = small
    again = tmp_path / "again"
    generate(SMALL, 5, again, config=SMALL_CONFIG)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    generate(SMALL, 6, other, config=SMALL_CONFIG)
    for name in ("leads.parquet", "activities.parquet", "stage_history.parquet"):
        assert (first / name).read_bytes() != (other / name).read_bytes(), name


def test_chunks_are_independent_of_each_other(small: tuple, small_tables: dict) -> None:
    """A chunk simulated alone (even before its predecessors) equals its rows in the full output."""
    world = build_world(SMALL_CONFIG, 5, SMALL)
    middle = chunk_tables(world, simulate_chunk(world, 1))  # chunk 1 first, without chunk 0
    chunk_ids = set(middle["leads"]["lead_id"].to_pylist())
    assert chunk_ids == {f"L{i:07d}" for i in range(501, 1001)}
    for name, key in (("leads", "leads"), ("activities", "activities"), ("stage_history", "stages")):
        full = small_tables[key]
        expected = full[full["lead_id"].isin(chunk_ids)].reset_index(drop=True)
        pd.testing.assert_frame_equal(middle[name].to_pandas(), expected, check_dtype=False)
    truth = small_tables["propensity"]
    expected = truth[truth["lead_id"].isin(chunk_ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(middle["propensity"].to_pandas(), expected, check_dtype=False)
    # And re-running a chunk gives the same rows.
    again = chunk_tables(world, simulate_chunk(world, 1))
    assert all(again[k].equals(middle[k]) for k in middle)


# -- the data contract ----------------------------------------------------------------------------------
def test_schema_and_contract(small: tuple, small_tables: dict) -> None:
    _, out, _ = small
    contract = Contract.load(out)
    assert contract == simulated_contract()
    assert contract.categorical_attributes == ["source", "industry", "company_size", "country", "job_seniority"]
    assert contract.numeric_attributes == ["annual_revenue_musd"]
    leads, acts, stages = small_tables["leads"], small_tables["activities"], small_tables["stages"]
    assert list(leads.columns) == ["lead_id", "created_at", *contract.categorical_attributes, "annual_revenue_musd"]
    assert list(acts.columns) == ["lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value"]
    assert list(stages.columns) == ["lead_id", "stage", "entered_at"]
    for df, col in ((leads, "created_at"), (acts, "occurred_at"), (stages, "entered_at")):
        assert str(df[col].dtype) == "datetime64[us, UTC]"
    assert leads["annual_revenue_musd"].dtype == np.float64 and acts["value"].dtype == np.float64
    for col in ("lead_id", *contract.categorical_attributes):
        assert pd.api.types.is_string_dtype(leads[col]), col
        assert leads[col].notna().all(), col
    assert set(leads["company_size"]) <= {"1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+"}
    assert set(leads["job_seniority"]) <= {"individual", "manager", "director", "vp", "c_level"}
    assert leads["source"].nunique() == 7 and leads["country"].nunique() >= 10 and leads["industry"].nunique() == 10


def test_events_satisfy_the_contract(small: tuple, small_tables: dict) -> None:
    summary, _, _ = small
    contract = simulated_contract()
    leads, acts = small_tables["leads"], small_tables["activities"]
    assert leads["lead_id"].is_unique
    assert leads["lead_id"].map(lambda s: re.fullmatch(r"L\d{7}", s) is not None).all()
    assert leads["created_at"].is_monotonic_increasing  # ids follow creation order
    created = acts["lead_id"].map(leads.set_index("lead_id")["created_at"])
    assert created.notna().all(), "every activity belongs to a known lead"
    assert (acts["occurred_at"] >= created).all(), "no activity before its lead's creation"
    assert (acts["occurred_at"] < pd.Timestamp(summary.span_end)).all()
    assert (acts["occurred_at"] <= pd.Timestamp.now(tz="UTC")).all()
    assert not acts.duplicated(["lead_id", "occurred_at", "activity_type"]).any()
    assert set(acts["activity_type"]) == set(contract.activity_types)
    assert set(acts["topic"].dropna()) == set(contract.topics)
    assert set(acts["campaign_id"].dropna()) <= set(small_tables["campaigns"]["campaign_id"])
    assert acts["channel"].notna().all()
    values = acts["value"]
    assert (values.dropna() >= 0).all()
    measured = acts["activity_type"].isin(["web_visit", "pricing_page_view", "webinar", "sales_call"])
    assert 0.01 < values[measured].isna().mean() < 0.15, "values are sometimes missing"
    assert values[acts["activity_type"] == "email_open"].isna().all()
    # Sorted by lead, then time.
    assert acts.sort_values(["lead_id", "occurred_at"], kind="stable").index.equals(acts.index)


def test_stage_history_follows_the_funnel(small_tables: dict) -> None:
    leads, stages = small_tables["leads"], small_tables["stages"]
    assert set(stages["stage"]) <= set(FUNNEL)
    assert not stages.duplicated(["lead_id", "stage"]).any()
    first = stages.groupby("lead_id").first()
    assert (first["stage"] == "new").all() and len(first) == len(leads)
    created = leads.set_index("lead_id")["created_at"]
    assert (first["entered_at"] == created.reindex(first.index)).all(), "'new' is entered at creation"
    order = stages["stage"].map({s: i for i, s in enumerate(FUNNEL)})
    assert order.groupby(stages["lead_id"]).is_monotonic_increasing.all()
    assert stages.groupby("lead_id")["entered_at"].is_monotonic_increasing.all()
    reached = stages.groupby("lead_id")["stage"].agg(set)
    assert (reached.map(lambda s: len(s & TERMINAL)) <= 1).all()
    for later, earlier in (("won", "opportunity"), ("lost", "opportunity"), ("opportunity", "sql"), ("sql", "mql")):
        assert reached.map(lambda s, a=later, b=earlier: a not in s or b in s).all(), (later, earlier)
    # Closed leads show no more buying intent (newsletters and casual visits go on).
    closed = stages[stages["stage"].isin(TERMINAL)].set_index("lead_id")["entered_at"]
    acts = small_tables["activities"]
    intent = acts[acts["activity_type"].isin(["pricing_page_view", "demo_request"])]
    closed_at = intent["lead_id"].map(closed)
    assert not (intent["occurred_at"] > closed_at).any()


def test_the_validator_accepts_every_row(small: tuple, tmp_path: Path) -> None:
    from features.validation import load_history

    result = load_history(small[1])
    assert result.report.clean, result.report.summary()
    out = tmp_path / "csv"
    generate(300, 2, out, config=SimulatorConfig(chunk_size=100), fmt="csv")
    assert load_history(out).report.clean


def test_csv_output_holds_the_same_data(tmp_path: Path, small: tuple, small_tables: dict) -> None:
    out = tmp_path / "csv"
    summary = generate(SMALL, 5, out, config=SMALL_CONFIG, fmt="csv")
    assert summary.fmt == "csv" and (out / "leads.csv").exists() and not (out / "leads.parquet").exists()
    for name, key, time_col in (
        ("leads", "leads", "created_at"),
        ("activities", "activities", "occurred_at"),
        ("stage_history", "stages", "entered_at"),
    ):
        text = (out / f"{name}.csv").read_text().splitlines()
        assert re.search(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', text[1]), text[1]
        df = pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])
        df[time_col] = pd.to_datetime(df[time_col], utc=True).astype("datetime64[us, UTC]")
        expected = small_tables[key]
        assert list(df.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    # Ground truth is Parquet either way, and identical.
    for rel in ("leads.parquet", "propensity.parquet", "campaigns.parquet"):
        assert (out / GROUND_TRUTH_DIR / rel).read_bytes() == (small[1] / GROUND_TRUTH_DIR / rel).read_bytes()


# -- ground truth ---------------------------------------------------------------------------------------
def test_ground_truth_matches_the_tables(small_tables: dict) -> None:
    leads, stages, truth, acts = (
        small_tables["leads"],
        small_tables["stages"],
        small_tables["truth"],
        small_tables["activities"],
    )
    assert truth["lead_id"].tolist() == leads["lead_id"].tolist()
    truth = truth.set_index("lead_id")
    entered = stages.pivot(index="lead_id", columns="stage", values="entered_at").reindex(truth.index)
    for stage, column in (("won", "converted_at"), ("lost", "lost_at"), ("disqualified", "disqualified_at")):
        pd.testing.assert_series_equal(entered[stage], truth[column], check_names=False)
    assert (truth["in_market"] == truth["journey_start"].notna()).all()
    assert truth.loc[truth["converted_at"].notna(), "in_market"].all()
    assert ((truth["journey_outcome"] == "won") == truth["converted_at"].notna()).all()
    assert (truth["journey_outcome"].isna() == ~truth["in_market"]).all()
    created = leads.set_index("lead_id")["created_at"]
    assert (truth["journey_start"].dropna() >= created.reindex(truth["journey_start"].dropna().index)).all()
    assert set(truth["true_topic"]) <= set(simulated_contract().topics)
    assert truth["fit"].dtype == np.float32 and truth["fit"].std() > 0.5

    campaigns = small_tables["campaigns"].set_index("campaign_id")
    tagged = acts.dropna(subset=["campaign_id"])
    pd.testing.assert_series_equal(
        tagged.groupby("campaign_id").size().reindex(campaigns.index, fill_value=0),
        campaigns["n_touches"],
        check_names=False,
    )
    pd.testing.assert_series_equal(
        tagged.groupby("campaign_id")["lead_id"].nunique().reindex(campaigns.index, fill_value=0),
        campaigns["n_leads_touched"],
        check_names=False,
    )
    assert (campaigns["true_effect"] == 0).any() and (campaigns["true_effect"] > 0).any()
    assert (campaigns["end"] > campaigns["start"]).all()


def test_propensity_rows_cover_exactly_the_open_lead_weeks(small: tuple, small_tables: dict) -> None:
    summary, _, _ = small
    leads, truth, prop = small_tables["leads"], small_tables["truth"], small_tables["propensity"]
    assert prop["propensity"].dtype == np.float32
    assert prop["propensity"].between(0, 1).all()
    assert str(prop["week_start"].dtype) == "datetime64[us, UTC]"
    start, end = pd.Timestamp(summary.span_start), pd.Timestamp(summary.span_end)
    assert ((prop["week_start"] - start).dt.total_seconds() % (7 * 86_400) == 0).all()
    closed = truth.set_index("lead_id")[["converted_at", "lost_at", "disqualified_at"]].min(axis=1)
    grid = pd.date_range(start, end, freq="7D", inclusive="left")
    expected = {}
    for lead, created in zip(leads["lead_id"], leads["created_at"], strict=True):
        stop = closed.get(lead)
        expected[lead] = int(((grid > created) & (pd.isna(stop) | (grid < stop))).sum())
    counts = prop.groupby("lead_id").size().reindex(leads["lead_id"], fill_value=0)
    assert counts.to_dict() == expected
    assert set(prop["phase"]) <= {"dormant", "research", "evaluation", "decision", "no_decision"}
    assert (prop.loc[prop["phase"] == "no_decision", "propensity"] == 0).all()


# -- realism ----------------------------------------------------------------------------------------
def _labels(tables: dict, horizon_days: int = 90) -> pd.DataFrame:
    """Propensity rows with the realised label (won within the horizon), where fully observed."""
    prop = tables["propensity"].merge(tables["truth"][["lead_id", "converted_at"]], on="lead_id")
    end = pd.Timestamp("2025-12-31", tz="UTC")
    horizon = pd.Timedelta(days=horizon_days)
    prop = prop[prop["week_start"] + horizon <= end]
    won = (prop["converted_at"] > prop["week_start"]) & (prop["converted_at"] <= prop["week_start"] + horizon)
    return prop.assign(converted=won.astype(float))


def test_volume_conversion_and_funnel_are_realistic(default5k: tuple) -> None:
    summary, t = default5k
    assert 0.03 <= summary.conversion_rate <= 0.06
    assert 40 <= summary.activities_per_lead <= 60
    counts = summary.stage_counts
    assert counts["won"] < counts["opportunity"] < counts["sql"] < counts["mql"] < summary.n_leads
    assert counts["lost"] > 0.8 * counts["won"], "B2B deals are lost more often than won"
    assert counts["disqualified"] > 0.05 * summary.n_leads
    truth = t["truth"]
    assert 0.1 < truth["in_market"].mean() < 0.5, "most leads never enter a buying journey"
    assert 0.07 <= t["leads"]["annual_revenue_musd"].isna().mean() <= 0.13
    assert (t["leads"]["annual_revenue_musd"].dropna() > 0).all()


def test_seasonality(default5k: tuple) -> None:
    _, t = default5k
    created = t["leads"]["created_at"]
    weekday = created.dt.day_of_week
    per_weekend_day = (weekday >= 5).sum() / 2
    per_weekday = (weekday < 5).sum() / 5
    assert per_weekend_day < 0.5 * per_weekday
    month = created.dt.month
    assert month.isin([7, 8]).sum() / 2 < 0.85 * month.isin([3, 4, 5]).sum() / 3, "summer dip"
    assert (month == 12).sum() < 0.85 * (month == 11).sum(), "December dip"
    acts_weekday = t["activities"]["occurred_at"].dt.day_of_week
    assert (acts_weekday >= 5).sum() / 2 < 0.5 * (acts_weekday < 5).sum() / 5


def test_content_topics_mostly_but_not_always_match_the_need(default5k: tuple) -> None:
    _, t = default5k
    content = t["activities"][t["activities"]["activity_type"].isin(["content_download", "webinar"])]
    content = content.dropna(subset=["topic"]).merge(t["truth"][["lead_id", "true_topic"]], on="lead_id")
    match = (content["topic"] == content["true_topic"]).mean()
    assert 0.5 < match < 0.9


def test_activity_intensity_rises_before_conversion(default5k: tuple) -> None:
    """Converters are far more active in the 30 days before winning than comparable leads then."""
    _, t = default5k
    leads, acts, truth = t["leads"], t["activities"], t["truth"]
    converters = truth.dropna(subset=["converted_at"]).merge(leads[["lead_id", "created_at"]], on="lead_id")
    converters = converters[converters["converted_at"] - converters["created_at"] >= 60 * DAY]
    assert len(converters) >= 80
    window = acts.merge(converters[["lead_id", "converted_at"]], on="lead_id")
    inside = (window["occurred_at"] >= window["converted_at"] - 30 * DAY) & (
        window["occurred_at"] < window["converted_at"]
    )
    conv_counts = inside.groupby(window["lead_id"]).sum().reindex(converters["lead_id"], fill_value=0)
    # Matched baseline: never-converting leads created in the same week, counted over the same 30 days.
    never = leads[~leads["lead_id"].isin(truth.loc[truth["converted_at"].notna(), "lead_id"])]
    never_week = never["created_at"].dt.floor("7D")
    baseline = []
    for created, converted_at in zip(converters["created_at"], converters["converted_at"], strict=True):
        peers = never.loc[never_week == created.floor("7D"), "lead_id"]
        if not len(peers):
            continue
        a = acts[acts["lead_id"].isin(peers)]
        n = ((a["occurred_at"] >= converted_at - 30 * DAY) & (a["occurred_at"] < converted_at)).sum()
        baseline.append(n / len(peers))
    assert conv_counts.mean() > 2.5 * np.mean(baseline)
    # ... and than they themselves were three months earlier.
    earlier = (window["occurred_at"] >= window["converted_at"] - 120 * DAY) & (
        window["occurred_at"] < window["converted_at"] - 90 * DAY
    )
    assert conv_counts.mean() > 1.5 * earlier.groupby(window["lead_id"]).sum().mean()


def test_noise_loud_leads_that_never_buy_and_quiet_buyers(default5k: tuple) -> None:
    _, t = default5k
    total = t["activities"].groupby("lead_id").size().reindex(t["leads"]["lead_id"], fill_value=0)
    truth = t["truth"].set_index("lead_id")
    loudest = total[total >= total.quantile(0.9)].index
    assert (~truth.loc[loudest, "in_market"]).mean() > 0.3, "many of the loudest leads never buy"
    converters = truth.index[truth["converted_at"].notna()]
    assert (total[converters] < total.median()).mean() > 0.08, "some buyers are quiet"


def test_campaign_effects_show_in_conversions(tmp_path: Path) -> None:
    """Leads touched by campaigns with a real effect convert more than leads touched by no-effect ones."""
    out = tmp_path / "campaigns"
    generate(20_000, 11, out, config=SimulatorConfig(n_campaigns=48))
    t = _read(out)
    campaigns = t["campaigns"].set_index("campaign_id")
    touched = t["activities"].dropna(subset=["campaign_id"]).groupby(["campaign_id", "lead_id"])["occurred_at"].min()
    first = touched.reset_index().merge(t["truth"], on="lead_id")
    closed = first[["converted_at", "lost_at", "disqualified_at"]].min(axis=1)
    first = first[(closed.isna() | (closed > first["occurred_at"]))]  # open when touched
    first = first[first["occurred_at"] <= pd.Timestamp("2025-12-31", tz="UTC") - 180 * DAY]
    later = first["converted_at"] - first["occurred_at"]
    first = first.assign(converted=(later > pd.Timedelta(0)) & (later <= 180 * DAY))
    effect = first["campaign_id"].map(campaigns["true_effect"])
    strong, zero = first[effect >= 0.05], first[effect == 0]
    assert len(strong) > 300 and len(zero) > 300
    p1, p0 = strong["converted"].mean(), zero["converted"].mean()
    se = np.sqrt(p1 * (1 - p1) / len(strong) + p0 * (1 - p0) / len(zero))
    assert p1 > p0 and (p1 - p0) / se > 2.0, (p1, p0, len(strong), len(zero))
    # The mechanism: journeys start soon after touches by effective campaigns.
    starts = first["journey_start"] - first["occurred_at"]
    started = (starts > pd.Timedelta(0)) & (starts <= 60 * DAY)
    assert started[effect >= 0.05].mean() > 1.5 * started[effect == 0].mean()


def test_true_propensity_is_calibrated_and_discriminates(default5k: tuple) -> None:
    """The propensity is what the process implies: it matches realised conversions (leads are the
    independent units, so the z-score uses per-lead sums) and ranks future converters first."""
    _, t = default5k
    rows = _labels(t)
    assert rows["converted"].sum() >= 100
    residual = (rows["converted"] - rows["propensity"]).groupby(rows["lead_id"]).sum()
    z = residual.sum() / np.sqrt((residual**2).sum())
    assert abs(z) < 3.5, z
    for _, part in rows.groupby(pd.qcut(rows["propensity"].rank(method="first"), 3, labels=False)):
        r = (part["converted"] - part["propensity"]).groupby(part["lead_id"]).sum()
        assert abs(r.sum() / max(np.sqrt((r**2).sum()), 1e-9)) < 3.5
    auc = roc_auc_score(rows["converted"], rows["propensity"])
    assert 0.75 < auc < 0.97, auc


def test_true_propensity_responds_to_the_latent_phase(default5k: tuple) -> None:
    _, t = default5k
    mean = t["propensity"].groupby("phase")["propensity"].mean()
    assert mean["dormant"] < mean["research"] < mean["evaluation"] < mean["decision"]
    assert mean["no_decision"] == 0


# -- arguments, configuration, atomicity ------------------------------------------------------------
def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SimulatorConfig(unknown_knob=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="date"):
        SimulatorConfig(start_date=dt.datetime(2024, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="days"):
        SimulatorConfig(days=3)
    with pytest.raises(ValidationError, match="chunk_size"):
        SimulatorConfig(chunk_size=0)
    config = SimulatorConfig(start_date=dt.date(2023, 3, 1), days=100)
    assert config.start == dt.datetime(2023, 3, 1, tzinfo=dt.UTC)
    assert config.end == dt.datetime(2023, 6, 9, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_leads": 0}, "n_leads"),
        ({"seed": -1}, "seed"),
        ({"fmt": "xlsx"}, "fmt"),
        ({"config": SimulatorConfig(start_date=dt.date.today() - dt.timedelta(days=10), days=30)}, "future"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"n_leads": 10, "seed": 1, "out_dir": tmp_path / "x", **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(**args)
    assert not (tmp_path / "x").exists()


def test_short_custom_span_and_tiny_run(tmp_path: Path) -> None:
    config = SimulatorConfig(start_date=dt.date(2022, 5, 4), days=60, n_campaigns=3, chunk_size=100)
    summary = generate(150, 9, tmp_path, config=config)
    t = _read(tmp_path)
    assert t["leads"]["created_at"].min() == pd.Timestamp("2022-05-04", tz="UTC")
    assert t["activities"]["occurred_at"].max() < pd.Timestamp("2022-07-03", tz="UTC")
    assert len(t["campaigns"]) == 3 and summary.n_leads == 150
    since = t["propensity"]["week_start"] - pd.Timestamp("2022-05-04", tz="UTC")
    assert (since.dt.total_seconds() % (7 * 86_400) == 0).all()


def test_other_format_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    generate(50, 1, tmp_path, config=SimulatorConfig(chunk_size=100))
    with pytest.raises(ValueError, match=r"leads\.parquet"):
        generate(50, 1, tmp_path, fmt="csv", config=SimulatorConfig(chunk_size=100))


def test_failure_leaves_previous_files_untouched(tmp_path: Path) -> None:
    config = SimulatorConfig(chunk_size=100)
    generate(250, 1, tmp_path, config=config)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def boom(done: int, total: int) -> None:
        if done >= 200:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(250, 2, tmp_path, config=config, progress=boom)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # same files (no temporary leftovers), same bytes


def test_no_campaigns_is_allowed(tmp_path: Path) -> None:
    summary = generate(200, 4, tmp_path, config=SimulatorConfig(n_campaigns=0, chunk_size=100))
    t = _read(tmp_path)
    assert summary.n_campaigns == 0 and t["campaigns"].empty
    assert t["activities"]["campaign_id"].isna().all()
    schema = pq.read_schema(tmp_path / GROUND_TRUTH_DIR / "campaigns.parquet")
    assert schema.field("campaign_id").type == pa.string() and schema.field("true_effect").type == pa.float64()
