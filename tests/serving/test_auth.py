from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import Depends, FastAPI, Request

from serving import auth
from serving.auth import (
    ApiClient,
    ApiKeyAuth,
    ApiKeyring,
    AuthConfigError,
    InvalidCredentialsError,
    MissingCredentialsError,
    load_api_keys,
    parse_api_keys,
    parse_bearer,
    read_keys_file,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

CRM_KEY = "crm-key-0123456789abcdef"
BI_KEY = "bi_key_ABCDEFGHIJKLMNOP"
LOOSE_KEY = "loose/key+0123456789=="


def _keyring() -> ApiKeyring:
    return load_api_keys({auth.API_KEYS_ENV: f"hubspot:{CRM_KEY}, bi:{BI_KEY},\n{LOOSE_KEY}"})


# -- parsing ---------------------------------------------------------------------------------------
def test_named_and_unnamed_keys() -> None:
    ring = _keyring()
    assert len(ring) == 3
    assert ring.names[:2] == ["hubspot", "bi"]
    assert ring.names[2].startswith("key-")
    assert len(ring.names[2]) == len("key-") + 8
    # the fingerprint name is stable and does not reveal the key
    assert parse_api_keys([LOOSE_KEY], source="x")[0].name == ring.names[2]
    assert LOOSE_KEY not in repr(ring)
    assert all(CRM_KEY not in repr(c) for c in parse_api_keys([f"a:{CRM_KEY}"], source="x"))


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("short", "key must be 16-512 characters long (it has 5)"),
        ("name:short", "(it has 5)"),
        ("has space in the key 123", "key may only contain"),
        ("bad name!:" + "k" * 20, "client name must be"),
        (":" + "k" * 20, "client name must be"),
        ("a:b:" + "k" * 20, "key may only contain"),
    ],
)
def test_bad_entries_name_source_and_entry_but_not_the_key(entry: str, fragment: str) -> None:
    with pytest.raises(AuthConfigError) as info:
        parse_api_keys(["", "ok:" + "k" * 20, entry], source="$LEADSCORE_API_KEYS")
    message = str(info.value)
    assert message.startswith("$LEADSCORE_API_KEYS: entry 3:")
    assert fragment in message
    secret = entry.rsplit(":", maxsplit=1)[-1]
    assert secret not in message


