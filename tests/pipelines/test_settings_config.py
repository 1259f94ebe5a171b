from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.settings import Settings


def test_settings_default_to_sqlite_in_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LEADSCORE_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert settings.artifact_root == tmp_path / "home" / "mlartifacts"
    assert settings.model_name == "leadscore"


def test_settings_honour_mlflow_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADSCORE_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg://u@h/db")
    assert Settings().tracking_uri == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert Settings().tracking_uri == "sqlite:///x.db"


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_config(None).features.horizon_days == 90
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nfeatures:\n  horizon_days: 60\n  windows_days: [30, 7]\n")
    cfg = load_config(path)
    assert cfg.features.horizon_days == 60
    assert cfg.features.windows_days == [7, 30]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("features:\n  horizon_days: -1\n", "features.horizon_days"),
        ("features:\n  horizon: 30\n", "features.horizon"),
        ("version: 2\n", "version"),
        ("- a\n- b\n", "mapping"),
        ("features: [\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("flag", "expected"), [([], "sqlite:///from-env.db"), (["--store", "sqlite:///flag.db"], "sqlite:///flag.db")]
)
def test_serve_uses_leadscore_store_url_unless_store_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: list[str], expected: str
) -> None:
    """`leadscore serve` reads the same score store as the batch commands (it used to ignore LEADSCORE_STORE_URL)."""
    import uvicorn
    from typer.testing import CliRunner

    import serving.app
    from pipelines.cli import app

    seen = {}

    def fake_create_app(config: serving.app.ServiceConfig) -> object:
        seen["store_url"] = config.store_url
        return object()

    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEADSCORE_STORE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("LEADSCORE_API_KEYS", "crm:" + "k" * 32)
    monkeypatch.setattr(serving.app, "create_app", fake_create_app)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    result = CliRunner().invoke(app, ["serve", *flag])
    assert result.exit_code == 0, result.output
    assert seen["store_url"] == expected


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql+psycopg://ml:s3cret@db:5432/mlflow", "postgresql+psycopg://ml:***@db:5432/mlflow"),
        ("postgresql://ml@db/mlflow", "postgresql://ml@db/mlflow"),
        ("sqlite:////home/x/.leadscore/mlflow.db", "sqlite:////home/x/.leadscore/mlflow.db"),
        ("http://user:p%40ss@mlflow:5000", "http://user:***@mlflow:5000"),
    ],
)
def test_printed_tracking_uris_hide_the_password(uri: str, shown: str) -> None:
    from pipelines.cli.output import without_password

    assert without_password(uri) == shown
