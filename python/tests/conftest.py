"""A real stack for the package's tests: the test OpenID Provider (npm oidc-provider), pachd-dev trusting it,
and a ``pachagent serve`` logged in through the browser flow by the scripted user, all on loopback.

The binaries are the repository's debug builds (``cargo build`` makes them; ``scripts/test.sh`` runs these tests
after the Rust suite), or ``$PACHAGENT_BIN`` and ``$PACHD_DEV_BIN``. The agent keeps its secrets in the Secret
Service of the session bus the suite runs in, under a keyring service name of its own. Nothing missing is
skipped: a missing part fails the test with what to run.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]
ID_TOKEN_TTL = 8


def _binary(env: str, name: str) -> Path:
    path = Path(os.environ.get(env) or REPO / "target" / "debug" / name)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build` (or scripts/test.sh) first, or set {env}")
    return path


@dataclass
class Stack:
    """The running parts and the environment a client of the agent needs."""

    pachagent: Path
    env: Dict[str, str]
    pachd_address: str
    root_token: str
    dir: Path

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Runs the pachagent CLI against this stack's agent."""
        return subprocess.run(
            [str(self.pachagent), *args], env=self.env, capture_output=True, text=True, timeout=60, **kwargs
        )


def _start(cmd: List[str], **kwargs) -> "tuple[subprocess.Popen, dict]":
    """Starts a server that prints one JSON ready line on stdout, and returns it with that line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kwargs)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"{cmd[0]} did not start ({' '.join(cmd)})")
    return proc, json.loads(line)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """OP with short ID tokens, pachd-dev, and an agent logged in to context ``dev`` as alice@example.com."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        pytest.fail("these tests need a session bus with gnome-keyring: run them through scripts/test.sh")
    if not (REPO / "tests/oidc/node_modules/oidc-provider").is_dir():
        pytest.fail("the test OpenID Provider is not installed: run scripts/test.sh (npm ci in tests/oidc)")
    pachagent, pachd_dev = _binary("PACHAGENT_BIN", "pachagent"), _binary("PACHD_DEV_BIN", "pachd-dev")
    procs: List[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="pachagent-pytest-") as tmp:
        d = Path(tmp)
        try:
            op, ready = _start(
                ["node", str(REPO / "tests/oidc/server.js"), "--die-with-stdin", "--port", "0",
                 "--id-token-ttl", str(ID_TOKEN_TTL)],
                cwd=REPO / "tests/oidc", stderr=open(d / "op.log", "w"),
            )
            procs.append(op)
            issuer = ready["issuer"]
            root = f"root-{uuid.uuid4().hex}"
            (d / "root-token").write_text(root)
            pachd, ready = _start(
                [str(pachd_dev), "--root-token-file", str(d / "root-token"), "--issuer", issuer,
                 "--client-id", "pachagent"],
                stderr=open(d / "pachd-dev.log", "w"),
            )
            procs.append(pachd)
            (d / "run").mkdir(mode=0o700)
            config = d / "config.toml"
            service = f"pachagent-pytest-{os.getpid()}"
            config.write_text(f'store = "secret-service"\nkeyring_service = "{service}"\n')
            env = dict(os.environ)
            env.update(
                PACHAGENT_SOCKET=str(d / "run" / "agent.sock"),
                PACHAGENT_CONFIG=str(config),
                BROWSER=str(REPO / "tests/browser/fake_user.py"),
                FAKE_USER_EMAIL="alice@example.com",
                NO_COLOR="1",
            )
            for name in ("PACH_PYTHON_AUTH_TOKEN", "PACH_CONFIG", "PACHAGENT_CONTEXT"):
                env.pop(name, None)
            s = Stack(pachagent, env, ready["pachd"], root, d)
            for args in (
                ("context", "add", "dev", "--pachd", s.pachd_address, "--issuer", issuer, "--client-id", "pachagent"),
                ("context", "add", "idle", "--pachd", s.pachd_address),
                ("context", "use", "dev"),
            ):
                out = s.cli(*args)
                assert out.returncode == 0, out
            agent = subprocess.Popen(
                [str(pachagent), "serve"], env={**env, "RUST_LOG": "pachagent=debug,info"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(d / "agent.log", "w"),
            )
            procs.append(agent)
            deadline = time.monotonic() + 20
            while not (d / "run" / "agent.sock").exists():
                assert agent.poll() is None, (d / "agent.log").read_text()
                assert time.monotonic() < deadline, "the agent did not listen within 20 s"
                time.sleep(0.05)
            login = s.cli("login")
            assert login.returncode == 0, login
            yield s
            s.cli("logout", "--all")
        finally:
            for p in reversed(procs):
                p.kill()
                p.wait()


@pytest.fixture
def agent_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The stack, with this process's environment pointing the package at its agent."""
    for key in ("PACHAGENT_SOCKET", "PACHAGENT_CONFIG"):
        monkeypatch.setenv(key, stack.env[key])
    monkeypatch.delenv("PACH_PYTHON_AUTH_TOKEN", raising=False)
    return stack


def pytest_report_header() -> str:
    return f"pachagent stack: {REPO}, python {sys.version.split()[0]}"
