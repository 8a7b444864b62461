"""A bound on the engine sequences the server has taken on: a full queue is refused at once.

Every choice of a request is one engine sequence. The batch runs ``engine.max_running`` of
them; up to ``api.max_queued`` more may wait for a slot. A request that would go past that
is answered at once with 429 and ``Retry-After`` instead of waiting without bound (its
client may retry later or elsewhere); one that could never fit — more choices than the
server runs and queues together — is a 400.

Sequences are counted from the moment a request is accepted, before the engine has seen
it, until its response is over (whole, failed or abandoned), so a burst of requests
arriving together cannot all slip in before the engine counts them.
"""

from __future__ import annotations

from dataclasses import dataclass


class QueueFull(Exception):
    """The server holds as many sequences as it runs and queues together; retry later."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManySequences(ValueError):
    """A request with more sequences than the server ever takes on at once."""


@dataclass
class Ticket:
    """The sequences one request holds; :meth:`release` (any number of times) gives them back."""

    admission: Admission
    sequences: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission.admitted -= self.sequences


class Admission:
    """Counts the sequences of accepted requests whose responses are not over yet."""

    def __init__(self, running: int, queued: int, retry_after_s: int):
        self.capacity = running + queued
        self.running = running
        self.retry_after_s = retry_after_s
        self.admitted = 0
        self.refused = 0

    def admit(self, sequences: int) -> Ticket:
        """A ticket for ``sequences`` more, or :class:`QueueFull` / :class:`TooManySequences`."""
        if sequences > self.capacity:
            raise TooManySequences(
                f"the request asks for {sequences} sequences (prompts × n); this server runs and "
                f"queues at most {self.capacity} at once: send fewer prompts or a smaller n"
            )
        if self.admitted + sequences > self.capacity:
            self.refused += 1
            raise QueueFull(
                f"the server is busy: {self.admitted} sequences are running or queued, at most "
                f"{self.capacity} ({self.running} running + {self.capacity - self.running} queued); "
                f"retry in {self.retry_after_s} s",
                self.retry_after_s,
            )
        self.admitted += sequences
        return Ticket(self, sequences)
