"""API keys: configured as SHA-256 digests, checked in constant time; dev mode must be explicit."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from llmfti.config import AgentSettings
from llmfti.errors import AuthenticationError, ConfigError

log = logging.getLogger("llmfti.agent")
DEV_PRINCIPAL_NAME = "dev"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, the tenant its retrieval is restricted to, its rate limit."""

    name: str
    tenant: str | None
    requests_per_minute: int


@dataclass
class Caller:
    """The authenticated, rate-limited caller of one request, with what that cost."""

    principal: Principal
    request_id: str
    user_header: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)


def hash_key(key: str) -> str:
    """The digest to put in ``agent.api_keys[].sha256`` for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyAuthenticator:
    """Maps a ``Bearer`` token to its :class:`Principal`."""

    def __init__(self, settings: AgentSettings):
        self.dev = settings.auth_mode == "dev"
        default_rpm = settings.requests_per_minute
        self._keys = [
            (bytes.fromhex(k.sha256), Principal(k.name, k.tenant, k.requests_per_minute or default_rpm))
            for k in settings.api_keys
        ]
        self._dev_principal = Principal(DEV_PRINCIPAL_NAME, None, settings.requests_per_minute)
        if not self.dev and not self._keys:
            raise ConfigError(
                "no API keys are configured and auth_mode is 'api_keys'",
                expected="at least one entry in agent.api_keys (name, sha256, tenant)",
                fix="set LLMFTI_AGENT__API_KEYS='[{\"name\": \"me\", \"sha256\": \"<sha256 of the key>\"}]', "
                "or start a local development server without keys: llmfti serve --dev",
            )
        if self.dev:
            log.warning("AUTH DISABLED: development mode, every request is accepted without a key")

    def authenticate(self, authorization: str | None) -> Principal:
        if self.dev:
            return self._dev_principal
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "missing API key",
                expected="an 'Authorization: Bearer <key>' header",
                fix="pass your key (the openai client sends api_key as a Bearer token)",
            )
        digest = hashlib.sha256(token.strip().encode("utf-8")).digest()
        found: Principal | None = None
        for stored, principal in self._keys:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(digest, stored):
                found = principal
        if found is None:
            raise AuthenticationError("invalid API key", fix="check the key, or ask for one to be configured")
        return found
