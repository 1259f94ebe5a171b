"""Arrow tables from simulated chunks, and atomic chunked writers (Parquet or CSV)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.io import make_temporary
from features.simulator import catalog as cat
from features.simulator.chunk_data import NO_TIME, STAGE_ORDER, ChunkData
from features.simulator.world import CAMPAIGN_KINDS, World

TS = pa.timestamp("us", tz="UTC")
_US = 1_000_000

LEADS_SCHEMA = pa.schema(
    [
        ("lead_id", pa.string()),
        ("created_at", TS),
        ("source", pa.string()),
        ("industry", pa.string()),
        ("company_size", pa.string()),
        ("country", pa.string()),
        ("job_seniority", pa.string()),
        ("annual_revenue_musd", pa.float64()),
    ]
)
ACTIVITIES_SCHEMA = pa.schema(
    [
        ("lead_id", pa.string()),
        ("occurred_at", TS),
        ("activity_type", pa.string()),
        ("channel", pa.string()),
        ("campaign_id", pa.string()),
        ("topic", pa.string()),
        ("value", pa.float64()),
    ]
)
STAGES_SCHEMA = pa.schema([("lead_id", pa.string()), ("stage", pa.string()), ("entered_at", TS)])
TRUTH_LEADS_SCHEMA = pa.schema(
    [
        ("lead_id", pa.string()),
        ("true_topic", pa.string()),
        ("fit", pa.float32()),
        ("loudness", pa.float32()),
        ("initial_phase", pa.string()),
        ("in_market", pa.bool_()),
        ("journey_start", TS),
        ("journey_outcome", pa.string()),
        ("converted_at", TS),
        ("lost_at", TS),
        ("no_decision_at", TS),
        ("disqualified_at", TS),
    ]
)
PROPENSITY_SCHEMA = pa.schema(
    [("lead_id", pa.string()), ("week_start", TS), ("propensity", pa.float32()), ("phase", pa.string())]
)
CAMPAIGNS_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("activity_type", pa.string()),
        ("channel", pa.string()),
        ("topic", pa.string()),
        ("region", pa.string()),
        ("target_industries", pa.string()),
        ("start", TS),
        ("end", TS),
        ("reach", pa.float64()),
        ("true_effect", pa.float64()),
        ("n_touches", pa.int64()),
        ("n_leads_touched", pa.int64()),
    ]
)


def _vocab(values: tuple[str, ...]) -> pa.Array:
    return pa.array(list(values), type=pa.string())


_SOURCES = _vocab(cat.SOURCES)
_INDUSTRIES = _vocab(cat.INDUSTRIES)
_SIZES = _vocab(cat.COMPANY_SIZES)
_COUNTRIES = _vocab(cat.COUNTRIES)
_SENIORITIES = _vocab(cat.SENIORITIES)
_TYPES = _vocab(cat.ACTIVITY_TYPES)
_CHANNELS = _vocab(cat.CHANNELS)
_TOPICS = _vocab(cat.TOPICS)
_PHASES = _vocab(cat.PHASES)
_STAGES = _vocab(STAGE_ORDER)


def _take(vocab: pa.Array, codes: np.ndarray) -> pa.Array:
    """Strings for integer codes; negative codes become nulls."""
    codes = np.asarray(codes, dtype=np.int64)
    missing = codes < 0
    return vocab.take(pa.array(np.where(missing, 0, codes), mask=missing if missing.any() else None))


def _ts(seconds: np.ndarray) -> pa.Array:
    """UTC timestamps from epoch seconds; ``NO_TIME`` becomes null."""
    seconds = np.asarray(seconds, dtype=np.int64)
    missing = seconds == NO_TIME
    micros = np.where(missing, 0, seconds) * _US
    return pa.array(micros, type=TS, mask=missing if missing.any() else None)


def _floats(values: np.ndarray, dtype: pa.DataType | None = None) -> pa.Array:
    return pa.array(values, type=dtype or pa.float64(), from_pandas=True)  # NaN -> null


def lead_ids(world: World, first: int, n: int) -> pa.Array:
    width = max(7, len(str(world.n_leads)))
    return pa.array([f"L{i:0{width}d}" for i in range(first + 1, first + n + 1)], type=pa.string())


def chunk_tables(world: World, data: ChunkData) -> dict[str, pa.Table]:
    """The chunk's rows of every output table."""
    ids = lead_ids(world, data.first_lead, data.n)
    leads = pa.Table.from_arrays(
        [
            ids,
            _ts(data.created_s),
            _take(_SOURCES, data.source),
            _take(_INDUSTRIES, data.industry),
            _take(_SIZES, data.company_size),
            _take(_COUNTRIES, data.country),
            _take(_SENIORITIES, data.seniority),
            _floats(data.revenue_observed),
        ],
        schema=LEADS_SCHEMA,
    )
    campaign_ids = _vocab(world.campaigns.ids) if len(world.campaigns) else pa.array([""], type=pa.string())
    activities = pa.Table.from_arrays(
        [
            ids.take(pa.array(data.act_lead)),
            _ts(data.act_time_s),
            _take(_TYPES, data.act_type),
            _take(_CHANNELS, data.act_channel),
            _take(campaign_ids, data.act_campaign),
            _take(_TOPICS, data.act_topic),
            _floats(data.act_value),
        ],
        schema=ACTIVITIES_SCHEMA,
    )
    stages = pa.Table.from_arrays(
        [ids.take(pa.array(data.stage_lead)), _take(_STAGES, data.stage_code), _ts(data.stage_time_s)],
        schema=STAGES_SCHEMA,
    )
    outcome = np.where(data.journey_outcome == cat.RESEARCH, -2, data.journey_outcome).astype(np.int64)
    outcome_vocab = pa.array([*cat.PHASES, "ongoing"], type=pa.string())
    truth = pa.Table.from_arrays(
        [
            ids,
            _take(_TOPICS, data.true_topic),
            _floats(data.fit, pa.float32()),
            _floats(data.loudness, pa.float32()),
            _take(_PHASES, data.initial_phase),
            pa.array(data.journey_start_s < world.end_s),
            _ts(np.where(data.journey_start_s < world.end_s, data.journey_start_s, NO_TIME)),
            _take(outcome_vocab, np.where(outcome == -2, len(cat.PHASES), outcome)),
            _ts(data.converted_s),
            _ts(data.lost_s),
            _ts(data.no_decision_s),
            _ts(data.disqualified_s),
        ],
        schema=TRUTH_LEADS_SCHEMA,
    )
    propensity = pa.Table.from_arrays(
        [
            ids.take(pa.array(data.prop_lead)),
            _ts(world.week_start_s[data.prop_week]),
            pa.array(data.prop_value, type=pa.float32()),
            _take(_PHASES, data.prop_phase),
        ],
        schema=PROPENSITY_SCHEMA,
    )
    return {
        "leads": leads,
        "activities": activities,
        "stage_history": stages,
        "truth_leads": truth,
        "propensity": propensity,
    }


