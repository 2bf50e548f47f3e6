"""The exceptions pachagent raises; each message says what to do next.

Every one is a :class:`PachagentError`, so ``except pachagent.PachagentError`` catches them all. The agent's own
refusals carry a stable ``reason`` (the ``pachagent-error`` code the agent sends, e.g. ``"not-logged-in"``).
"""

from typing import Optional


class PachagentError(Exception):
    """Something pachagent could not do. ``reason`` is the agent's stable code, when the agent answered."""

    def __init__(self, message: str, reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason


class AgentNotRunning(PachagentError):
    """No agent answers on the socket: start one with ``pachagent serve`` (or ``pachagent login``)."""


class UntrustedAgent(PachagentError):
    """The socket, its directory, or the process serving it belongs to another user: nothing was sent to it."""


class UnknownContext(PachagentError):
    """The agent's configuration has no such context."""


class NotLoggedIn(PachagentError):
    """The context has no session: run ``pachagent login``."""


class LoginRequired(PachagentError):
    """The session ended or can no longer be renewed (expired, refused, renewal refused): log in again."""


class SessionTooShort(PachagentError):
    """No token can stay valid as long as asked (``min_valid``): ask for less, or log in for a fresh session."""


class AgentError(PachagentError):
    """The agent could not answer for another reason (pachd or the identity provider down, a locked keyring)."""
