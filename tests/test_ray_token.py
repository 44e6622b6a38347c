"""Ray's token on a new machine: found where Ray looks for it, or made for a head of the tests' own."""

import os
import stat

import pytest

from ray_pipeline.cluster.runtime import token_for_new_head, token_found

pytestmark = pytest.mark.unit


@pytest.fixture
def new_machine(tmp_path, monkeypatch):
    """An empty home and no token in the environment, as on a machine that never ran Ray."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path


def test_a_new_machine_has_no_token_and_gets_one_of_its_own(new_machine):
    assert not token_found()
    env = token_for_new_head(str(new_machine))
    path = env["RAY_AUTH_TOKEN_PATH"]
    assert os.path.dirname(path) == str(new_machine)  # in the folder given, never the user's ~/.ray
    assert not (new_machine / "home" / ".ray").exists()
    token = open(path).read()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, as `ray get-auth-token --generate` makes
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.environ["RAY_AUTH_TOKEN_PATH"] = path
    try:
        assert token_found()
        assert token_for_new_head(str(new_machine / "again")) == {}  # one exists: nothing made
    finally:
        del os.environ["RAY_AUTH_TOKEN_PATH"]


def test_a_token_is_found_where_ray_looks(new_machine, monkeypatch):
    (new_machine / "home" / ".ray").mkdir()
    (new_machine / "home" / ".ray" / "auth_token").write_text("")
    assert not token_found()  # an empty file is no token
    (new_machine / "home" / ".ray" / "auth_token").write_text("abc\n")
    assert token_found()
    monkeypatch.setenv("HOME", str(new_machine))
    assert not token_found()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert token_found()
