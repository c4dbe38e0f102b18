"""The processor that changes nothing: every recipient gets the message as it came.

The real behaviour for the ``relay`` direction (mail that is neither to nor from one of our
domains), and the processor of the SMTP front's own tests.
"""

from __future__ import annotations

from smimekit.gateway.model import Decision, Delivery, Direction, Envelope, Outcome


class PassThrough:
    """A :class:`~smimekit.gateway.model.Processor` that delivers the message unchanged, with
    one "passed" decision per recipient."""

    def __init__(self, direction: Direction = "relay",
                 reason: str = "passed unchanged: no policy applies to relayed mail") -> None:
        self._direction: Direction = direction
        self._reason = reason

    def process(self, envelope: Envelope) -> Outcome:
        delivery = Delivery(envelope.mail_from, envelope.recipients, envelope.data)
        decisions = tuple(Decision(r, self._direction, "passed", self._reason)
                          for r in envelope.recipients)
        return Outcome((delivery,), decisions)
