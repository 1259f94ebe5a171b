"""Fitting the models: encoding, the temporal/stratified split, readiness (+ calibration), stage, baselines,
and :class:`~models.fit.scoring.ScoringModel`, the one fitted object serving needs."""
