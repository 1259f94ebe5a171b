"""Bearer API keys for the CRM endpoint.

Keys come from an environment variable (``LEADSCORE_API_KEYS``, comma- or newline-separated) and/or a
secrets file (``LEADSCORE_API_KEYS_FILE``: one key per line, ``#`` starts a comment). Each entry is
``key`` or ``name:key``; the name (e.g. ``hubspot:3q2...``) is what logs show, so operators can tell
clients apart without keys ever being logged. An unnamed key is called ``key-<8 hex>`` after a
SHA-256 fingerprint of the key, which stays stable across restarts and key reordering.

Keys must be at least :data:`MIN_KEY_LENGTH` characters of the RFC 6750 token alphabet (letters,
digits, ``-._~+/`` and trailing ``=``), e.g. ``python -c "import secrets; print(secrets.token_urlsafe(32))"``.

Checking a presented key hashes it once and compares the digest with *every* configured key's digest
using :func:`hmac.compare_digest`, without stopping at a match: the time taken does not depend on which
key matched, on how much of a key was right, or on the key's length. Only digests are kept in memory.

Revocation without restart: with a keys file, :class:`KeysFileReloader` re-reads the keys within a second
of the file changing (``leadscore serve`` turns it on when ``$LEADSCORE_API_KEYS_FILE`` is set).

HTTP semantics (:class:`ApiKeyAuth`): a missing or malformed ``Authorization`` header is 401 with
``WWW-Authenticate: Bearer``; a well-formed but unknown key is 403. Neither response says more.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

log = logging.getLogger(__name__)

API_KEYS_ENV = "LEADSCORE_API_KEYS"
API_KEYS_FILE_ENV = "LEADSCORE_API_KEYS_FILE"
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 512
_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")  # RFC 6750 b64token
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

UNAUTHORIZED_MESSAGE = "missing or malformed bearer token"
FORBIDDEN_MESSAGE = "invalid API key"


class AuthConfigError(ValueError):
    """The API key configuration is invalid (the message names the source and entry, never the key)."""


class MissingCredentialsError(Exception):
    """No usable ``Authorization: Bearer <token>`` header (HTTP 401)."""


class InvalidCredentialsError(Exception):
    """A well-formed token that matches no configured key (HTTP 403)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiClient:
    """A configured client: its name and the SHA-256 digest of its key (the key itself is not kept)."""

    name: str
    digest: bytes = field(repr=False)


def _fingerprint_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def parse_api_keys(entries: Iterable[str], source: str) -> list[ApiClient]:
    """Parse ``key`` / ``name:key`` entries (blank ones are skipped) into clients.

    Args:
        entries: the entries, e.g. lines of a secrets file already stripped of comments.
        source: where they come from, for error messages (``$LEADSCORE_API_KEYS``, a file path).

    Raises:
        AuthConfigError: naming the source and the entry number (1-based), never the key.
    """
    clients: list[ApiClient] = []
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = "", entry
        if sep and not _NAME.match(name):
            raise AuthConfigError(
                f"{source}: entry {number}: client name must be 1-64 letters, digits, '_', '.' or '-' "
                "(format: name:key or key)"
            )
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
            raise AuthConfigError(
                f"{source}: entry {number}: key must be {MIN_KEY_LENGTH}-{MAX_KEY_LENGTH} characters long "
                f"(it has {len(key)})"
            )
        if not _TOKEN.match(key):
            raise AuthConfigError(
                f"{source}: entry {number}: key may only contain letters, digits, '-', '.', '_', '~', '+', '/' "
                "and trailing '='"
            )
        clients.append(ApiClient(name=name or _fingerprint_name(key), digest=_digest(key)))
    return clients


