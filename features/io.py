"""Reading and writing tables: CSV or Parquet in, atomic writes out."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from features.errors import ContractError

TABLE_SUFFIXES = (".parquet", ".csv")


def find_table(data_dir: str | Path, name: str) -> Path:
    """Locate ``name.parquet`` or ``name.csv`` in ``data_dir`` (exactly one must exist)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ContractError(f"{data_dir}: data directory does not exist")
    found = [data_dir / f"{name}{suffix}" for suffix in TABLE_SUFFIXES if (data_dir / f"{name}{suffix}").exists()]
    if not found:
        raise ContractError(f"{data_dir}: missing table '{name}' (expected {name}.parquet or {name}.csv)")
    if len(found) > 1:
        raise ContractError(f"{data_dir}: table '{name}' exists as both {found[0].name} and {found[1].name}; keep one")
    return found[0]


def read_raw_table(path: str | Path) -> pd.DataFrame:
    """Read a table without interpreting values.

    CSV columns are read as strings so that validation can report unparseable values
    with their row instead of a reader guessing types; Parquet keeps its own types.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], engine="pyarrow")
        except Exception as exc:  # pyarrow raises several types for malformed CSV
            raise ContractError(f"{path}: cannot be read as CSV: {exc}") from exc
    raise ContractError(f"{path}: unsupported table format (expected .parquet or .csv)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by a writer that was killed (SIGKILL, OOM) mid-write.

    Temporaries are named ``.NAME.PID.XXXX.tmp``; one whose process is gone can never be committed.
    SIGTERM already removes its own temporaries (the writers clean up on ``SystemExit``); this sweep,
    run before every new write of ``path``, covers the kills nothing can intercept.
    """
    removed: list[Path] = []
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid_text = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def make_temporary(path: Path) -> Path:
    """An empty temporary file beside ``path`` named after this process, stale ones swept first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    tmp = make_temporary(path)
    try:
        writer(tmp)
        # mkstemp creates 0600 files; give the result the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so readers see the old file or the new one, never a partial one."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _atomic_write(Path(path), write)


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``df`` atomically as Parquet or CSV, chosen by the file suffix.

    ``metadata`` is stored in the Parquet schema metadata (ignored for CSV).
    """
    path = Path(path)
    if path.suffix == ".parquet":

        def write(tmp: Path) -> None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if metadata:
                merged = dict(table.schema.metadata or {})
                merged.update({k.encode(): v.encode() for k, v in metadata.items()})
                table = table.replace_schema_metadata(merged)
            pq.write_table(table, tmp)

    elif path.suffix == ".csv":

        def write(tmp: Path) -> None:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            # pyarrow's writer is ~20x faster than DataFrame.to_csv on millions of rows.
            try:
                table = pa.Table.from_pandas(df, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                df.to_csv(tmp, index=False)  # mixed-type object columns: fall back to pandas
                return
            pacsv.write_csv(table, tmp)

    else:
        raise ValueError(f"{path}: unsupported output format (use .parquet or .csv)")
    _atomic_write(path, write)
    return path


def read_table_metadata(path: str | Path) -> dict[str, str]:
    """Custom key/value metadata stored by :func:`write_table` in a Parquet file."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"pandas")}
