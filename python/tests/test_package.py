"""The package against a real agent: tokens, identity, events, a pachyderm_sdk client that outlives its tokens,
and errors that say what to do."""

import os
import queue
import socket
import threading
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pachyderm_sdk import Client

import pachagent
from conftest import ID_TOKEN_TTL, Stack


def pachd_client(stack: Stack, token: str) -> Client:
    """A plain pachyderm_sdk client with a fixed token, as a user would make one."""
    return Client.from_pachd_address(stack.pachd_address, auth_token=token)


def test_a_token_is_one_pachd_accepts_for_the_active_context(agent_env: Stack) -> None:
    token = pachagent.token()
    assert pachd_client(agent_env, token).auth.who_am_i().username == "user:alice@example.com"
    assert pachagent.token(context="dev") == pachagent.token(), "the active context is dev"


def test_whoami_names_the_user_and_when_the_session_ends(agent_env: Stack) -> None:
    who = pachagent.whoami()
    assert (who.context, who.username, who.pachd_address) == ("dev", "user:alice@example.com", agent_env.pachd_address)
    assert who.expiration is not None and who.expiration.tzinfo is not None
    assert datetime.now(timezone.utc) < who.expiration <= datetime.now(timezone.utc) + timedelta(seconds=ID_TOKEN_TTL)


def test_min_valid_takes_seconds_or_a_timedelta_and_more_than_a_token_lives_says_a_login_will_not_help(
    agent_env: Stack,
) -> None:
    token = pachagent.token(min_valid=timedelta(seconds=2))
    left = pachagent.whoami().expiration - datetime.now(timezone.utc)
    assert token and left >= timedelta(seconds=1.5)
    with pytest.raises(pachagent.SessionTooShort) as refused:
        pachagent.token(min_valid=timedelta(minutes=5))
    assert refused.value.reason == "beyond-lifetime"
    assert "a new login will not help" in str(refused.value)
    with pytest.raises(ValueError):
        pachagent.token(min_valid=-1)


def test_watch_yields_the_renewals_as_they_happen(agent_env: Stack) -> None:
    found: "queue.Queue[pachagent.SessionEvent]" = queue.Queue()

    def first_renewal() -> None:
        for event in pachagent.watch():
            if event.kind == "REFRESHED":
                found.put(event)
                return

    threading.Thread(target=first_renewal, daemon=True).start()
    event = found.get(timeout=3 * ID_TOKEN_TTL)  # raises queue.Empty when no renewal comes
    assert event.kind == "REFRESHED"
    assert event.context == "dev" and event.username == "user:alice@example.com"
    assert event.expiration is not None and event.at is not None
    assert event.expiration > datetime.now(timezone.utc)


def test_one_client_keeps_working_across_renewals_and_never_writes_its_token(agent_env: Stack) -> None:
    client = pachagent.client()
    first = client.auth_token
    kept_stub = client.auth
    seen, failures, calls = {first}, [], 0
    end = time.monotonic() + 2.5 * ID_TOKEN_TTL
    while time.monotonic() < end:
        try:
            assert kept_stub.who_am_i().username == "user:alice@example.com"
            calls += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            failures.append(repr(e))
        seen.add(client.auth_token)
        time.sleep(0.5)
    assert failures == []
    assert calls >= 25
    assert len(seen) >= 2, "the client followed the agent's renewals"
    with pytest.raises(AttributeError):
        client.auth_token = "fixed"
    leaks = [p for p in agent_env.dir.rglob("*") if p.is_file() and first.encode() in p.read_bytes()]
    assert leaks == [], f"the token was written to {leaks}"


def test_a_client_ignores_a_stale_token_in_the_environment(agent_env: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # pachd (and pachd-dev) refuse a call carrying two tokens ("multiple authentication token keys"), and a
    # stale one alone: only the agent's token may go out.
    monkeypatch.setenv("PACH_PYTHON_AUTH_TOKEN", "0123456789abcdef0123456789abcdef")
    assert Client().auth_token == "0123456789abcdef0123456789abcdef", "pachyderm_sdk itself would use it"
    assert pachagent.client().auth.who_am_i().username == "user:alice@example.com"


def test_a_grant_never_shows_its_token(agent_env: Stack) -> None:
    with pachagent._agent.Agent() as agent:
        grant = agent.get_token(None, None)
    assert grant.token and grant.token not in repr(grant)


def test_a_context_without_a_session_says_to_log_in(agent_env: Stack) -> None:
    with pytest.raises(pachagent.NotLoggedIn) as e:
        pachagent.token(context="idle")
    assert "pachagent login --context idle" in str(e.value) and e.value.reason == "not-logged-in"
    with pytest.raises(pachagent.UnknownContext):
        pachagent.whoami(context="nowhere")


def test_no_agent_running_is_an_error_that_says_how_to_start_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PACHAGENT_SOCKET", str(tmp_path / "agent.sock"))
    for call in (pachagent.token, pachagent.whoami, pachagent.client):
        with pytest.raises(pachagent.AgentNotRunning) as e:
            call()
        assert "pachagent serve" in str(e.value)


def test_a_socket_in_a_directory_others_can_write_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(shared / "agent.sock"))
    listener.listen(1)
    listener.settimeout(0.5)
    monkeypatch.setenv("PACHAGENT_SOCKET", str(shared / "agent.sock"))
    with pytest.raises(pachagent.UntrustedAgent) as e:
        pachagent.token()
    assert "chmod 700" in str(e.value)
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing even connected
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o777
