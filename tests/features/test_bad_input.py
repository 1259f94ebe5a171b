"""Bad input (issue 15): fifteen kinds of malformed data directory, each with its outcome.

Every kind either stops with a :class:`ContractError` that names the file, the line (and column where it
applies) and the fix, or is read with every row accounted for (rows read = accepted + quarantined) and the
reason of each rejected row in the quarantine. The data set is tiny and written as CSV by hand; the 50 MB
line is the only large file (measured: about 1 s to write and read, so not marked slow).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import features.io
from features.contract import ContractError
from features.validation import ValidationResult, load_history, write_quarantine
from tests.features.test_validation import make_contract

NOW = pd.Timestamp("2025-01-01T00:00Z")

LEADS = """lead_id,created_at,industry,employees
L1,2024-01-01T00:00:00Z,retail,10
L2,2024-01-02T00:00:00Z,software,250
L3,2024-01-03T00:00:00Z,software,
L4,2024-01-04T00:00:00Z,retail,40
"""
ACTIVITIES = """lead_id,occurred_at,activity_type,channel,campaign_id,topic,value
L1,2024-02-01T00:00:00Z,email_open,email,c1,pricing,1
L1,2024-02-02T00:00:00Z,web_visit,organic,,product,3
L2,2024-02-03T00:00:00Z,web_visit,organic,,,2
L3,2024-02-04T00:00:00Z,form_submit,web,,pricing,
L4,2024-02-05T00:00:00Z,email_open,email,c1,,1
L4,2024-02-06T00:00:00Z,web_visit,organic,,product,5
"""
STAGES = """lead_id,stage,entered_at
L1,new,2024-01-01T00:00:00Z
L2,new,2024-01-02T00:00:00Z
L3,new,2024-01-03T00:00:00Z
L4,new,2024-01-04T00:00:00Z
L1,won,2024-03-01T00:00:00Z
"""
CLEAN = {"leads": (4, 4, 0), "activities": (6, 6, 0), "stage_history": (5, 5, 0)}


contract = make_contract  # the contract the validation tests use (industry, employees; three activity types)


def write_data(root: Path, **contract_overrides: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    contract(**contract_overrides).dump(root)
    for name, text in (("leads", LEADS), ("activities", ACTIVITIES), ("stage_history", STAGES)):
        (root / f"{name}.csv").write_text(text, encoding="utf-8")
    return root


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- the fifteen kinds: how each corrupts a clean data directory -----------------------------------------------
def truncated(d: Path) -> None:
    data = (d / "activities.csv").read_bytes()
    (d / "activities.csv").write_bytes(data[: data.rindex(b"web_visit") + 3])  # cut inside the last row


def wrong_delimiter(d: Path) -> None:
    path = d / "leads.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")


def bom(d: Path) -> None:
    (d / "leads.csv").write_bytes(b"\xef\xbb\xbf" + (d / "leads.csv").read_bytes())


def latin1(d: Path) -> None:
    text = LEADS.replace("L2,2024-01-02T00:00:00Z,software", "L2,2024-01-02T00:00:00Z,Maschinenbau Düsseldorf")
    (d / "leads.csv").write_bytes(text.encode("latin-1"))


def header_only(d: Path) -> None:
    (d / "activities.csv").write_text(ACTIVITIES.splitlines(keepends=True)[0], encoding="utf-8")


def empty(d: Path) -> None:
    (d / "activities.csv").write_bytes(b"")


def duplicated_header(d: Path) -> None:
    lines = STAGES.splitlines()
    text = "\n".join([lines[0] + ",stage", *(line + ",x" for line in lines[1:])]) + "\n"
    (d / "stage_history.csv").write_text(text, encoding="utf-8")


LONG_VALUE_BYTES = 50 * 2**20


def line_50mb(d: Path) -> None:
    lines = LEADS.splitlines()
    notes = ["", "x" * LONG_VALUE_BYTES, "", ""]
    text = "\n".join([lines[0] + ",notes", *(f"{line},{n}" for line, n in zip(lines[1:], notes, strict=True))])
    (d / "leads.csv").write_text(text + "\n", encoding="utf-8")
    contract(ignore_columns={"leads": ["notes"]}).dump(d)


def nan_inf(d: Path) -> None:
    replace_in(d / "leads.csv", "software,250", "software,NaN")
    replace_in(d / "leads.csv", "software,\n", "software,inf\n")
    replace_in(d / "leads.csv", "retail,40", "retail,-Infinity")
    replace_in(d / "activities.csv", "product,3", "product,inf")


def date_formats(d: Path) -> None:
    path = d / "leads.csv"
    replace_in(path, "2024-01-01T00:00:00Z", "2024-01-01 00:00:00")  # ISO 8601 with a space
    replace_in(path, "2024-01-02T00:00:00Z", "02.01.2024 00:00")  # day-first dotted
    replace_in(path, "2024-01-03T00:00:00Z", "01/03/2024")  # slashes: day or month? refused
    replace_in(path, "2024-01-04T00:00:00Z", "2024-01-04")


def ids_with_whitespace(d: Path) -> None:
    replace_in(d / "activities.csv", "L2,2024-02-03", " L2 ,2024-02-03")


def future_dates(d: Path) -> None:
    replace_in(d / "activities.csv", "2024-02-06T00:00:00Z", "2031-06-01T00:00:00Z")


def unknown_leads(d: Path) -> None:
    replace_in(d / "activities.csv", "L2,2024-02-03", "L99,2024-02-03")


def unknown_activity_type(d: Path) -> None:
    replace_in(d / "activities.csv", "L4,2024-02-05T00:00:00Z,email_open", "L4,2024-02-05T00:00:00Z,fax")


def duplicated_leads(d: Path) -> None:
    path = d / "leads.csv"
    path.write_text(LEADS + LEADS.splitlines()[1] + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Kind:
    corrupt: Callable[[Path], None]
    #: a whole-file problem: every fragment must be in the error message
    error: tuple[str, ...] = ()
    #: otherwise: (read, accepted, quarantined) per table (CLEAN where not given), the quarantine reasons
    #: (table, source_row, reason fragment) and fragments of the warnings
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    reasons: tuple[tuple[str, int, str], ...] = ()
    warnings: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "truncated": Kind(
        truncated,
        error=(
            "activities.csv: line 7 has 3 field(s), expected 7 (lead_id, occurred_at, activity_type, channel, "
            "campaign_id, topic, value)",
            "it is the last line and the file does not end with a line break: the file looks truncated",
            "Export or copy it again",
        ),
    ),
    "wrong_delimiter": Kind(
        wrong_delimiter,
        error=(
            "leads.csv: line 1: wrong delimiter (found ';')",
            "reads as the single column 'lead_id;created_at;industry;employees' with the delimiter ','",
            "declare the file's delimiter in contract.yaml: delimiter: ';'",
        ),
    ),
    "bom": Kind(bom),
    "latin1": Kind(
        latin1,
        error=(
            "leads.csv: line 3, column 'industry': byte 0xfc is not valid utf-8 text",
            "The file looks latin-1-encoded",
            "'L2,2024-01-02T00:00:00Z,Maschinenbau Düsseldorf,250'",
            "Declare its encoding in contract.yaml: encoding: latin-1, or save the file as UTF-8",
        ),
    ),
    "header_only": Kind(
        header_only,
        counts={"activities": (0, 0, 0)},
        warnings=("activities.csv: no activities: the file has a header but no rows; every lead looks unengaged",),
    ),
    "empty": Kind(
        empty,
        error=(
            "activities.csv: the file is empty (0 bytes); a table needs at least its header line "
            "(lead_id, occurred_at, activity_type)",
        ),
    ),
    "duplicated_header": Kind(
        duplicated_header,
        error=("stage_history.csv: duplicate column name(s) in the header: 'stage' (line 1); rename or remove",),
    ),
    "line_50mb": Kind(line_50mb),
    "nan_inf": Kind(
        nan_inf,
        counts={"leads": (4, 2, 2), "activities": (6, 2, 4), "stage_history": (5, 3, 2)},
        reasons=(
            ("leads", 3, "employees 'inf' is not a finite number"),
            ("leads", 4, "employees '-Infinity' is not a finite number"),
            ("activities", 2, "value 'inf' is not a finite number"),
            ("activities", 4, "lead_id 'L3' was quarantined in leads"),
            ("stage_history", 4, "lead_id 'L4' was quarantined in leads"),
        ),
    ),
    "date_formats": Kind(
        date_formats,
        counts={"leads": (4, 3, 1), "activities": (6, 5, 1), "stage_history": (5, 4, 1)},
        reasons=(
            ("leads", 3, "created_at '01/03/2024' is not a valid timestamp"),
            ("activities", 4, "lead_id 'L3' was quarantined in leads"),
            ("stage_history", 3, "lead_id 'L3' was quarantined in leads"),
        ),
    ),
    "ids_with_whitespace": Kind(
        ids_with_whitespace,
        counts={"activities": (6, 5, 1)},
        reasons=(("activities", 3, "lead_id ' L2 ' is not in leads ('L2' is: remove the spaces around the id"),),
    ),
    "future_dates": Kind(
        future_dates,
        counts={"activities": (6, 5, 1)},
        reasons=(("activities", 6, "occurred_at 2031-06-01T00:00Z is in the future (now is 2025-01-01T00:00Z)"),),
    ),
    "unknown_leads": Kind(
        unknown_leads,
        counts={"activities": (6, 5, 1)},
        reasons=(("activities", 3, "lead_id 'L99' is not in leads"),),
    ),
    "unknown_activity_type": Kind(
        unknown_activity_type,
        counts={"activities": (6, 5, 1)},
        reasons=(("activities", 5, "activity_type 'fax' is not one of [email_open, web_visit, form_submit]"),),
    ),
    "duplicated_leads": Kind(
        duplicated_leads,
        counts={"leads": (5, 4, 1)},
        reasons=(("leads", 5, "lead_id 'L1' is a duplicate of row 1"),),
    ),
}


def corrupted(tmp_path: Path, name: str) -> Path:
    data = write_data(tmp_path / name)
    KINDS[name].corrupt(data)
    return data


def flat(text: str) -> str:
    """Text without whitespace, to compare messages that a terminal may have wrapped."""
    return re.sub(r"\s+", "", text)


def test_there_are_fifteen_kinds() -> None:
    assert len(KINDS) == 15


def test_the_clean_data_set_is_clean(tmp_path: Path) -> None:
    result = load_history(write_data(tmp_path / "clean"), now=NOW)
    assert result.report.clean and not result.report.warnings
    assert {t: (r.rows_read, r.rows_accepted, r.rows_quarantined) for t, r in result.report.tables.items()} == CLEAN


@pytest.mark.parametrize("name", list(KINDS))
def test_bad_input(tmp_path: Path, name: str) -> None:
    kind = KINDS[name]
    data = corrupted(tmp_path, name)
    if kind.error:
        with pytest.raises(ContractError) as info:
            load_history(data, now=NOW)
        message = str(info.value)
        assert message.startswith(str(data)), message  # the full path of the file
        for fragment in kind.error:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return

    result = load_history(data, now=NOW)
    expected = {**CLEAN, **kind.counts}
    for table, report in result.report.tables.items():
        assert report.rows_read == report.rows_accepted + report.rows_quarantined
        assert (report.rows_read, report.rows_accepted, report.rows_quarantined) == expected[table], table
        assert len(result.quarantine[table]) == report.rows_quarantined
    _check_reasons(result, kind, tmp_path / "quarantine")
    assert len(result.report.warnings) == len(kind.warnings)
    for warning, fragment in zip(result.report.warnings, kind.warnings, strict=True):
        assert fragment in warning


def _check_reasons(result: ValidationResult, kind: Kind, out: Path) -> None:
    files = write_quarantine(result, out)
    for table, source_row, fragment in kind.reasons:
        frame = pd.read_csv(files[table], dtype=str, keep_default_na=False)
        rows = frame.loc[frame["source_row"] == str(source_row), "reason"].tolist()
        assert rows and fragment in rows[0], (table, source_row, fragment, frame[["source_row", "reason"]])
    assert {t for t, _, _ in kind.reasons} == {t for t in files if t != "report"}


def test_bom_is_read_transparently(tmp_path: Path) -> None:
    history = load_history(corrupted(tmp_path, "bom"), now=NOW).history
    assert list(history.leads.columns[:2]) == ["lead_id", "created_at"]
    assert history.leads["lead_id"].tolist() == ["L1", "L2", "L3", "L4"]


def test_nan_is_missing_and_three_date_forms_are_read(tmp_path: Path) -> None:
    leads = load_history(corrupted(tmp_path, "nan_inf"), now=NOW).history.leads
    assert leads.set_index("lead_id")["employees"].isna().to_dict() == {"L1": False, "L2": True}
    leads = load_history(corrupted(tmp_path, "date_formats"), now=NOW).history.leads
    created = leads.set_index("lead_id")["created_at"]
    assert created["L1"] == pd.Timestamp("2024-01-01T00:00Z")
    assert created["L2"] == pd.Timestamp("2024-01-02T00:00Z")
    assert created["L4"] == pd.Timestamp("2024-01-04T00:00Z")


def test_a_50mb_line_is_read_whole(tmp_path: Path) -> None:
    data = corrupted(tmp_path, "line_50mb")
    started = time.perf_counter()
    raw = features.io.read_raw_table(data / "leads.csv")
    seconds = time.perf_counter() - started
    assert len(raw) == 4 and raw["notes"].str.len().fillna(0).tolist() == [0, LONG_VALUE_BYTES, 0, 0]
    assert seconds < 20, f"reading a 50 MB line took {seconds:.1f} s"


def test_a_line_over_the_limit_is_refused_with_line_and_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_data(tmp_path / "long")
    lines = LEADS.splitlines()
    lines[2] = lines[2].replace("software", "s" * (3 * 2**20))
    (data / "leads.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(features.io, "MAX_CSV_LINE_BYTES", 2**21)
    with pytest.raises(ContractError) as info:
        load_history(data, now=NOW)
    message = str(info.value)
    length = len(lines[2]) + 1  # with its line break
    assert (
        f"leads.csv: line 3 is {length:,} bytes long, over the limit of 2,097,152 bytes (2 MiB) for one row" in message
    )
    assert "remove or shorten it" in message


@pytest.mark.parametrize(
    ("name", "fix"),
    [("latin1", {"encoding": "latin-1"}), ("wrong_delimiter", {"delimiter": ";"})],
)
def test_the_fix_the_message_names_works(tmp_path: Path, name: str, fix: dict[str, str]) -> None:
    data = corrupted(tmp_path, name)
    if name == "wrong_delimiter":  # the contract's delimiter is that of every table
        for table in ("activities", "stage_history"):
            path = data / f"{table}.csv"
            path.write_text(path.read_text(encoding="utf-8").replace(",", ";"), encoding="utf-8")
    contract(**fix).dump(data)
    result = load_history(data, now=NOW)
    assert result.report.clean
    industries = result.history.leads.set_index("lead_id")["industry"]
    assert industries["L2"] == ("Maschinenbau Düsseldorf" if name == "latin1" else "software")


def test_a_row_with_too_many_fields_says_to_quote(tmp_path: Path) -> None:
    data = write_data(tmp_path / "extra")
    replace_in(
        data / "activities.csv", "L2,2024-02-03T00:00:00Z,web_visit,organic", "L2,2024-02-03T00:00:00Z,web_visit,a,b"
    )
    with pytest.raises(ContractError, match=r"activities\.csv: line 4 has 8 field\(s\), expected 7 .*quote values"):
        load_history(data, now=NOW)


@pytest.mark.parametrize("name", ["latin1", "wrong_delimiter", "truncated", "empty"])
def test_validate_cli_prints_the_message(tmp_path: Path, name: str) -> None:
    from pipelines.cli import app

    data = corrupted(tmp_path, name)
    result = CliRunner().invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 2, result.output
    assert flat(KINDS[name].error[0]) in flat(result.output)


def test_validate_cli_prints_the_warning(tmp_path: Path) -> None:
    from pipelines.cli import app

    data = corrupted(tmp_path, "header_only")
    result = CliRunner().invoke(app, ["validate", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert flat("warning:") in flat(result.output)
    assert flat("no activities: the file has a header but no rows") in flat(result.output)
    assert '"warnings": [' in (data / "quarantine" / "report.json").read_text()


def test_utf16_is_named_and_read_when_declared(tmp_path: Path) -> None:
    data = write_data(tmp_path / "utf16")
    for table in ("leads", "activities", "stage_history"):
        path = data / f"{table}.csv"
        path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    with pytest.raises(
        ContractError,
        match=r"leads\.csv: line 1: the file starts with a UTF-16 byte-order mark.*"
        r"encoding: utf-16",
    ):
        load_history(data, now=NOW)
    contract(encoding="utf-16").dump(data)
    assert load_history(data, now=NOW).report.clean


def test_an_unknown_encoding_is_refused_with_the_contract(tmp_path: Path) -> None:
    data = write_data(tmp_path / "unknown")
    replace_in(data / "contract.yaml", "encoding: utf-8", "encoding: klingon-8")
    with pytest.raises(
        ContractError,
        match=r"contract\.yaml: invalid data contract:\n  - encoding: .*unknown text "
        r"encoding 'klingon-8'",
    ):
        load_history(data, now=NOW)


def test_a_header_without_a_line_break_is_a_table_without_rows(tmp_path: Path) -> None:
    data = write_data(tmp_path / "no-break")
    (data / "activities.csv").write_text(ACTIVITIES.splitlines()[0], encoding="utf-8")
    result = load_history(data, now=NOW)
    assert result.report.tables["activities"].rows_read == 0
    assert "no activities: the file has a header but no rows" in result.report.warnings[0]