def test_keys_file_with_comments(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# issued 2026-11\n\nhubspot:{CRM_KEY}   # rotated monthly\n  {BI_KEY}\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        clients = read_keys_file(path)
    assert [c.name for c in clients] == ["hubspot", parse_api_keys([BI_KEY], source="x")[0].name]
    assert not caplog.records

    path.write_text(f"hubspot:{CRM_KEY}\nbroken:tiny\n")
    with pytest.raises(AuthConfigError, match=rf"^{path}: entry 2: key must be"):
        read_keys_file(path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_world_readable_keys_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{CRM_KEY}\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        read_keys_file(path)
    assert "accessible by other users" in caplog.text
    assert CRM_KEY not in caplog.text


def test_env_and_file_are_combined_and_checked_for_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"bi:{BI_KEY}\n")
    path.chmod(0o600)
    env = {auth.API_KEYS_ENV: f"hubspot:{CRM_KEY}", auth.API_KEYS_FILE_ENV: str(path)}
    assert load_api_keys(env).names == ["hubspot", "bi"]
    assert load_api_keys({}).names == []
    with pytest.raises(AuthConfigError, match=r"names must be unique; duplicated: \['bi'\]"):
        load_api_keys({auth.API_KEYS_ENV: f"bi:{CRM_KEY}"}, path=path)
    with pytest.raises(AuthConfigError, match="the same API key is configured more than once") as info:
        load_api_keys({auth.API_KEYS_ENV: f"other:{BI_KEY}"}, path=path)
    assert BI_KEY not in str(info.value)
    with pytest.raises(AuthConfigError, match="cannot read the API keys file"):
        load_api_keys({auth.API_KEYS_FILE_ENV: str(tmp_path / "missing")})


# -- checking keys ---------------------------------------------------------------------------------
def test_authenticate() -> None:
    ring = _keyring()
    client = ring.authenticate(BI_KEY)
    assert client is not None
    assert client.name == "bi"
    assert ring.authenticate(BI_KEY[:-1]) is None
    assert ring.authenticate(BI_KEY + "x") is None
    assert ring.authenticate("") is None


@pytest.mark.parametrize("key", [CRM_KEY, LOOSE_KEY, "unknown-key-00000000000"])
def test_every_key_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    ring = _keyring()
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    found = ring.authenticate(key)
    assert (found is not None) == (key != "unknown-key-00000000000")
    # One comparison per configured key whether the first, the last or none matches (no early exit),
    # always on fixed-length digests, so timing depends neither on the key nor on where it matched.
    assert len(calls) == len(ring)
    assert all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer two words", "Token abc", "Bearer a\tb"],
)
def test_malformed_headers_are_missing_credentials(header: str | None) -> None:
    with pytest.raises(MissingCredentialsError):
        parse_bearer(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert parse_bearer(f"bearer {CRM_KEY}") == CRM_KEY
    assert parse_bearer(f"BEARER  {CRM_KEY} ") == CRM_KEY


def test_framework_free_check() -> None:
    guard = ApiKeyAuth(_keyring())
    assert guard.check(f"Bearer {CRM_KEY}").name == "hubspot"
    with pytest.raises(InvalidCredentialsError):
        guard.check("Bearer not-a-configured-key-123")
    with pytest.raises(MissingCredentialsError):
        guard.check(None)


def test_refuses_to_run_without_keys() -> None:
    with pytest.raises(AuthConfigError, match="no API keys configured"):
        ApiKeyAuth(ApiKeyring([]))
    guard = ApiKeyAuth(_keyring())
    with pytest.raises(AuthConfigError):
        guard.replace_keyring(ApiKeyring([]))


# -- as a FastAPI dependency -----------------------------------------------------------------------
@pytest.fixture
def client() -> tuple[TestClient, ApiKeyAuth]:
    from fastapi.testclient import TestClient  # imported here: its import warns about httpx (filtered above)

    guard = ApiKeyAuth(_keyring())
    app = FastAPI()

    @app.get("/v1/thing")
    # Depends() as a default (not inside Annotated): the local `guard` cannot be resolved from a string annotation.
    def thing(request: Request, who: ApiClient = Depends(guard)) -> dict[str, str]:  # noqa: B008
        return {"client": who.name, "state": request.state.api_client}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return TestClient(app), guard


def test_http_401_403_200(client: tuple[TestClient, ApiKeyAuth], caplog: pytest.LogCaptureFixture) -> None:
    http, _ = client
    with caplog.at_level(logging.DEBUG, logger="serving.auth"):
        missing = http.get("/v1/thing")
        malformed = http.get("/v1/thing", headers={"Authorization": f"Basic {CRM_KEY}"})
        unknown = http.get("/v1/thing", headers={"Authorization": "Bearer guessed-key-0000000000"})
        ok = http.get("/v1/thing", headers={"Authorization": f"Bearer {CRM_KEY}"})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert malformed.status_code == 401
    assert malformed.headers["WWW-Authenticate"].startswith("Bearer")
    assert unknown.status_code == 403
    assert "WWW-Authenticate" not in unknown.headers
    assert ok.status_code == 200
    assert ok.json() == {"client": "hubspot", "state": "hubspot"}
    assert http.get("/health").status_code == 200
    # No detail leak: the bodies are fixed texts, and neither responses nor logs contain any key.
    assert missing.json() == malformed.json() == {"detail": auth.UNAUTHORIZED_MESSAGE}
    assert unknown.json() == {"detail": auth.FORBIDDEN_MESSAGE}
    everything = caplog.text + missing.text + malformed.text + unknown.text
    for secret in (CRM_KEY, BI_KEY, LOOSE_KEY, "guessed-key-0000000000"):
        assert secret not in everything
    assert "unknown API key" in caplog.text


def test_key_rotation_without_restart(client: tuple[TestClient, ApiKeyAuth]) -> None:
    http, guard = client
    new_key = "rotated-key-ZYXWVUTSRQ"
    guard.replace_keyring(load_api_keys({auth.API_KEYS_ENV: f"hubspot:{new_key}"}))
    assert http.get("/v1/thing", headers={"Authorization": f"Bearer {CRM_KEY}"}).status_code == 403
    assert http.get("/v1/thing", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200


def test_openapi_declares_the_bearer_scheme(client: tuple[TestClient, ApiKeyAuth]) -> None:
    http, _ = client
    spec = http.app.openapi()  # type: ignore[attr-defined]
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The API key issued to your integration: `Authorization: Bearer <key>`.",
    }
    assert spec["paths"]["/v1/thing"]["get"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_a_key_removed_from_the_keys_file_is_revoked_without_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from serving.auth import KeysFileReloader

    keys = tmp_path / "keys"
    keys.write_text(f"hubspot:{CRM_KEY}\nbi:{BI_KEY}\n")
    keys.chmod(0o600)

    def load() -> ApiKeyring:
        return load_api_keys({}, path=keys)

    guard = ApiKeyAuth(load(), reloader=KeysFileReloader(keys, load, check_seconds=0))
    app = FastAPI()

    @app.get("/who")
    def who(client: ApiClient = Depends(guard)) -> dict[str, str]:  # noqa: B008
        return {"name": client.name}

    http = TestClient(app)
    bi = {"Authorization": f"Bearer {BI_KEY}"}
    assert http.get("/who", headers=bi).json() == {"name": "bi"}
    keys.write_text(f"hubspot:{CRM_KEY}\n")  # revoke bi
    os.utime(keys, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    assert http.get("/who", headers=bi).status_code == 403
    assert http.get("/who", headers={"Authorization": f"Bearer {CRM_KEY}"}).status_code == 200
    # a broken edit keeps the previous keys instead of locking everyone out (or letting anyone in)
    keys.write_text("hubspot:short\n")
    os.utime(keys, ns=(2, 2))
    with caplog.at_level(logging.ERROR, logger="serving.auth"):
        assert http.get("/who", headers={"Authorization": f"Bearer {CRM_KEY}"}).status_code == 200
    assert "keeping the previous keys" in caplog.text
    assert CRM_KEY not in caplog.text and BI_KEY not in caplog.text
