"""What an import did: per-source row accounting, per-rule counts and the import summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.quarantine import ValidationReport

if TYPE_CHECKING:
    from rich.table import Table


# ============================================================================================
# Reports
# ============================================================================================
@dataclass(frozen=True)
class SourceReport:
    """Row accounting for one export file: ``rows_read = rows_used + rows_skipped + rows_rejected``."""

    name: str
    path: Path
    role: str  # "leads", "join", "events"
    rows_read: int
    rows_used: int
    rows_skipped: int
    rows_rejected: int
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rows_read != self.rows_used + self.rows_skipped + self.rows_rejected:
            raise RuntimeError(
                f"{self.path}: row accounting does not balance: read {self.rows_read} != used {self.rows_used} + "
                f"skipped {self.rows_skipped} + rejected {self.rows_rejected} (this is a bug in leadscore)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.path),
            "role": self.role,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_skipped": self.rows_skipped,
            "rows_rejected": self.rows_rejected,
            "rejected": dict(self.rejected),
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class RuleReport:
    """What one rule (``activities.N``, ``stages.events.N``, ``label``) produced."""

    rule: str
    table: str
    source: str
    rows_written: int
    not_applicable: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "table": self.table,
            "source": self.source,
            "rows_written": self.rows_written,
            "not_applicable": dict(self.not_applicable),
        }


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_export` read, rejected, wrote and what validation then accepted."""

    mapping: Path
    source_dir: Path
    out_dir: Path
    name: str
    mode: str
    sources: dict[str, SourceReport]
    rules: list[RuleReport]
    tables_written: dict[str, int]
    validation: ValidationReport
    quarantine_files: dict[str, Path]
    sample_rows: int | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        """Rows rejected by the mapping (all sources)."""
        return sum(s.rows_rejected for s in self.sources.values())

    @property
    def rows_quarantined(self) -> int:
        """Rows of the written tables quarantined by validation."""
        return self.validation.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": str(self.mapping),
            "source_dir": str(self.source_dir),
            "out_dir": str(self.out_dir),
            "name": self.name,
            "mode": self.mode,
            "sample_rows": self.sample_rows,
            "sources": {name: report.to_dict() for name, report in self.sources.items()},
            "rules": [rule.to_dict() for rule in self.rules],
            "tables_written": dict(self.tables_written),
            "validation": self.validation.to_dict(),
            "quarantine_files": {name: str(path) for name, path in self.quarantine_files.items()},
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def summary(self) -> str:
        """One line per source and table, for logs."""
        parts = [
            f"{s.name}: read {s.rows_read}, used {s.rows_used}, skipped {s.rows_skipped}, rejected {s.rows_rejected}"
            for s in self.sources.values()
        ]
        parts += [
            f"{t.table}: written {t.rows_read}, accepted {t.rows_accepted}, quarantined {t.rows_quarantined}"
            for t in self.validation.tables.values()
        ]
        return "; ".join(parts)

    def render(self) -> Table:
        """A rich table of the per-source accounting for the CLI (print ``validation.render()`` too)."""
        from rich.table import Table

        table = Table(title=f"Import: {self.mapping.name} -> {self.out_dir}")
        table.add_column("source (file)")
        table.add_column("read", justify="right")
        table.add_column("used", justify="right")
        table.add_column("skipped", justify="right")
        table.add_column("rejected", justify="right")
        table.add_column("reasons (rows)", overflow="fold")
        for s in self.sources.values():
            reasons = [f"{k}: {v:,}" for k, v in sorted(s.rejected.items(), key=lambda kv: -kv[1])]
            reasons += [f"skipped, {k}: {v:,}" for k, v in sorted(s.skipped.items(), key=lambda kv: -kv[1])]
            table.add_row(
                f"{s.name} ({s.path.name})",
                f"{s.rows_read:,}",
                f"{s.rows_used:,}",
                f"{s.rows_skipped:,}",
                f"[red]{s.rows_rejected:,}[/red]" if s.rows_rejected else "0",
                "\n".join(reasons) or "-",
            )
        return table
