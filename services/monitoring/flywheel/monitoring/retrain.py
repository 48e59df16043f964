"""When one model's monitor asks for a retrain: pure bookkeeping over a clock, no events.

A drift asks once per champion per ``cooldown_s``. A champion still below its accuracy floor (a
regressor: above its MAE ceiling) asks again, since its error rate no longer *changes* and the
drift detector will not fire again:

- as soon as a candidate ended without replacing it after the last request (rejected by the
  registry, or its rollout rolled back, inconclusive or aborted) — paced by data, not by a timer,
  as a drift retrain waits for labelled rows recorded after its own request;
- or ``again_s`` after the last request (longer than training's wait for fresh rows plus serving's
  longest rollout, so a running canary is never superseded), for an outcome monitoring missed;
- or, with no request in memory (monitoring restarted, or a new champion below its floor from its
  first label), once it has been below the floor for ``again_s``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetrainBook:
    """One champion's retrain requests: when the last was asked, when a candidate last ended in vain, and
    since when the champion is below its accuracy floor.

    >>> book = RetrainBook(cooldown_s=600, again_s=4200)
    >>> book.may_ask(now=0.0), book.may_ask(now=10.0), book.may_ask(now=700.0)
    (True, False, True)
    >>> book.ask_again(below=True, now=800.0)
    False
    >>> book.candidate_ended(now=900.0); book.ask_again(below=True, now=901.0)
    True
    >>> book.asked(now=901.0); book.ask_again(below=True, now=902.0)
    False
    """

    cooldown_s: float = 600.0
    again_s: float = 4200.0
    requested_at: float | None = None
    candidate_ended_at: float | None = None
    below_since: float | None = None

    def reset(self) -> None:
        """A new champion: no request of its own yet."""
        self.requested_at = self.candidate_ended_at = self.below_since = None

    def may_ask(self, now: float) -> bool:
        """A drift may ask (and so asks) unless the last request is younger than the cooldown."""
        if self.requested_at is not None and now - self.requested_at < self.cooldown_s:
            return False
        self.asked(now)
        return True

    def asked(self, now: float) -> None:
        self.requested_at = now

    def candidate_ended(self, now: float) -> None:
        """A candidate was rejected, or its rollout ended without promoting it: the champion still serves."""
        self.candidate_ended_at = now

    def ask_again(self, below: bool, now: float) -> bool:
        """Whether a champion (``below`` its floor or not, as of this label) should ask again now.

        >>> book = RetrainBook(again_s=100)
        >>> book.ask_again(below=True, now=0.0), book.ask_again(below=True, now=50.0)
        (False, False)
        >>> book.ask_again(below=False, now=60.0), book.ask_again(below=True, now=70.0)
        (False, False)
        >>> book.ask_again(below=True, now=171.0)
        True
        """
        if not below:
            self.below_since = None
            return False
        if self.below_since is None:
            self.below_since = now
        asked, ended = self.requested_at, self.candidate_ended_at
        if asked is not None and ended is not None and ended >= asked:
            return True
        since = asked if asked is not None else self.below_since
        return now - since >= self.again_s
