"""Monitoring: has the scored population drifted from the training data, and did the served scores hold?

Public API (stable; the HTML report and the ``monitor`` flow build on it):

:mod:`serving.monitoring.drift`
    - ``psi(reference, current, bins=10, *, categorical=None, max_categories=20, smoothing=0.5) -> float``:
      population stability index; quantile bins from the reference, NaN its own bin, categories by
      category (rare ones pooled as "other"), additive smoothing of 0.5 per bin.
    - ``bin_counts(reference, current, bins=10, ...) -> DataFrame`` (bin, reference, current): the counts
      behind a PSI, for charts.
    - ``reference_population(training_rows, *, last_snapshots=4, max_rows=50_000, seed=0) -> DataFrame``:
      the like-with-like reference, the champion's training snapshots at its newest training as-of dates.
    - ``comparable_ages(reference, current, *, max_age_days=None) -> (ref_mask, cur_mask, age_limit)``:
      keep leads of ages present in the reference on both sides.
    - ``drift_report(reference_frame, current_frame, features, score_ref, score_cur, *, importance=None,
      categorical=None, bins=10, score_threshold=0.2, feature_threshold=0.25, top_k=10) -> DriftReport``:
      ``DriftReport.score_psi``, ``.features`` (feature, psi, n_reference, n_current, importance, rank,
      top, flagged; sorted by PSI, largest first), ``.flagged_features``, ``.alerting_features``,
      ``.moved_most(n)``, ``.to_dict()``.

:mod:`serving.monitoring.performance`
    - ``score_history(store, *, since=None, until=None) -> DataFrame``: every stored score with its batch.
    - ``matured_outcomes(store, history, horizon_days, since=None, *, until=None, now=None) -> DataFrame``:
      one row per served score whose horizon has passed inside the observed data: batch_id, lead_id, as_of,
      scored_at, model_version, readiness, score, grade, handed_off, converted.
    - ``maturity_summary(store, history, horizon_days) -> Maturity``: matured vs waiting batches, and when
      the next one matures (for empty states).
    - ``served_performance(outcomes, *, n_bins=10, n_boot=200, seed=0) -> ServedPerformance``: ROC AUC and
      PR AUC with bootstrap 95 % intervals, calibration bins, conversion per grade with Wilson 95 % intervals
      (``.by_grade``: grade, n, converted, rate, ci_low, ci_high, mean_readiness, handed_off), per batch.
    - ``conversion_by_grade(outcomes)``, ``wilson_interval(k, n)``.

:mod:`serving.monitoring.reference` (the champion's reference rows) and :mod:`serving.monitoring.monitor`
(the whole check: drift + matured performance + alert rules, its JSON result and the webhook) build on
these two modules.
"""
