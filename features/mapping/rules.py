"""Applying the mapping: leads, attributes, activity and stage rules and the label, with rejected rows
and their reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from features.contract import (
    AttributeSpec,
    Contract,
    ExcludedColumn,
    format_validation_error,
)
from features.mapping.report import RuleReport, SourceReport
from features.mapping.schema import (
    SINGLE_SNAPSHOT_STAGES,
    ActivityConfig,
    ColumnValue,
    ConstantValue,
    LabelConfig,
    MappingConfig,
    MappingError,
    StageEventConfig,
    snake_name,
)
from features.mapping.sources import (
    Columns,
    Source,
    column_label,
    fixed_time,
    parse_mapped_numbers,
    parse_mapped_times,
    translate,
)
from features.parsing import STR_DTYPE, TIME_UNIT, show_value
from features.quarantine import RowProblems

if TYPE_CHECKING:
    pass


# ============================================================================================
# The import
# ============================================================================================
@dataclass
class _Rule:
    """Output rows of one activity/stage rule before rejected rows are removed."""

    rule: str
    table: str
    source: str
    rows: np.ndarray  # source row positions of the output rows
    columns: dict[str, Any]
    not_applicable: Counter[str] = field(default_factory=Counter)
    skip_masks: dict[str, np.ndarray] = field(default_factory=dict)  # reason -> rows skipped by it


@dataclass
class _Built:
    tables: dict[str, pd.DataFrame]
    contract: Contract
    sources: dict[str, SourceReport]
    rules: list[RuleReport]
    rejects: dict[str, pd.DataFrame]


def _excluded_entries(mapping: MappingConfig, cols: Columns) -> list[ExcludedColumn]:
    """Excluded columns for the contract, after checking each is known and none is also a feature."""
    entries: list[ExcludedColumn] = []
    explicit: set[tuple[str, str]] = set()
    for i, item in enumerate(mapping.excluded):
        where = f"excluded.{i}"
        if item.source is not None:
            if item.source not in cols.sources:
                cols.errors.append(f"{where}.source: source '{item.source}' is not declared under sources")
                continue
            owners = [item.source] if item.column in cols.columns_of(item.source) else []
        else:
            owners = [s for s in cols.sources if item.column in cols.columns_of(s)]
        if not owners:
            cols._missing(f"{where}.column", item.column, [item.source] if item.source else list(cols.sources))
            continue
        for owner in owners:
            explicit.add((owner, item.column))
            feature = cols.features.get((owner, item.column))
            if feature is not None:
                cols.errors.append(
                    f"{where}: column '{item.column}' of '{owner}' is excluded ({item.reason}) but used as a feature "
                    f"at {feature}; an excluded column is never a feature"
                )
            entries.append(
                ExcludedColumn(
                    name=snake_name(item.column),
                    reason=item.reason,
                    column=item.column,
                    source=cols.sources[owner].path.name,
                    note=item.note,
                )
            )
    for name, source in cols.sources.items():
        for column in cols.columns_of(name):
            if column in cols.used[name] or (name, column) in explicit:
                continue
            if mapping.other_columns is None:
                cols.errors.append(
                    f"column '{column}' of source '{name}' ({source.path.name}) is neither mapped nor excluded; "
                    "add it under attributes, or under excluded with a reason (leaky, post_outcome, identifier, "
                    "unused), or set other_columns"
                )
                continue
            entries.append(
                ExcludedColumn(
                    name=snake_name(column),
                    reason=mapping.other_columns.reason,
                    column=column,
                    source=source.path.name,
                    note=mapping.other_columns.note or "not mentioned in the mapping (other_columns)",
                )
            )
    if mapping.label is not None:
        entries.append(
            ExcludedColumn(
                name=snake_name(mapping.label.column),
                reason="outcome",
                column=mapping.label.column,
                source=cols.sources[mapping.label.source or mapping.leads.source].path.name,
                note="the label (single-snapshot outcome); never a feature",
            )
        )
    return entries


def build_tables(
    mapping: MappingConfig,
    mapping_path: Path,
    sources: dict[str, Source],
    sample_rows: int | None,
) -> _Built:
    tz = mapping.timezone
    cols = Columns(mapping, sources, mapping_path)
    lead_source = sources[mapping.leads.source]
    lead_frame = lead_source.frame
    n_leads = len(lead_frame)
    sampled = sample_rows is not None

    # -- resolve every column reference first, so all mistakes are reported at once ---------------
    id_config = mapping.leads.id
    if id_config.column is not None:
        cols.source_column(lead_source.name, id_config.column, "leads.id.column")
    created = mapping.leads.created_at
    created_src = None
    if created.column is not None:
        created_src = cols.lead_column(created.column, created.source, "leads.created_at.column")
    join_left_sources: list[str | None] = []
    for i, join in enumerate(mapping.joins):
        join_left_sources.append(cols.join_key(join.left_key, i, f"joins.{i}.left_on"))
        cols.source_column(join.source, join.right_key, f"joins.{i}.right_on")
    attribute_sources = [
        cols.lead_column(a.column, a.source, f"attributes.{i}.column", feature=True)
        for i, a in enumerate(mapping.attributes)
    ]
    aggregate_sources = [
        cols.lead_column(a.column, a.source, f"aggregate_activities.{i}.column", feature=True)
        for i, a in enumerate(mapping.aggregate_activities)
    ]
    label_source = None
    if mapping.label is not None:
        label_source = cols.lead_column(mapping.label.column, mapping.label.source, "label.column")
    rules: list[tuple[str, ActivityConfig | StageEventConfig]] = [
        (f"activities.{i}", r) for i, r in enumerate(mapping.activities)
    ]
    rules += [(f"stages.events.{i}", r) for i, r in enumerate(mapping.stages.events if mapping.stages else [])]
    for where, rule in rules:
        in_lead_rows = rule.source in cols.lead_sources
        if in_lead_rows and rule.lead_id is not None:
            cols.errors.append(
                f"{where}.lead_id: source '{rule.source}' is part of the lead rows (their id is leads.id); "
                "remove lead_id"
            )
        if not in_lead_rows:
            if rule.lead_id is None:
                cols.errors.append(f"{where}.lead_id: source '{rule.source}' needs the column holding the lead id")
            else:
                cols.source_column(rule.source, rule.lead_id, f"{where}.lead_id")
        if rule.time.fixed is not None:
            cols.errors.append(f"{where}.time: event times come from a column, not a fixed time")
        elif rule.time.source is not None and rule.time.source != rule.source:
            cols.errors.append(f"{where}.time.source: times come from the rule's own source '{rule.source}'")
        fields: list[tuple[str, str | None, bool]] = [("time.column", rule.time.column, False)]
        if isinstance(rule, ActivityConfig):
            if isinstance(rule.type, ColumnValue):
                fields.append(("type.column", rule.type.column, False))
            fields += [("channel", rule.channel, True), ("campaign", rule.campaign, True), ("value", rule.value, True)]
            if rule.topic is not None:
                fields.append(("topic.column", rule.topic.column, True))
        elif isinstance(rule.stage, ColumnValue):
            fields.append(("stage.column", rule.stage.column, False))
        for name, column, feature in fields:
            if column is not None:
                cols.source_column(rule.source, column, f"{where}.{name}", feature=feature)
    used_sources = set(cols.lead_sources) | {rule.source for _, rule in rules}
    for name in sources:
        if name not in used_sources:
            cols.errors.append(f"sources.{name}: declared but not used by leads, joins, activities or stage events")
    excluded = _excluded_entries(mapping, cols)
    cols.raise_if_errors()

    lead_problems = RowProblems(n_leads)

    # -- lead ids and joins -----------------------------------------------------------------------
    if id_config.column is not None:
        lead_ids = lead_frame[id_config.column].astype(STR_DTYPE)
    else:
        lead_ids = pd.Series([f"{id_config.prefix}{i + 1}" for i in range(n_leads)], dtype=STR_DTYPE)
    present_ids = lead_ids.notna().to_numpy(dtype=bool)
    duplicate = present_ids & lead_ids.duplicated(keep="first").to_numpy(dtype=bool)
    if duplicate.any():
        dup_ids = lead_ids[duplicate].tolist()
        firsts = _first_rows(lead_ids, present_ids & ~duplicate, dup_ids)
        lead_problems.add(
            "duplicate_lead_id",
            duplicate,
            lambda pos: [f"lead id '{i}' is a duplicate of row {r + 1}" for i, r in zip(dup_ids, firsts, strict=True)],
        )

    join_problems: dict[str, RowProblems] = {}
    join_skips: dict[str, dict[str, np.ndarray]] = {}
    for join, left_source in zip(mapping.joins, join_left_sources, strict=True):
        right = sources[join.source].frame
        problems = RowProblems(len(right))
        keys = right[join.right_key].astype(STR_DTYPE)
        has_key = keys.notna().to_numpy(dtype=bool)
        problems.add_constant(f"missing_key:{join.right_key}", ~has_key, f"{join.right_key} is missing")
        dup = has_key & keys.duplicated(keep="first").to_numpy(dtype=bool)
        if dup.any():
            dup_keys = keys[dup].tolist()
            firsts = _first_rows(keys, has_key & ~dup, dup_keys)
            problems.add(f"duplicate_key:{join.right_key}", dup, _duplicate_messages(join.right_key, dup_keys, firsts))
        usable = has_key & ~dup
        index = pd.Index(keys[usable].to_numpy(dtype=object))
        left = _lead_values(cols, join.left_key, str(left_source), lead_frame)
        positions = index.get_indexer(pd.Index(left.to_numpy(dtype=object)))
        usable_rows = np.flatnonzero(usable)
        indexer = np.where(positions >= 0, usable_rows[np.maximum(positions, 0)], -1)
        indexer[left.isna().to_numpy(dtype=bool)] = -1
        cols.indexers[join.source] = indexer
        join_problems[join.source] = problems
        matched = np.zeros(len(right), dtype=bool)
        matched[indexer[indexer >= 0]] = True
        unmatched = usable & ~matched
        join_skips[join.source] = {}
        if sampled:
            join_skips[join.source]["outside the sample"] = unmatched
        elif join.unmatched == "skip":
            join_skips[join.source][f"no lead has this {join.right_key} (unmatched: skip)"] = unmatched
        else:
            unmatched_text = f"matches no {join.left_key} of source '{mapping.leads.source}'"
            problems.add_per_value(
                f"unmatched_key:{join.right_key}",
                unmatched,
                keys,
                _value_message(f"{join.right_key} {{value}} {unmatched_text}"),
            )

    # -- created time, attributes, label -----------------------------------------------------------
    if created.column is not None and created_src is not None:
        text = _lead_values(cols, created.column, created_src, lead_frame)
        created_times = parse_mapped_times(
            text,
            created.format,
            tz,
            column_label(created_src, created.column),
            lead_problems,
            file=sources[created_src].path,
        )
        created_utc = created_times.values
    else:
        created_utc = np.full(n_leads, fixed_time(created, tz, f"{mapping_path}: leads.created_at.fixed"))

    leads_columns: dict[str, Any] = {"lead_id": lead_ids, "created_at": created_utc}
    attributes: list[AttributeSpec] = []
    for item, src in zip(mapping.attributes, attribute_sources, strict=True):
        assert src is not None
        label = column_label(src, item.column)
        text, _ = translate(_lead_values(cols, item.column, src, lead_frame), item.values)
        kind = item.kind
        if item.bins is not None:
            numbers = parse_mapped_numbers(text, label, lead_problems)
            bin_labels = item.bins.bin_labels()
            codes = np.searchsorted(np.asarray(item.bins.edges, dtype=np.float64), numbers, side="right")
            binned = np.asarray(bin_labels, dtype=object)[codes]
            binned[np.isnan(numbers)] = None
            leads_columns[item.feature_name] = pd.Series(binned, dtype=STR_DTYPE)
        elif kind == "numeric":
            leads_columns[item.feature_name] = parse_mapped_numbers(text, label, lead_problems)
        else:
            leads_columns[item.feature_name] = text
        description = f"{sources[src].path.name}: {item.column}"
        if item.bins is not None:
            description += f" (binned at {item.bins.edges})"
        attributes.append(
            AttributeSpec(
                name=item.feature_name,
                kind=kind,
                description=f"{description}. {item.description}" if item.description else description,
            )
        )
    for aggregate, src in zip(mapping.aggregate_activities, aggregate_sources, strict=True):
        assert src is not None
        text, _ = translate(_lead_values(cols, aggregate.column, src, lead_frame), aggregate.values)
        leads_columns[aggregate.feature_name] = parse_mapped_numbers(
            text, column_label(src, aggregate.column), lead_problems
        )
        note = f"aggregate activity column {sources[src].path.name}: {aggregate.column} (total as of the export)"
        attributes.append(
            AttributeSpec(
                name=aggregate.feature_name,
                kind="numeric",
                description=f"{note}. {aggregate.description}" if aggregate.description else note,
            )
        )

    built_rules: list[_Rule] = []
    if mapping.label is not None and label_source is not None:
        built_rules.append(_label_rule(mapping.label, label_source, cols, lead_frame, created_utc, lead_problems))

    # -- activity and stage rules -------------------------------------------------------------------
    long_problems: dict[str, RowProblems] = {
        name: RowProblems(len(sources[name].frame)) for name in used_sources if name not in cols.lead_sources
    }
    for where, rule in rules:
        in_lead_rows = rule.source in cols.lead_sources
        problems = lead_problems if in_lead_rows else long_problems[rule.source]
        n_rows = n_leads if in_lead_rows else len(sources[rule.source].frame)
        built_rules.append(
            _event_rule(
                where,
                rule,
                _column_reader(cols, rule.source, lead_frame),
                n_rows,
                problems,
                tz,
                sources[rule.source].path,
                created_utc if in_lead_rows else None,
            )
        )

    # -- which lead rows survive; cascade to the rows that depend on them --------------------------
    lead_rejected = lead_problems.bad.copy()
    kept_ids = pd.Index(lead_ids[~lead_rejected & present_ids].to_numpy(dtype=object))
    rejected_ids = pd.Index(lead_ids[lead_rejected & present_ids].to_numpy(dtype=object)).difference(kept_ids)
    long_skips: dict[str, dict[str, np.ndarray]] = {name: {} for name in long_problems}
    for rule_out in built_rules:
        if rule_out.source in cols.lead_sources:
            continue
        frame = sources[rule_out.source].frame
        problems = long_problems[rule_out.source]
        rule_config = dict(rules)[rule_out.rule]
        lead_col = frame[str(rule_config.lead_id)].astype(STR_DTYPE)
        ids = lead_col.to_numpy(dtype=object)
        cascade = np.asarray(pd.Index(ids).isin(rejected_ids)) & lead_col.notna().to_numpy(dtype=bool)
        problems.add_per_value(
            "rejected_lead",
            cascade,
            lead_col,
            lambda v: f"lead {show_value(v)} was rejected by the mapping (see source_{mapping.leads.source}.csv)",
        )
        if sampled:
            outside = lead_col.notna().to_numpy(dtype=bool) & ~np.asarray(pd.Index(ids).isin(kept_ids)) & ~cascade
            long_skips[rule_out.source]["outside the sample"] = outside | long_skips[rule_out.source].get(
                "outside the sample", np.zeros(len(frame), dtype=bool)
            )
        rule_out.columns["lead_id"] = lead_col.to_numpy(dtype=object)[rule_out.rows]

    # -- assemble the tables ----------------------------------------------------------------------
    keep_leads = ~lead_rejected
    leads_table = _frame(leads_columns, keep_leads)
    activity_parts: list[pd.DataFrame] = []
    stage_parts: list[pd.DataFrame] = []
    rule_reports: list[RuleReport] = []
    long_used: dict[str, np.ndarray] = {name: np.zeros(len(sources[name].frame), dtype=bool) for name in long_problems}
    for rule_out in built_rules:
        in_lead_rows = rule_out.source in cols.lead_sources or rule_out.rule == "label"
        if in_lead_rows:
            ok = keep_leads[rule_out.rows]
            rule_out.columns["lead_id"] = lead_ids.to_numpy(dtype=object)[rule_out.rows]
        else:
            bad = long_problems[rule_out.source].bad
            outside = long_skips[rule_out.source].get("outside the sample")
            ok = ~bad[rule_out.rows]
            if outside is not None:
                ok &= ~outside[rule_out.rows]
            long_used[rule_out.source][rule_out.rows[ok]] = True
        part = pd.DataFrame({name: np.asarray(values)[ok] for name, values in rule_out.columns.items()})
        (activity_parts if rule_out.table == "activities" else stage_parts).append(part)
        rule_reports.append(
            RuleReport(
                rule=rule_out.rule,
                table=rule_out.table,
                source=rule_out.source,
                rows_written=int(ok.sum()),
                not_applicable=dict(rule_out.not_applicable),
            )
        )
        for reason, mask in rule_out.skip_masks.items():
            if not in_lead_rows:
                skips = long_skips[rule_out.source]
                skips[reason] = skips.get(reason, np.zeros(len(mask), dtype=bool)) | mask
    activities_table = _events_table(
        activity_parts, ("lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value")
    )
    stages_table = _events_table(stage_parts, ("lead_id", "stage", "entered_at"))

    # -- accounting -------------------------------------------------------------------------------
    reports: dict[str, SourceReport] = {}
    rejects: dict[str, pd.DataFrame] = {}
    reports[lead_source.name] = _source_report(lead_source, "leads", lead_problems, keep_leads, {})
    rejects[lead_source.name] = _rejects_frame(lead_source.frame, lead_problems)
    for join in mapping.joins:
        joined = sources[join.source]
        problems = join_problems[join.source]
        indexer = cols.indexers[join.source]
        used = np.zeros(len(joined.frame), dtype=bool)
        used[indexer[(indexer >= 0) & keep_leads]] = True
        used &= ~problems.bad
        skips = dict(join_skips[join.source])
        referred = np.zeros(len(joined.frame), dtype=bool)
        referred[indexer[indexer >= 0]] = True
        skips["only rejected leads refer to it"] = referred & ~used & ~problems.bad
        reports[join.source] = _source_report(joined, "join", problems, used, skips)
        rejects[join.source] = _rejects_frame(joined.frame, problems)
    for name, problems in long_problems.items():
        source = sources[name]
        used = long_used[name] & ~problems.bad
        skips = {reason: mask & ~problems.bad & ~used for reason, mask in long_skips[name].items()}
        reports[name] = _source_report(source, "events", problems, used, skips)
        rejects[name] = _rejects_frame(source.frame, problems)

    activity_types = mapping.activity_type_names()
    topics = mapping.topic_names()
    try:
        contract = Contract(
            name=mapping.name,
            mode=mapping.mode,
            attributes=attributes,
            activity_types=activity_types,
            topics=topics,
            stages=mapping.stage_spec(),
            timezone=tz,
            excluded_columns=excluded,
        )
    except ValidationError as exc:
        raise MappingError(
            f"{mapping_path}: the mapping yields an invalid data contract:\n{format_validation_error(exc)}"
        ) from exc
    check_feature_names(contract, mapping_path)
    return _Built(
        tables={"leads": leads_table, "activities": activities_table, "stage_history": stages_table},
        contract=contract,
        sources=reports,
        rules=rule_reports,
        rejects=rejects,
    )


def _duplicate_messages(key: str, values: list[Any], firsts: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    def describe(positions: np.ndarray) -> list[str]:
        return [
            f"{key} '{v}' is a duplicate of row {r + 1} (a joined source needs one row per key)"
            for v, r in zip(values, firsts, strict=True)
        ]

    return describe


def _value_message(template: str) -> Callable[[Any], str]:
    """A per-value reason: ``template`` with ``{value}`` replaced by the value as shown in reasons."""
    return lambda value: template.replace("{value}", show_value(value))


def _first_rows(values: pd.Series, first: np.ndarray, wanted: list[Any]) -> np.ndarray:
    """Row of the first occurrence (rows flagged in ``first``) of each value in ``wanted``."""
    rows = np.flatnonzero(first)
    return rows[pd.Index(values.to_numpy(dtype=object)[rows]).get_indexer(pd.Index(wanted, dtype=object))]


def _lead_values(cols: Columns, column: str, source: str, lead_frame: pd.DataFrame) -> pd.Series:
    """A column of the lead rows (from the lead source or a joined source), aligned with the lead rows."""
    if source == cols.lead_sources[0]:
        return lead_frame[column].astype(STR_DTYPE).reset_index(drop=True)
    indexer = cols.indexers[source]
    right = cols.sources[source].frame[column].astype(STR_DTYPE)
    taken = right.array.take(indexer, allow_fill=True)
    return pd.Series(taken, dtype=STR_DTYPE)


def _column_reader(cols: Columns, source: str, lead_frame: pd.DataFrame) -> Callable[[str], pd.Series]:
    """Columns of ``source`` row by row: aligned with the lead rows for lead sources, else as read."""
    if source in cols.lead_sources:
        return lambda column: _lead_values(cols, column, source, lead_frame)
    frame = cols.sources[source].frame
    return lambda column: frame[column].astype(STR_DTYPE)


def _label_rule(
    label: LabelConfig,
    source: str,
    cols: Columns,
    lead_frame: pd.DataFrame,
    created_utc: np.ndarray,
    problems: RowProblems,
) -> _Rule:
    text = _lead_values(cols, label.column, source, lead_frame)
    present = text.notna().to_numpy(dtype=bool)
    positive = text.isin(label.positive).to_numpy(dtype=bool)
    if label.negative is None:
        negative = present & ~positive
    else:
        negative = text.isin(label.negative).to_numpy(dtype=bool)
        unmapped = present & ~positive & ~negative
        problems.add_per_value(
            f"unmapped_value:{label.column}",
            unmapped,
            text,
            lambda v: (
                f"{column_label(source, label.column)} {show_value(v)} is neither a positive {label.positive} "
                f"nor a negative {label.negative} outcome value"
            ),
        )
    rows = np.flatnonzero(positive | negative)
    stage = np.where(positive[rows], SINGLE_SNAPSHOT_STAGES.converted, SINGLE_SNAPSHOT_STAGES.closed_negative[0])
    out = _Rule(
        rule="label",
        table="stage_history",
        source=source,
        rows=rows,
        columns={"stage": stage.astype(object), "entered_at": created_utc[rows]},
    )
    if (~present).any():
        out.not_applicable[f"{label.column} missing: lead left open (unlabelled)"] = int((~present).sum())
    return out


def _event_rule(
    where: str,
    rule: ActivityConfig | StageEventConfig,
    values: Callable[[str], pd.Series],
    n_rows: int,
    problems: RowProblems,
    tz: str,
    file: Path,
    created_utc: np.ndarray | None,
) -> _Rule:
    """Output rows of an activity or stage rule; ``created_utc`` is given for rules over the lead rows."""
    source = rule.source
    applies = np.ones(n_rows, dtype=bool)
    out = _Rule(
        rule=where,
        table="activities" if isinstance(rule, ActivityConfig) else "stage_history",
        source=source,
        rows=np.empty(0, dtype=np.int64),
        columns={},
    )

    def mapped(value: ConstantValue | ColumnValue, kind: str) -> np.ndarray:
        nonlocal applies
        if isinstance(value, ConstantValue):
            return np.full(n_rows, value.value, dtype=object)
        text = values(value.column)
        label = column_label(source, value.column)
        if value.values is None:
            result = text
        else:
            result, unmapped = translate(text, value.values)
            problems.add_per_value(
                f"unmapped_value:{label}",
                unmapped,
                text,
                lambda v: f"{label} {show_value(v)} is not in the {kind} value map of {where} (map it, or to null)",
            )
            to_none = text.notna().to_numpy(dtype=bool) & ~unmapped & result.isna().to_numpy(dtype=bool)
            if to_none.any():
                for raw, count in text[to_none].value_counts().items():
                    out.not_applicable[f"{label} {raw!r} maps to no {kind}"] = int(count)
                out.skip_masks[f"{where}: {kind} mapped to null"] = to_none
            applies &= ~to_none
        return result.to_numpy(dtype=object)

    if isinstance(rule, ActivityConfig):
        kind_values = mapped(rule.type, "activity type")
    else:
        kind_values = mapped(rule.stage, "stage")
    time_column = str(rule.time.column)
    text = values(time_column)
    time_label = column_label(source, time_column)
    times = parse_mapped_times(text, rule.time.format, tz, time_label, problems, file=file)
    if rule.skip_if_time_missing:
        skip = times.missing & applies
        if skip.any():
            out.not_applicable[f"{time_label} missing (skip_if_time_missing)"] = int(skip.sum())
            out.skip_masks[f"{where}: {time_column} missing"] = skip
        applies &= ~times.missing
    columns: dict[str, Any] = {}
    if isinstance(rule, ActivityConfig):
        columns["activity_type"] = kind_values
        columns["occurred_at"] = times.values
        none = np.full(n_rows, None, dtype=object)
        columns["channel"] = values(rule.channel).to_numpy(dtype=object) if rule.channel else none
        columns["campaign_id"] = values(rule.campaign).to_numpy(dtype=object) if rule.campaign else none
        columns["topic"] = mapped(rule.topic, "topic") if rule.topic is not None else none
        columns["value"] = (
            parse_mapped_numbers(values(rule.value), column_label(source, rule.value), problems)
            if rule.value
            else np.full(n_rows, np.nan)
        )
    else:
        columns["stage"] = kind_values
        columns["entered_at"] = times.values
        if created_utc is not None:
            # A stage entry before the lead's own created time in the same row is a contradiction: the lead
            # would look unconverted if only the entry were dropped, so the lead row is rejected.
            early = applies & ~np.isnat(times.values) & ~np.isnat(created_utc) & (times.values < created_utc)
            if early.any():
                created_text = pd.DatetimeIndex(created_utc[early]).strftime("%Y-%m-%dT%H:%M:%SZ")
                entry_text = pd.DatetimeIndex(times.values[early]).strftime("%Y-%m-%dT%H:%M:%SZ")
                stages = kind_values[early]
                problems.add(
                    "stage_before_created",
                    early,
                    lambda pos: [
                        f"{where}: stage '{s}' at {time_label} {e} is before the lead's created time {c}"
                        for s, e, c in zip(stages, entry_text, created_text, strict=True)
                    ],
                )
    rows = np.flatnonzero(applies)
    out.rows = rows
    out.columns = {k: v[rows] for k, v in columns.items()}
    return out


def _frame(columns: dict[str, Any], keep: np.ndarray) -> pd.DataFrame:
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, pd.Series):
            out[name] = values[keep].reset_index(drop=True)
        elif isinstance(values, np.ndarray) and values.dtype.kind == "M":
            out[name] = _utc(values[keep])
        else:
            out[name] = np.asarray(values)[keep]
    return pd.DataFrame(out)


def _utc(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values.astype(f"datetime64[{TIME_UNIT}]")).tz_localize("UTC"))


def _events_table(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [p for p in parts if len(p)]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns})
    out: dict[str, Any] = {}
    for column in columns:
        values = data[column] if column in data.columns else pd.Series([None] * len(data))
        if column in ("occurred_at", "entered_at"):
            out[column] = _utc(np.asarray(values, dtype=f"datetime64[{TIME_UNIT}]"))
        elif column == "value":
            out[column] = pd.to_numeric(values, errors="raise").astype("float64")
        else:
            out[column] = pd.Series(values, dtype=object).astype(STR_DTYPE)
    return pd.DataFrame(out)


def _source_report(
    source: Source, role: str, problems: RowProblems, used: np.ndarray, skips: dict[str, np.ndarray]
) -> SourceReport:
    n = len(source.frame)
    taken = used | problems.bad
    skipped = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in skips.items():
        mask = mask & ~taken & ~skipped
        if mask.any():
            counts[reason] = int(mask.sum())
            skipped |= mask
    leftover = ~(taken | skipped)
    if leftover.any():
        # Rows of an event source that no rule turned into a row and no rule skipped explicitly.
        counts["produced no entry"] = int(leftover.sum())
        skipped |= leftover
    return SourceReport(
        name=source.name,
        path=source.path,
        role=role,
        rows_read=n,
        rows_used=int(used.sum()),
        rows_skipped=int(skipped.sum()),
        rows_rejected=int(problems.bad.sum()),
        rejected=problems.reason_counts(),
        skipped=counts,
    )


def _rejects_frame(frame: pd.DataFrame, problems: RowProblems) -> pd.DataFrame:
    positions, reasons = problems.reasons()
    out = frame.iloc[positions].reset_index(drop=True)
    out = out.rename(columns={c: f"original_{c}" for c in ("source_row", "reason") if c in out.columns})
    out.insert(0, "source_row", pd.Series(positions + 1, dtype=np.int64))
    out["reason"] = pd.Series(reasons, dtype=STR_DTYPE)
    return out


def check_feature_names(contract: Contract, mapping_path: Path) -> None:
    from features.config import FeatureConfig

    try:
        if contract.mode == "single_snapshot":
            from features.single_snapshot import single_snapshot_spec

            single_snapshot_spec(contract, FeatureConfig())
        else:
            from features.build import feature_names

            feature_names(contract, FeatureConfig())
    except ValueError as exc:
        raise MappingError(f"{mapping_path}: {exc}") from exc


# ============================================================================================
# Writing the data directory
# ============================================================================================
