"""Backends come from `[[backends]]` tables or from the environment variables users already have."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from obsmcp.sources.config import BackendConfig, backends_from_env


def test_vendor_environment_variables_become_backends(tmp_path: Path) -> None:
    token = tmp_path / "sentry-token"
    token.write_text("sntrys_abc\n")
    env = {
        "PROMETHEUS_ENDPOINT": "http://prom:9090/",
        "LOKI_URL": "http://loki:3100",
        "SENTRY_AUTH_TOKEN_FILE": str(token),
        "SENTRY_ORG": "acme",
        "DATADOG_API_KEY": "a" * 32,
        "DATADOG_APP_KEY": "b" * 40,
        "DD_SITE": "datadoghq.eu",
    }
    backends = [BackendConfig.model_validate(b) for b in backends_from_env(env)]
    by_name = {b.name: b for b in backends}
    assert set(by_name) == {"prometheus", "loki", "sentry", "datadog"}
    assert by_name["prometheus"].base_url == "http://prom:9090"
    assert by_name["sentry"].bearer() == "sntrys_abc"
    assert by_name["sentry"].base_url == "https://sentry.io"
    assert by_name["datadog"].base_url == "https://api.datadoghq.eu"
    assert by_name["datadog"].routed_signals == ("logs", "traces", "metrics")


def test_secrets_never_print() -> None:
    b = BackendConfig(name="dd", kind="datadog", api_key="k" * 32, app_key="s" * 40)  # type: ignore[arg-type]
    assert "kkkk" not in repr(b) and "ssss" not in str(b.model_dump())


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"name": "p", "kind": "prometheus"}, "needs url"),
        ({"name": "p", "kind": "prometheus", "url": "prom:9090"}, "http(s) URL"),
        ({"name": "p", "kind": "prometheus", "url": "http://u:pw@prom:9090"}, "not in the URL"),
        ({"name": "Prod Prom", "kind": "prometheus", "url": "http://p"}, "not a backend name"),
        ({"name": "s", "kind": "sentry", "token": "t"}, "SENTRY_ORG"),
        ({"name": "d", "kind": "datadog", "api_key": "x"}, "DATADOG_APP_KEY"),
        ({"name": "d", "kind": "datadog", "api_key": "x", "app_key": "y", "site": "datadog.com"}, "not a Datadog site"),
        ({"name": "l", "kind": "loki", "url": "http://l", "signals": ["metrics"]}, "does not serve metrics"),
        ({"name": "l", "kind": "loki", "url": "http://l", "token_file": "/nonexistent"}, "does not exist"),
    ],
)
def test_bad_backend_tables_say_what_to_fix(table: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=None) as err:
        BackendConfig.model_validate(table)
    assert says in str(err.value)


def test_missing_secret_file_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SENTRY_AUTH_TOKEN_FILE=/nope does not exist"):
        backends_from_env({"SENTRY_AUTH_TOKEN_FILE": "/nope", "SENTRY_ORG": "acme"})
