"""The application's configuration: it refuses to start without a token unless told to."""

from __future__ import annotations

import pytest

from serve_deployments.settings import Secret, Settings, SettingsError

pytestmark = pytest.mark.unit


def test_refuses_to_start_without_a_token(monkeypatch):
    for name in ("INGEST_API_TOKEN", "INGEST_API_TOKEN_FILE", "INGEST_ALLOW_NO_AUTH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError, match="INGEST_API_TOKEN"):
        Settings.from_env()
    monkeypatch.setenv("INGEST_ALLOW_NO_AUTH", "1")
    assert Settings.from_env().token is None


def test_token_from_a_file_never_shows(monkeypatch, tmp_path):
    (tmp_path / "token").write_text("s3cret-token\n")
    monkeypatch.setenv("INGEST_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("INGEST_ALLOWED_ROOTS", f"{tmp_path}/a:{tmp_path}/b")
    settings = Settings.from_env()
    assert settings.token == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(Secret("s3cret"))
    assert settings.allowed_roots == (f"{tmp_path}/a", f"{tmp_path}/b")
