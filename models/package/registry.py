"""Model registry: list versions, promote the challenger to champion, roll back.

Aliases on the registered model (default name ``leadscore``):

* ``challenger``: the newest trained version (set by :func:`models.package.tracking.log_training_run`);
  removed from a version when it becomes champion.
* ``champion``: the version serving uses. It moves only when a version beats the current
  champion on the *challenger's* test snapshots by more than a margin (or by a forced manual
  promotion, or a rollback).

Every champion change is appended to a JSON list in the registered-model tag
``leadscore.champion_history`` so :meth:`ModelRegistry.rollback` can return to the previous one.
Every promotion decision is logged on the candidate's run (``promotion/decision-<time>.json``,
``promotion.*`` metrics, ``leadscore.promotion*`` tags) and as model-version tags.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from models.config import METRIC_DIRECTION, PromotionConfig
from models.judge.guardrails import SignalCheck, compare_with_baselines, compare_with_champion, feature_set_change
from models.package.bundle import load_scoring_model, model_metrics
from models.package.tracking import BASELINE_PREFIX, CHALLENGER_ALIAS, CHAMPION_ALIAS, TEST_ROWS_ARTIFACT
from models.package.uris import redact_uri

HISTORY_TAG = "leadscore.champion_history"
DECISION_TAG = "leadscore.promotion"
DEFAULT_PRIMARY_METRIC = "pr_auc"
DEFAULT_MODEL_NAME = "leadscore"
# Bounded so the tag stays small; rollback needs only the recent past.
_HISTORY_LIMIT = 100

Evaluator = Callable[[Any, pd.DataFrame], Mapping[str, float]]
"""``evaluate(scoring_model, test_rows) -> metrics``: build the features of ``test_rows``
(``lead_id``, ``as_of`` and labels, as logged with the candidate) and score them."""


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (unknown model or version, nothing to roll back...)."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version as shown by ``leadscore models list``."""

    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    created: datetime
    status: str
    primary_metric: str
    primary_value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def is_champion(self) -> bool:
        return CHAMPION_ALIAS in self.aliases


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of comparing a candidate version with the current champion.

    Attributes:
        delta: Improvement of the candidate over the champion in the primary metric, signed so
            that positive is better (for lower-is-better metrics it is champion - candidate).
            ``None`` when there was no champion to compare with.
        same_rows: Whether the champion's metrics were computed on the candidate's test rows
            (False only for a manual promotion without an evaluator, which compares logged
            metrics from each model's own test set).
    """

    name: str
    version: int
    champion_version: int | None
    primary_metric: str
    higher_is_better: bool
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    delta: float | None
    min_relative: float
    promoted: bool
    forced: bool
    same_rows: bool
    reason: str
    decided_at: str
    #: The first guardrail that failed (``no_signal``, ``feature_set``, ``champion``, ``baseline``), or None.
    guardrail: str | None = None
    failures: list[str] = field(default_factory=list)
    #: The no-signal check (:class:`models.judge.guardrails.SignalCheck` as a dict), when known.
    signal: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric_rows(self) -> list[tuple[str, float, float | None, float | None]]:
        """(metric, candidate, champion, candidate - champion) for every candidate metric."""
        rows = []
        for key in sorted(self.challenger_metrics):
            value = self.challenger_metrics[key]
            other = (self.champion_metrics or {}).get(key)
            rows.append((key, value, other, value - other if other is not None else None))
        return rows


@dataclass(frozen=True)
class RollbackResult:
    name: str
    from_version: int
    to_version: int


class ModelRegistry:
    """Champion/challenger management for one registered model.

    Args:
        client: ``MlflowClient`` for the tracking/registry store (e.g.
            ``TrackingTarget.client()``).
        name: Registered model name.
        primary_metric: Default metric for :meth:`list_versions` and promotions.
    """

    def __init__(
        self, client: MlflowClient, name: str = DEFAULT_MODEL_NAME, primary_metric: str = DEFAULT_PRIMARY_METRIC
    ):
        self.client = client
        self.name = name
        self.primary_metric = primary_metric

    # ---------------------------------------------------------------------------------------
    # reading

    def _registered_model(self) -> Any:
        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(
                    f"no registered model '{self.name}' in {_display(self.client)}; train one first (leadscore train)"
                ) from None
            raise

    def _all_versions(self) -> list[ModelVersion]:
        self._registered_model()
        escaped = self.name.replace("'", "\\'")
        versions: list[ModelVersion] = []
        token = None
        while True:
            page = self.client.search_model_versions(f"name='{escaped}'", page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        return sorted(versions, key=lambda mv: int(mv.version))

    def _version(self, version: int | str) -> ModelVersion:
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise RegistryError(f"model version must be a number, got {version!r}") from None
        self._registered_model()
        try:
            return self.client.get_model_version(self.name, str(number))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = ", ".join(str(mv.version) for mv in self._all_versions()) or "none"
            raise RegistryError(f"model '{self.name}' has no version {number} (versions: {known})") from None

    def _by_alias(self, alias: str) -> ModelVersion | None:
        registered = self._registered_model()
        if alias not in (registered.aliases or {}):
            return None
        return self.client.get_model_version_by_alias(self.name, alias)

    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return model_metrics(run.data.metrics)

    def _info(self, mv: ModelVersion, aliases: tuple[str, ...] | None = None) -> VersionInfo:
        metrics = self._run_metrics(mv.run_id)
        return VersionInfo(
            name=self.name,
            version=int(mv.version),
            aliases=tuple(sorted(aliases if aliases is not None else (mv.aliases or ()))),
            run_id=mv.run_id or None,
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            status=str(mv.status),
            primary_metric=self.primary_metric,
            primary_value=metrics.get(self.primary_metric),
            metrics=metrics,
            tags=dict(mv.tags or {}),
        )

    def list_versions(self) -> list[VersionInfo]:
        """All versions, oldest first, with aliases and the primary metric."""
        registered = self._registered_model()
        by_version: dict[str, list[str]] = {}
        for alias, version in (registered.aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        return [self._info(mv, tuple(by_version.get(str(mv.version), ()))) for mv in self._all_versions()]

    def get(self, version: int | str) -> VersionInfo:
        """One version (RegistryError if unknown)."""
        return self._info(self._version(version))

    def champion(self) -> VersionInfo | None:
        """The current champion, or None if no version has been promoted yet."""
        mv = self._by_alias(CHAMPION_ALIAS)
        return self._info(mv) if mv is not None else None

    def challenger(self) -> VersionInfo | None:
        """The current challenger, or None."""
        mv = self._by_alias(CHALLENGER_ALIAS)
        return self._info(mv) if mv is not None else None

    def champion_history(self) -> list[int]:
        """Versions that have been champion, oldest first (the current one last)."""
        raw = (self._registered_model().tags or {}).get(HISTORY_TAG)
        if not raw:
            return []
        try:
            values = json.loads(raw)
            return [int(v) for v in values]
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"registered model tag {HISTORY_TAG} is not a JSON list of versions: {raw!r}") from exc

    def test_rows(self, version: int | str) -> pd.DataFrame:
        """The test snapshots (ids + labels) logged with a version's training run."""
        mv = self._version(version)
        if not mv.run_id:
            raise RegistryError(f"model '{self.name}' version {mv.version} has no training run")
        with tempfile.TemporaryDirectory(prefix="leadscore-rows-") as tmp:
            try:
                path = self.client.download_artifacts(mv.run_id, TEST_ROWS_ARTIFACT, tmp)
            except (MlflowException, OSError) as exc:
                raise RegistryError(
                    f"model '{self.name}' version {mv.version}: run {mv.run_id} has no {TEST_ROWS_ARTIFACT} ({exc})"
                ) from exc
            return pd.read_parquet(path)

    def load(self, version: int | str) -> Any:
        """The scoring model of a version."""
        mv = self._version(version)
        model, _ = load_scoring_model(
            f"models:/{self.name}/{mv.version}",
            tracking_uri=self.client.tracking_uri,
            # MlflowClient keeps its registry URI private; leadscore uses one store for both.
            registry_uri=getattr(self.client, "_registry_uri", None) or self.client.tracking_uri,
        )
        return model

    # ---------------------------------------------------------------------------------------
    # promotion

    def promote_if_better(
        self,
        version: int | str | None = None,
        *,
        primary_metric: str | None = None,
        evaluate: Evaluator | None = None,
        policy: PromotionConfig | None = None,
        signal: SignalCheck | None = None,
        baselines: Mapping[str, Mapping[str, float]] | None = None,
        candidate_features: Sequence[str] | None = None,
        force: bool = False,
    ) -> PromotionDecision:
        """Make ``version`` (default: the challenger) champion if it passes every guardrail.

        The champion is re-evaluated with ``evaluate`` on the candidate's own test rows, so both metric
        sets describe the same snapshots. ``signal`` and ``baselines`` default to what the candidate's run
        logged; ``candidate_features`` to the candidate model's feature spec. See :meth:`_decide`.

        Raises:
            RegistryError: Unknown version, no challenger, or a champion exists and no
                ``evaluate`` was given.
        """
        return self._decide(
            version,
            primary_metric,
            evaluate,
            policy or PromotionConfig(),
            signal=signal,
            baselines=baselines,
            candidate_features=candidate_features,
            manual=False,
            force=force,
        )

    def promote(
        self,
        version: int | str,
        *,
        primary_metric: str | None = None,
        evaluate: Evaluator | None = None,
        policy: PromotionConfig | None = None,
        force: bool = False,
    ) -> PromotionDecision:
        """Manual promotion under the same guardrails, with the same comparison report.

        Without ``evaluate`` the champion's logged metrics (from its own test set) are compared
        and the report says so. A version that fails a guardrail is promoted only with ``force``.
        """
        return self._decide(version, primary_metric, evaluate, policy or PromotionConfig(), manual=True, force=force)

    def logged_signal(self, version: int | str) -> SignalCheck | None:
        """The no-signal check logged on a version's training run (None if it has none)."""
        mv = self._version(version)
        return SignalCheck.from_metrics(self._all_run_metrics(mv.run_id))

    def record_signal(self, version: int | str, check: SignalCheck) -> None:
        """Log a no-signal check on a version's training run (``guardrail.*`` metrics)."""
        mv = self._version(version)
        if not mv.run_id:
            return
        from mlflow.entities import Metric

        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(mv.run_id, metrics=[Metric(k, v, now, 0) for k, v in check.to_metrics().items()])

    def _all_run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        try:
            return {k: float(v) for k, v in self.client.get_run(run_id).data.metrics.items()}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def _decide(
        self,
        version: int | str | None,
        primary_metric: str | None,
        evaluate: Evaluator | None,
        policy: PromotionConfig,
        *,
        signal: SignalCheck | None = None,
        baselines: Mapping[str, Mapping[str, float]] | None = None,
        candidate_features: Sequence[str] | None = None,
        manual: bool,
        force: bool,
    ) -> PromotionDecision:
        """Apply the guardrails, in this order of reporting:

        1. no signal (:func:`models.judge.guardrails.check_signal`, logged on the run): never promoted,
           the first model included;
        2. feature set differs from the champion's (another data set under the same name): reported with
           the fix, the champion is not scored;
        3. challenger >= ``policy.min_relative`` x champion on the primary metric, on the same rows;
        4. challenger beats the best baseline (``policy.beat_best_baseline``; needs a champion to replace).

        ``force`` promotes anyway (recorded as forced).
        """
        metric = primary_metric or self.primary_metric
        if metric not in METRIC_DIRECTION:
            raise RegistryError(
                f"cannot promote on '{metric}': direction unknown (choose one of {', '.join(sorted(METRIC_DIRECTION))})"
            )
        higher = METRIC_DIRECTION[metric]
        if version is None:
            mv = self._by_alias(CHALLENGER_ALIAS)
            if mv is None:
                raise RegistryError(f"model '{self.name}' has no '{CHALLENGER_ALIAS}' version to promote")
        else:
            mv = self._version(version)
        candidate = int(mv.version)
        run_metrics = self._all_run_metrics(mv.run_id)
        challenger_metrics = model_metrics(run_metrics)
        if metric not in challenger_metrics:
            raise RegistryError(
                f"model '{self.name}' version {candidate} has no metric '{metric}' "
                f"(has: {', '.join(sorted(challenger_metrics)) or 'none'})"
            )
        now = datetime.now(UTC).isoformat(timespec="seconds")
        champion = self._by_alias(CHAMPION_ALIAS)
        if champion is not None and int(champion.version) == candidate:
            # Nothing changes, so nothing is recorded.
            return PromotionDecision(
                name=self.name,
                version=candidate,
                champion_version=candidate,
                primary_metric=metric,
                higher_is_better=higher,
                challenger_metrics=challenger_metrics,
                champion_metrics=challenger_metrics,
                delta=0.0,
                min_relative=policy.min_relative,
                promoted=False,
                forced=False,
                same_rows=True,
                reason=f"version {candidate} is already the champion",
                decided_at=now,
            )
        value = challenger_metrics[metric]
        failed: list[tuple[str, str]] = []  # (guardrail, why), in reporting order
        passed: list[str] = []

        # 1. no signal
        check = signal or SignalCheck.from_metrics(run_metrics)
        if policy.no_signal.enabled:
            if check is None:
                failed.append(
                    (
                        "no_signal",
                        f"version {candidate} has no logged no-signal check (trained before the guardrail "
                        "existed): retrain it, or promote with --force",
                    )
                )
            elif not check.passed:
                failed.append(("no_signal", check.message()))
            else:
                passed.append(check.message())

        champion_version: int | None = None
        champion_metrics: dict[str, float] | None = None
        delta: float | None = None
        same_rows = True
        if champion is None:
            passed.append("no champion yet: the first model becomes champion")
            if policy.beat_best_baseline:  # said, not enforced: with no champion there is nothing else to serve
                logged = baselines if baselines is not None else _baseline_metrics(run_metrics)
                versus = compare_with_baselines(value, logged, metric=metric, higher_is_better=higher)
                if versus is not None:
                    passed.append(
                        versus.text
                        if versus.passed
                        else f"WARNING {versus.text}: a baseline does better; the next challenger must beat it"
                    )
        else:
            champion_version = int(champion.version)
            champion_model = self.load(champion_version)
            # 2. feature set
            change = None
            champion_spec = getattr(champion_model, "spec", None)
            if champion_spec is not None:
                if candidate_features is None:
                    candidate_spec = getattr(self.load(candidate), "spec", None)
                    candidate_features = list(candidate_spec.features) if candidate_spec is not None else None
                if candidate_features is not None:
                    change = feature_set_change(candidate_features, list(champion_spec.features))
            if change is not None:
                failed.append(("feature_set", change.message(self.name, candidate, champion_version)))
            else:
                # 3. champion on the same rows
                if evaluate is not None:
                    rows = self.test_rows(candidate)
                    champion_metrics = {k: float(v) for k, v in evaluate(champion_model, rows).items()}
                elif manual:
                    champion_metrics = self._run_metrics(champion.run_id)
                    same_rows = False
                else:
                    raise RegistryError(
                        "promote_if_better needs an evaluator to score the champion "
                        f"(version {champion_version}) on the challenger's test rows"
                    )
                if metric not in champion_metrics:
                    raise RegistryError(f"champion version {champion_version} has no metric '{metric}' to compare")
                other = champion_metrics[metric]
                delta = float(value - other if higher else other - value)
                comparison = compare_with_champion(
                    value,
                    other,
                    metric=metric,
                    higher_is_better=higher,
                    min_relative=policy.min_relative,
                    champion_version=champion_version,
                )
                text = (
                    comparison.text
                    if same_rows
                    else comparison.text.replace("on the same rows", "on logged metrics from different test sets")
                )
                (passed.append(text) if comparison.passed else failed.append(("champion", text)))
            # 4. best baseline
            if policy.beat_best_baseline:
                logged = baselines if baselines is not None else _baseline_metrics(run_metrics)
                versus = compare_with_baselines(value, logged, metric=metric, higher_is_better=higher)
                if versus is not None:
                    (passed.append(versus.text) if versus.passed else failed.append(("baseline", versus.text)))

        guardrail = failed[0][0] if failed else None
        promoted = not failed or force
        forced = force and bool(failed)
        details = "; ".join([why for _, why in failed] + passed)
        if not failed:
            reason = f"promoted: {details}"
        elif force:
            reason = f"forced promotion despite the {guardrail} guardrail: {details}"
        else:
            reason = f"not promoted ({guardrail} guardrail): {details}"
        decision = PromotionDecision(
            name=self.name,
            version=candidate,
            champion_version=champion_version,
            primary_metric=metric,
            higher_is_better=higher,
            challenger_metrics=challenger_metrics,
            champion_metrics=champion_metrics,
            delta=delta,
            min_relative=policy.min_relative,
            promoted=promoted,
            forced=forced,
            same_rows=same_rows,
            reason=reason,
            decided_at=now,
            guardrail=guardrail,
            failures=[why for _, why in failed],
            signal=asdict(check) if check is not None else None,
        )
        if decision.promoted:
            self._set_champion(candidate)
        self._record(mv, decision)
        return decision

    def _set_champion(self, version: int) -> None:
        history = self.champion_history()
        current = self._by_alias(CHAMPION_ALIAS)
        if current is not None and (not history or history[-1] != int(current.version)):
            history.append(int(current.version))  # alias was moved outside leadscore
        history.append(version)
        self.client.set_registered_model_alias(self.name, CHAMPION_ALIAS, str(version))
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[-_HISTORY_LIMIT:]))
        challenger = self._by_alias(CHALLENGER_ALIAS)
        if challenger is not None and int(challenger.version) == version:
            self.client.delete_registered_model_alias(self.name, CHALLENGER_ALIAS)

    def _record(self, mv: ModelVersion, decision: PromotionDecision) -> None:
        outcome = "forced" if decision.forced else ("promoted" if decision.promoted else "rejected")
        version = str(mv.version)
        self.client.set_model_version_tag(self.name, version, DECISION_TAG, outcome)
        self.client.set_model_version_tag(self.name, version, f"{DECISION_TAG}.reason", decision.reason[:5000])
        self.client.set_model_version_tag(self.name, version, f"{DECISION_TAG}.at", decision.decided_at)
        if not mv.run_id:
            return
        # Microseconds keep repeated decisions on one run apart (decided_at is to the second).
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self.client.log_dict(mv.run_id, decision.to_dict(), f"promotion/decision-{stamp}.json")
        values: dict[str, float] = {
            "promotion.promoted": float(decision.promoted),
            "promotion.min_relative": decision.min_relative,
        }
        if decision.delta is not None:
            values["promotion.delta"] = decision.delta
        for key, metric_value in (decision.champion_metrics or {}).items():
            values[f"promotion.champion.{key}"] = metric_value
        from mlflow.entities import Metric

        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(mv.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        run_tags = {DECISION_TAG: outcome, f"{DECISION_TAG}.reason": decision.reason[:5000]}
        if decision.guardrail is not None:
            run_tags[f"{DECISION_TAG}.guardrail"] = decision.guardrail
        if decision.champion_version is not None:
            run_tags[f"{DECISION_TAG}.compared_to"] = str(decision.champion_version)
        for key, tag in run_tags.items():
            self.client.set_tag(mv.run_id, key, tag)

    def rollback(self) -> RollbackResult:
        """Move ``champion`` back to the previous champion.

        Raises:
            RegistryError: There is no champion, or no earlier champion version still exists.
        """
        current = self._by_alias(CHAMPION_ALIAS)
        if current is None:
            raise RegistryError(f"model '{self.name}' has no champion to roll back")
        current_version = int(current.version)
        history = self.champion_history()
        if history and history[-1] == current_version:
            history.pop()
        existing = {int(mv.version) for mv in self._all_versions()}
        while history and (history[-1] == current_version or history[-1] not in existing):
            history.pop()
        if not history:
            raise RegistryError(
                f"model '{self.name}': no previous champion to roll back to (champion is version {current_version})"
            )
        target = history[-1]
        self.client.set_registered_model_alias(self.name, CHAMPION_ALIAS, str(target))
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history[-_HISTORY_LIMIT:]))
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.client.set_model_version_tag(self.name, str(current_version), DECISION_TAG, "rolled_back")
        self.client.set_model_version_tag(
            self.name, str(current_version), f"{DECISION_TAG}.reason", f"rolled back to version {target} at {stamp}"
        )
        return RollbackResult(name=self.name, from_version=current_version, to_version=target)


def _baseline_metrics(run_metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``baseline_<name>.<metric>`` run metrics as ``{name: {metric: value}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in run_metrics.items():
        if key.startswith(BASELINE_PREFIX) and "." in key:
            name, _, metric = key[len(BASELINE_PREFIX) :].partition(".")
            out.setdefault(name, {})[metric] = float(value)
    return out


def _display(client: MlflowClient) -> str:

    return redact_uri(str(client.tracking_uri))
