"""Reading and writing tables: CSV or Parquet in, atomic writes out."""

from __future__ import annotations

import codecs
import csv
import glob
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


def read_raw_table(
    path: str | Path, *, encoding: str = "utf-8", delimiter: str = ",", expected: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a table without interpreting values.

    CSV columns are read as strings so that validation can report unparseable values
    with their row instead of a reader guessing types; Parquet keeps its own types.
    ``encoding`` and ``delimiter`` (the data contract's) apply to CSV only; ``expected`` (the table's
    required columns) is only used in messages. A CSV file that cannot be read raises
    :class:`ContractError` naming the file, the line (and column, where known) and the fix.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        header = read_csv_header(path, encoding=encoding, delimiter=delimiter, expected=expected)
        return _read_csv(path, header, encoding, delimiter)
    raise ContractError(f"{path}: unsupported table format (expected .parquet or .csv)")


# --------------------------------------------------------------------------------------------
# CSV: header, body, and what to say when they cannot be read
# --------------------------------------------------------------------------------------------
#: A CSV line (row) longer than this is refused: no lead, activity or stage entry is that large, so such
#: a line is an embedded file or a broken export. Lines over the reader's 1 MiB block are read with a block
#: sized to the longest line (measured: a 50 MB line reads in about 0.5 s).
MAX_CSV_LINE_BYTES = 256 * 2**20
_DEFAULT_BLOCK_BYTES = 2**20
_OTHER_DELIMITERS = (";", ",", "\t", "|")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def read_csv_header(
    path: Path, *, encoding: str = "utf-8", delimiter: str = ",", expected: Sequence[str] = ()
) -> list[str]:
    """The column names of a CSV file, after checks that give the reader's failures a clear message.

    Refused: an empty file, a header that is not text in ``encoding``, a header that reads as one column
    containing another delimiter (wrong delimiter), duplicate names (the reader would rename them ``x.1``).
    """
    if path.stat().st_size == 0:
        columns = f" ({', '.join(expected)})" if expected else ""
        raise ContractError(
            f"{path}: the file is empty (0 bytes); a table needs at least its header line{columns}. A table "
            "without rows is written as just the header line."
        )
    text_encoding = "utf-8-sig" if _is_utf8(encoding) else encoding
    try:
        if _ascii_compatible(encoding):  # the first line only: a bad byte further down is found by the reader
            with path.open("rb") as handle:
                first = handle.readline().decode(text_encoding)
        else:  # UTF-16, UTF-32: lines are not split at the byte 0x0a
            with path.open(encoding=text_encoding, newline="") as handle:
                first = handle.readline()
        header = next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter), [])
    except UnicodeError:  # UnicodeDecodeError, or a UTF-16 file without its byte-order mark
        raise _encoding_error(path, encoding, delimiter, []) from None
    except csv.Error as exc:
        raise ContractError(f"{path}: line 1: the header cannot be read as CSV: {exc}") from exc
    if not any(name.strip() for name in header):
        raise ContractError(
            f"{path}: line 1: the header line is blank; the first line must name the columns"
            + (f" ({', '.join(expected)})" if expected else "")
        )
    if len(header) == 1:
        found = [d for d in _OTHER_DELIMITERS if d != delimiter and d in header[0]]
        if found:
            shown = header[0] if len(header[0]) <= 80 else header[0][:77] + "..."
            raise ContractError(
                f"{path}: line 1: wrong delimiter (found {found[0]!r}): the header reads as the single column "
                f"{shown!r} with the delimiter {delimiter!r}. Write the file {delimiter!r}-delimited, or declare "
                f"the file's delimiter in contract.yaml: delimiter: {found[0]!r}"
            )
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        raise ContractError(
            f"{path}: duplicate column name(s) in the header: {', '.join(repr(c) for c in duplicated)} "
            "(line 1); rename or remove all but one of each"
        )
    return header


