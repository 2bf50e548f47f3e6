"""Pachyderm sessions from the pachagent daemon, for notebooks and scripts.

The agent (``pachagent serve``, started by ``pachagent login``) logs you in, keeps your secrets in the OS keyring
and renews your session; this package asks it over its owner-only Unix socket::

    import pachagent

    pachagent.whoami()                 # Identity(context='prod', username='user:alice@example.com', ...)
    token = pachagent.token(min_valid=600)   # a token valid for at least ten more minutes
    client = pachagent.client()        # a pachyderm_sdk.Client that stays authenticated across renewals
    client.pfs.list_repo()
    for event in pachagent.watch():    # LOGGED_IN, REFRESHED, ..., as they happen
        print(event.kind, event.detail)

Every function takes ``context`` (``None``: the agent's active context). Failures raise
:class:`PachagentError` subclasses whose messages say what to do: :class:`AgentNotRunning`,
:class:`NotLoggedIn`, :class:`LoginRequired`, :class:`SessionTooShort`, :class:`UnknownContext`,
:class:`UntrustedAgent`, :class:`AgentError`. The socket is found as the CLI finds it (``$PACHAGENT_SOCKET``,
``$XDG_RUNTIME_DIR/pachagent/agent.sock``, ``$TMPDIR/pachagent-<uid>/agent.sock``), and nothing is sent to it
unless the agent behind it runs as you.
"""

from typing import Any, Iterator, Optional

from ._agent import Agent, Duration, Identity, SessionEvent
from ._client import AgentClient, make_client
from .errors import (
    AgentError,
    AgentNotRunning,
    LoginRequired,
    NotLoggedIn,
    PachagentError,
    SessionTooShort,
    UnknownContext,
    UntrustedAgent,
)

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentNotRunning",
    "Identity",
    "LoginRequired",
    "NotLoggedIn",
    "PachagentError",
    "SessionEvent",
    "SessionTooShort",
    "UnknownContext",
    "UntrustedAgent",
    "client",
    "token",
    "watch",
    "whoami",
]

__version__ = "0.1.0"


def token(context: Optional[str] = None, min_valid: Optional[Duration] = None) -> str:
    """A Pachyderm token for ``context``, valid for at least ``min_valid`` (seconds or a ``timedelta``).

    The agent renews first when the current token would end sooner. A token handed out stays valid until its own
    expiration even after the agent renews, so a program may keep using it that long; for anything that runs
    longer, use :func:`client`, which follows the renewals.

    Raises :class:`SessionTooShort` when no token of the session can live that long, and the other
    :class:`PachagentError` subclasses as their names say.
    """
    with Agent() as agent:
        return agent.get_token(context, min_valid).token


def whoami(context: Optional[str] = None) -> Identity:
    """Who the session of ``context`` belongs to (pachd's username) and when its current token ends."""
    with Agent() as agent:
        return agent.who_am_i(context)


def watch(context: Optional[str] = None, all_contexts: bool = False) -> Iterator[SessionEvent]:
    """Session events of ``context`` (or of every context) as they happen, until the agent stops.

    A generator: stop it with ``break`` or ``.close()``, which ends the stream.
    """
    agent = Agent()
    try:
        yield from agent.watch(context, all_contexts)
    finally:
        agent.close()


def client(context: Optional[str] = None, **kwargs: Any) -> AgentClient:
    """A real ``pachyderm_sdk.Client`` for ``context``'s pachd that stays authenticated for as long as it is used.

    Each call carries a token the agent currently vouches for, fetched over the agent's socket and cached in
    memory until close to its end; it is never written anywhere. The address (and, for a private CA, the
    context's ``ca_file``) come from the agent; ``kwargs`` go to ``pachyderm_sdk.Client`` and override them
    (``host``, ``port``, ``tls``, ``root_certs``, ``transaction_id``).
    """
    agent = Agent()
    grant = agent.get_token(context, None)
    return make_client(agent, context, grant, **kwargs)
