from __future__ import annotations

from pathlib import Path

import pytest

from features.contract import Contract, ContractError


def _contract(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "attributes": [{"name": "industry", "kind": "categorical"}, {"name": "revenue", "kind": "numeric"}],
        "activity_types": ["web_visit", "demo_request"],
        "topics": ["analytics"],
    }
    base.update(overrides)
    return base


def test_roundtrip(tmp_path: Path) -> None:
    contract = Contract.model_validate(_contract())
    path = contract.dump(tmp_path)
    assert path == tmp_path / "contract.yaml"
    loaded = Contract.load(tmp_path)
    assert loaded == contract
    assert loaded.categorical_attributes == ["industry"]
    assert loaded.numeric_attributes == ["revenue"]
    assert loaded.stages.terminal == ["won", "lost", "disqualified"]
    assert "opportunity" in loaded.stages.open_stages


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"activity_types": []}, "activity_types"),
        ({"activity_types": ["web visit"]}, "web visit"),
        ({"attributes": [{"name": "lead_id", "kind": "categorical"}]}, "required leads column"),
        ({"attributes": [{"name": "a", "kind": "text"}]}, "attributes.0.kind"),
        ({"stages": {"order": ["new", "won"], "converted": "purchased"}}, "purchased"),
        ({"stages": {"order": ["new", "won"], "closed_negative": ["lost"]}}, "lost"),
        ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
        ({"ignore_columns": {"deals": ["x"]}}, "deals"),
        ({"version": 3}, "version"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_contract_names_the_field(tmp_path: Path, overrides: dict[str, object], fragment: str) -> None:
    import yaml

    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(_contract(**overrides)))
    with pytest.raises(ContractError) as info:
        Contract.load(tmp_path)
    assert "contract.yaml" in str(info.value)
    assert fragment in str(info.value)


def test_missing_contract_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no data contract found"):
        Contract.load(tmp_path)


def test_expected_columns() -> None:
    contract = Contract.model_validate(_contract(ignore_columns={"leads": ["notes"]}))
    required, allowed = contract.expected_columns("leads")
    assert required == {"lead_id", "created_at", "industry", "revenue"}
    assert allowed == required | {"notes"}
    required, allowed = contract.expected_columns("activities")
    assert required == {"lead_id", "occurred_at", "activity_type"}
    assert {"channel", "campaign_id", "topic", "value"} <= allowed
