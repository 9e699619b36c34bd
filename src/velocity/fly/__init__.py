"""The Fly.io Machines API client: the only code in the project that talks to Fly.

``client.FlyClient`` is a thin, typed, async client of the endpoints we use. HTTP failures become
our error tree in one place (``errors``), idempotent calls are retried with jittered backoff
honouring ``Retry-After`` (stamina), every call first takes a token from a per-action, per-machine
limiter (``ratelimit``) so a burst of previews stays under Fly's documented rates, and a create whose
answer is lost is recovered by a metadata tag instead of being sent twice. Raw JSON stays at this
edge as ``TypedDict``s (``types``); ``machine_config`` builds a machine's config from our
``MachineSpec``; ``doctor`` and ``smoke`` are the operator checks the CLI runs.
"""

from velocity.fly.client import FlyClient, RetryPolicy, authorization_header
from velocity.fly.errors import MaybeApplied
from velocity.fly.ratelimit import FLY_RATES, Rate, RateLimiter

__all__ = [
    "FLY_RATES",
    "FlyClient",
    "MaybeApplied",
    "Rate",
    "RateLimiter",
    "RetryPolicy",
    "authorization_header",
]