def _read_csv(path: Path, header: list[str], encoding: str, delimiter: str) -> pd.DataFrame:
    import pyarrow as pa

    # pandas' default ``str`` dtype (features.parsing.STR_DTYPE), Arrow-backed, missing values NaN.
    text = pd.StringDtype(storage="pyarrow", na_value=np.nan)
    try:
        table = _arrow_csv(path, header, encoding, delimiter, _DEFAULT_BLOCK_BYTES)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):  # a header line without a line break: a table without rows
            return pd.DataFrame({name: pd.Series([], dtype=text) for name in header})
        if "straddl" not in str(exc):
            raise _csv_error(path, header, encoding, delimiter, exc) from exc
        # A line longer than the reader's block: read again with a block that holds the longest line.
        line, length = _longest_line(path)
        if length > MAX_CSV_LINE_BYTES:
            raise ContractError(
                f"{path}: line {line} is {length:,} bytes long, over the limit of {MAX_CSV_LINE_BYTES:,} bytes "
                f"({MAX_CSV_LINE_BYTES // 2**20} MiB) for one row. No lead, activity or stage entry is that large: "
                "check that line in the export (an embedded file, or a value with an unbalanced quote that swallows "
                "the following lines) and remove or shorten it."
            ) from None
        block = max(_DEFAULT_BLOCK_BYTES, min(2 * length + 1, 2 * MAX_CSV_LINE_BYTES))
        try:
            table = _arrow_csv(path, header, encoding, delimiter, block)
        except pa.ArrowInvalid as again:
            raise _csv_error(path, header, encoding, delimiter, again, block) from again
    except UnicodeError as exc:
        raise _csv_error(path, header, encoding, delimiter, exc) from exc
    return table.to_pandas(types_mapper={pa.string(): text, pa.large_string(): text}.get)


