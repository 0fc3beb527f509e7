"""Optional bearer-key auth: the key comes from the environment variable named by `serve.api_key_env`.

Read in the replica at startup (a missing variable stops the deployment with a message naming it),
held as a `SecretStr`, compared in constant time, and never logged or echoed.
"""

from __future__ import annotations

import hmac
import os

from pydantic import SecretStr

from sentidistill.errors import ConfigError
from sentidistill.serving.errors import ApiError

PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def load_key(env_name: str | None) -> SecretStr | None:
    """The key from the variable named in config; None when auth is off."""
    if env_name is None:
        return None
    value = os.environ.get(env_name, "")
    if not value:
        raise ConfigError(f"serve.api_key_env names the environment variable {env_name!r}, but it is not set or "
                          f"empty on this replica; set {env_name} in the cluster's environment (never in the config)")
    return SecretStr(value)


def check_bearer(key: SecretStr | None, authorization: str | None) -> None:
    """Raise 401 unless auth is off or the `Authorization: Bearer <key>` header carries the key."""
    if key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    expected = key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ApiError(401, "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                       code="invalid_api_key", type="authentication_error", headers={"WWW-Authenticate": "Bearer"})
