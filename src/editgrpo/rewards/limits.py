"""The reward server's limits (``ServerLimits``) and the ``serve-rewards`` options that set them.

Standard library only, so ``editgrpo serve-rewards --help`` lists the defaults without importing
the server (Starlette, the reward's annotators)."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The serve-rewards option that sets each limit, named in the messages that enforce it.
LIMIT_OPTIONS = {
    "max_body_bytes": "--max-body-bytes",
    "max_items": "--max-pairs",
    "max_text_chars": "--max-text-chars",
    "max_request_chars": "--max-request-chars",
    "max_batch_pairs": "--max-batch-pairs",
    "max_batch_chars": "--max-batch-chars",
    "max_queue_pairs": "--max-queue-pairs",
    "header_timeout_s": "--header-timeout",
    "body_timeout_s": "--body-timeout",
}
# A token that guards a non-loopback bind must not be guessable in a few thousand tries.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask, how long a connection may take to send it, and how requests
    are cut into model calls.

    Per request: ``max_body_bytes`` (413), ``max_items`` pairs or texts (422), ``max_text_chars``
    per text (422) and ``max_request_chars``, the work bound: the characters of all its texts
    together (413). 1,000,000 because a request's scoring time grows with its text (offline
    backends, 2 cores: about 10 s for the largest allowed request of 20,000-character texts, well
    inside the client's 60 s timeout; the issue's 3.9 MB request took 76 s), while 1,024 pairs of
    ordinary reports (about 500 characters each) still fit.

    Per connection: ``header_timeout_s`` from the connection's first byte (or from its opening)
    to the end of a request's headers, and ``body_timeout_s`` from the end of the headers to the
    end of the body; past either the server answers 408 and closes the connection, so a client
    that stops half-way holds no connection for ever.

    Batching: a model call holds at most ``max_batch_pairs`` pairs and ``max_batch_chars``
    characters (at least one pair); a request larger than that is scored in slices that take turns
    with the other requests (see ``RewardService._take_batch``), so a 1-pair request waits for at
    most about one model call of other clients' work. 32,768 characters is about 100 pairs of
    ordinary reports (where merging gives its throughput: 4,050 pairs/s at 32-128 pairs per call)
    and 8 pairs of 2,000-character reports (about 80 ms). ``batch_wait_s``: how long the worker
    waits for more requests after the first before calling the model (0: take what is queued;
    under load requests queue while the previous batch is scored, which is what merges them).
    ``max_queue_pairs``: beyond it new requests get 503 (the client backs off and retries) rather
    than waiting longer than their timeout."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_items: int = 1024
    max_text_chars: int = 20_000
    max_request_chars: int = 1_000_000
    max_batch_pairs: int = 512
    max_batch_chars: int = 32_768
    batch_wait_s: float = 0.0
    max_queue_pairs: int = 65_536
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_items",
            "max_text_chars",
            "max_request_chars",
            "max_batch_pairs",
            "max_batch_chars",
            "max_queue_pairs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ServerLimits.{name} (serve-rewards {LIMIT_OPTIONS[name]}) must be a whole number "
                    f">= 1, got {value!r}"
                )
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"ServerLimits.{name} (serve-rewards {LIMIT_OPTIONS[name]}) must be a finite number "
                    f"of seconds > 0, got {value!r}"
                )
        if not isinstance(self.batch_wait_s, int | float) or not 0 <= self.batch_wait_s < math.inf:
            raise ValueError(
                f"ServerLimits.batch_wait_s must be a finite number >= 0, got {self.batch_wait_s!r}"
            )