def read_keys_file(path: str | Path) -> list[ApiClient]:
    """Read a secrets file: one ``key`` or ``name:key`` per line; ``#`` starts a comment.

    Warns (without failing) when the file is readable by other users.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read the API keys file: {exc.strerror or exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: API keys file is accessible by other users; chmod 600 it", path)
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return parse_api_keys(lines, source=str(path))


class ApiKeyring:
    """The configured clients; :meth:`authenticate` checks a presented key in constant time."""

    def __init__(self, clients: Iterable[ApiClient]) -> None:
        self._clients = tuple(clients)
        names = [c.name for c in self._clients]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise AuthConfigError(f"API client names must be unique; duplicated: {duplicates}")
        digests = [c.digest for c in self._clients]
        if len(set(digests)) != len(digests):
            dup = sorted({c.name for c in self._clients if digests.count(c.digest) > 1})
            raise AuthConfigError(f"the same API key is configured more than once (clients {dup})")

    def __len__(self) -> int:
        return len(self._clients)

    def __repr__(self) -> str:
        return f"ApiKeyring(clients={self.names})"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._clients]

    def authenticate(self, token: str) -> ApiClient | None:
        """The client whose key is ``token``, or None.

        Every configured digest is compared (no early exit), each with :func:`hmac.compare_digest` on
        equal-length SHA-256 digests, so timing reveals neither which key nor how much of it matched.
        """
        presented = _digest(token)
        match: ApiClient | None = None
        for client in self._clients:
            if hmac.compare_digest(presented, client.digest):
                match = client
        return match


def load_api_keys(
    environ: Mapping[str, str] | None = None,
    *,
    env_var: str = API_KEYS_ENV,
    file_env_var: str = API_KEYS_FILE_ENV,
    path: str | Path | None = None,
) -> ApiKeyring:
    """Keys from ``$LEADSCORE_API_KEYS`` and the file named by ``$LEADSCORE_API_KEYS_FILE`` (or ``path``).

    Both sources may be used at once (e.g. while rotating keys). An empty result is allowed here; the
    caller decides whether running without keys is acceptable (:class:`ApiKeyAuth` refuses it).
    """
    env = os.environ if environ is None else environ
    clients: list[ApiClient] = []
    raw = env.get(env_var, "")
    if raw.strip():
        clients += parse_api_keys(re.split(r"[,\n]", raw), source=f"${env_var}")
    file_path = path if path is not None else env.get(file_env_var) or None
    if file_path is not None:
        clients += read_keys_file(file_path)
    return ApiKeyring(clients)


def parse_bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        MissingCredentialsError: no header, another scheme, or a token outside the RFC 6750 alphabet.
    """
    if not authorization:
        raise MissingCredentialsError("no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH or not _TOKEN.match(token):
        raise MissingCredentialsError("malformed Authorization header")
    return token


class KeysFileReloader:
    """Re-reads the keys when the keys file changes, so a key can be revoked (or added) without restart.

    :meth:`poll` stats the file at most every ``check_seconds`` (a request pays one ``stat`` a second at
    most) and, when its modification time, size or inode changed, calls ``load`` for the whole keyring.
    A file that fails to load, or yields no keys, keeps the previous keys (logged as an error): a bad edit
    never opens or closes the API by accident.
    """

    def __init__(self, path: str | Path, load: Callable[[], ApiKeyring], *, check_seconds: float = 1.0) -> None:
        self.path = Path(path)
        self.load = load
        self.check_seconds = float(check_seconds)
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> ApiKeyring | None:
        """The new keyring if the file changed and loads, else None."""
        now = time.monotonic()
        if now - self._checked < self.check_seconds or not self._lock.acquire(blocking=False):
            return None
        try:
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                keyring = self.load()
            except AuthConfigError as exc:
                log.error("API keys file changed but cannot be used (%s); keeping the previous keys", exc)
                return None
            if len(keyring) == 0:
                log.error("API keys file changed to no keys at all; keeping the previous keys")
                return None
            log.info("API keys reloaded from %s: clients %s", self.path, keyring.names)
            return keyring
        finally:
            self._lock.release()


class ApiKeyAuth(SecurityBase):
    """FastAPI dependency: ``Depends(auth)`` on a route returns the authenticated :class:`ApiClient`.

    Being a ``SecurityBase``, it also declares the ``bearer`` security scheme in the OpenAPI document.
    The client name is stored on ``request.state.api_client`` for access logs.
    """

    def __init__(
        self,
        keyring: ApiKeyring,
        *,
        scheme_name: str = "ApiKey",
        realm: str = "leadscore",
        reloader: KeysFileReloader | None = None,
    ) -> None:
        if len(keyring) == 0:
            raise AuthConfigError(
                f"no API keys configured: set ${API_KEYS_ENV} (comma-separated, name:key or key) or point "
                f"${API_KEYS_FILE_ENV} at a file with one key per line"
            )
        self.keyring = keyring
        self.realm = realm
        self.model = HTTPBearerModel(
            description="The API key issued to your integration: `Authorization: Bearer <key>`."
        )
        self.scheme_name = scheme_name
        self.reloader = reloader

    def replace_keyring(self, keyring: ApiKeyring) -> None:
        """Swap in newly loaded keys (rotation without restart); refuses an empty keyring."""
        if len(keyring) == 0:
            raise AuthConfigError("refusing to replace the API keys with an empty set")
        self.keyring = keyring

    def check(self, authorization: str | None) -> ApiClient:
        """Framework-free check: the client, or :class:`MissingCredentialsError` / :class:`InvalidCredentialsError`."""
        token = parse_bearer(authorization)
        if self.reloader is not None and (new := self.reloader.poll()) is not None:
            self.keyring = new
        client = self.keyring.authenticate(token)
        if client is None:
            raise InvalidCredentialsError("unknown API key")
        return client

    async def __call__(self, request: Request) -> ApiClient:
        peer = request.client.host if request.client else "unknown"
        try:
            client = self.check(request.headers.get("Authorization"))
        except MissingCredentialsError:
            log.info(
                "rejected %s %s from %s: missing or malformed bearer token", request.method, request.url.path, peer
            )
            raise HTTPException(
                status_code=401,
                detail=UNAUTHORIZED_MESSAGE,
                headers={"WWW-Authenticate": f'Bearer realm="{self.realm}"'},
            ) from None
        except InvalidCredentialsError:
            log.warning("rejected %s %s from %s: unknown API key", request.method, request.url.path, peer)
            raise HTTPException(status_code=403, detail=FORBIDDEN_MESSAGE) from None
        request.state.api_client = client.name
        return client