def _arrow_csv(
    path: Path,
    header: list[str],
    encoding: str,
    delimiter: str,
    block_size: int,
    on_invalid_row: Callable[[Any], str] | None = None,
) -> Any:
    """Every column as (nullable) text, read by pyarrow.

    With ``on_invalid_row`` (rows with the wrong number of fields), the file is read on this thread only: the
    handler is Python code, which is not called from the reader's worker threads.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(
            encoding="utf8" if _is_utf8(encoding) else encoding,
            block_size=block_size,
            use_threads=on_invalid_row is None,
        ),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _csv_error(
    path: Path, header: list[str], encoding: str, delimiter: str, exc: Exception, block: int = _DEFAULT_BLOCK_BYTES
) -> ContractError:
    if isinstance(exc, UnicodeError) or "UTF8" in str(exc) or "decode" in str(exc):
        return _encoding_error(path, encoding, delimiter, header)
    if "Expected" in str(exc) and "columns" in str(exc):
        invalid: list[Any] = []

        def collect(row: Any) -> str:
            invalid.append(row)
            return "skip"

        try:
            _arrow_csv(path, header, encoding, delimiter, block, on_invalid_row=collect)
        except Exception:  # the first error is the one reported
            invalid = invalid or []
        if invalid:
            return _row_shape_error(path, header, delimiter, invalid)
    return ContractError(f"{path}: cannot be read as CSV (delimiter {delimiter!r}, encoding {encoding}): {exc}")


def _row_shape_error(path: Path, header: list[str], delimiter: str, invalid: list[Any]) -> ContractError:
    """A row with too few or too many fields: which line, what it holds, and the likely cause."""
    first = invalid[0]
    number = first.number
    text = first.text if len(first.text) <= 120 else first.text[:117] + "..."
    where = f"line {number}" if number is not None else "a line"
    ends_without_newline = _last_byte(path) not in (b"\n", b"\r")
    if first.actual_columns < first.expected_columns and ends_without_newline and _is_last_line(path, number):
        fix = (
            "it is the last line and the file does not end with a line break: the file looks truncated (cut off "
            "while it was written or copied). Export or copy it again."
        )
    elif first.actual_columns > first.expected_columns:
        fix = f'quote values that contain the delimiter {delimiter!r} ("like, this").'
    else:
        fix = "check the export: values may be missing, or a quoted value with a line break in it is not closed."
    more = f" ({len(invalid)} such rows in the file)" if len(invalid) > 1 else ""
    return ContractError(
        f"{path}: {where} has {first.actual_columns} field(s), expected {first.expected_columns} "
        f"({', '.join(header)}): {text!r}{more}; {fix}"
    )


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _is_last_line(path: Path, number: int | None) -> bool:
    if number is None:
        return False
    with path.open("rb") as handle:
        count = sum(1 for _ in handle)
    return count == number


def _longest_line(path: Path) -> tuple[int, int]:
    """The (1-based) number and length in bytes of the longest line (first of equals)."""
    best, best_length = 0, -1
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if len(line) > best_length:
                best, best_length = number, len(line)
    return best, best_length


def _ascii_compatible(encoding: str) -> bool:
    return '\n,;\t|"'.encode(encoding, errors="replace") == b'\n,;\t|"'


def _encoding_error(path: Path, encoding: str, delimiter: str, header: list[str]) -> ContractError:
    """Where the first byte that is not ``encoding`` text is (line, column), and which encoding fits."""
    with path.open("rb") as handle:
        start = handle.read(4)
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if start.startswith(bom) and codecs.lookup(encoding).name != codecs.lookup(name).name:
            return ContractError(
                f"{path}: line 1: the file starts with a {name.upper()} byte-order mark, but the data contract's "
                f"encoding is {encoding} (default utf-8). Declare its encoding in contract.yaml: encoding: {name}, "
                "or save the file as UTF-8."
            )
    if not _ascii_compatible(encoding):
        return ContractError(
            f"{path}: cannot be decoded as {encoding} (the data contract's encoding); check the file's encoding "
            "and declare it in contract.yaml (encoding: ...), or save the file as UTF-8"
        )
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and _is_utf8(encoding):
                line = line.removeprefix(codecs.BOM_UTF8)
            try:
                line.decode(encoding)
            except UnicodeDecodeError as exc:
                return _describe_bad_byte(path, encoding, delimiter, header, number, line, exc.start)
    return ContractError(
        f"{path}: cannot be decoded as {encoding} (the data contract's encoding); declare the file's encoding in "
        "contract.yaml, e.g. encoding: latin-1, or save the file as UTF-8"
    )


def _describe_bad_byte(
    path: Path, encoding: str, delimiter: str, header: list[str], number: int, line: bytes, start: int
) -> ContractError:
    byte = line[start]
    prefix = line[:start].decode(encoding, errors="replace")
    fields = next(csv.reader([prefix], delimiter=delimiter), [""])
    column = ""
    if header and 0 < len(fields) <= len(header):
        column = f", column '{header[len(fields) - 1]}'"
    guesses = ["utf-8"] if not _is_utf8(encoding) else []
    guesses += ["cp1252"] if any(0x80 <= b <= 0x9F for b in line) else ["latin-1"]
    fits = next((g for g in guesses if _decodes(line, g)), "latin-1")
    shown = line.decode(fits, errors="replace").strip()
    shown = shown if len(shown) <= 100 else shown[:97] + "..."
    return ContractError(
        f"{path}: line {number}{column}: byte 0x{byte:02x} is not valid {encoding} text (the data contract's "
        f"encoding; default utf-8). The file looks {fits}-encoded (line {number} in {fits}: {shown!r}). Declare "
        f"its encoding in contract.yaml: encoding: {fits}, or save the file as UTF-8."
    )


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


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
                table = _iso_timestamps(pa.Table.from_pandas(df, preserve_index=False))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                # mixed-type object columns: fall back to pandas
                df.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f")
                return
            pacsv.write_csv(table, tmp)

    else:
        raise ValueError(f"{path}: unsupported output format (use .parquet or .csv)")
    _atomic_write(path, write)
    return path


def _iso_timestamps(table: Any) -> Any:
    """Timestamp columns as ISO 8601 text (``2025-06-30T02:00:00.000000Z`` when in UTC), which CRMs and
    strict parsers read; pyarrow's CSV writer puts a space between date and time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            column = table.column(i)
            if field.type.tz is not None:
                column = pc.strftime(pc.cast(column, pa.timestamp(field.type.unit, "UTC")), "%Y-%m-%dT%H:%M:%SZ")
            else:
                column = pc.strftime(column, "%Y-%m-%dT%H:%M:%S")
            table = table.set_column(i, field.name, column)
    return table


def read_table_metadata(path: str | Path) -> dict[str, str]:
    """Custom key/value metadata stored by :func:`write_table` in a Parquet file."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"pandas")}
