"""The ``leadscore`` command line.

Heavy imports (pandas, Prefect, MLflow) happen inside the commands so that ``--help`` is instant
and importing this package has no side effects. The commands live by what they work on:
:mod:`~pipelines.cli.data` (generate, validate, import, features, effects), :mod:`~pipelines.cli.operate`
(train, score, report, run, monitor, serve, deploy) and :mod:`~pipelines.cli.registry` (``models``).
"""

from __future__ import annotations

from pipelines.cli import data, operate, registry
from pipelines.cli.common import app

__all__ = ["app", "data", "main", "operate", "registry"]


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