def campaigns_table(world: World, n_touches: np.ndarray, n_leads_touched: np.ndarray) -> pa.Table:
    c = world.campaigns
    industries = [
        "all" if bool(row.all()) else ",".join(cat.INDUSTRIES[i] for i in np.flatnonzero(row))
        for row in c.target_industry
    ]
    return pa.Table.from_arrays(
        [
            _vocab(c.ids),
            _vocab(c.names),
            _take(_vocab(CAMPAIGN_KINDS), c.kind),
            _take(_TYPES, c.activity_type),
            _take(_CHANNELS, c.channel),
            _take(_TOPICS, c.topic),
            _vocab(c.region),
            pa.array(industries, type=pa.string()),
            _ts(c.start_s),
            _ts(c.end_s),
            pa.array(c.reach, type=pa.float64()),
            pa.array(c.effect, type=pa.float64()),
            pa.array(n_touches, type=pa.int64()),
            pa.array(n_leads_touched, type=pa.int64()),
        ],
        schema=CAMPAIGNS_SCHEMA,
    )


# -- writers ------------------------------------------------------------------------------------
def _csv_ready(table: pa.Table) -> pa.Table:
    """Timestamps as ISO-8601 UTC strings (``2024-01-31T09:15:02Z``); everything else as is."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = pc.strftime(column.cast(pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


class AtomicTableWriter:
    """Writes a table chunk by chunk into a temporary file, then renames it into place.

    Readers see the previous file (or none) until :meth:`commit`; :meth:`abort` removes the
    temporary file. Parquet uses one row group per chunk.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: Literal["parquet", "csv"]) -> None:
        self.path = path
        self.fmt = fmt
        self.tmp = make_temporary(path)
        self.rows = 0
        self._open = True
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if fmt == "parquet":
            self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", compression_level=1)
        else:
            self._writer = pacsv.CSVWriter(self.tmp, _csv_ready(schema.empty_table()).schema)

    def write(self, table: pa.Table) -> None:
        if self.fmt == "csv":
            table = _csv_ready(table)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> Path:
        self._close()
        # mkstemp creates 0600 files; give the result the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the temporary file (a no-op after :meth:`commit`)."""
        try:
            self._close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()
