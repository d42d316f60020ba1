"""How long batch pushes took, in fixed buckets: a run of the engine counts its own
pushes in memory (RunResult.push_durations) and adds them to the CRM's totals in
the database once, when it ends (CRMState.push_durations, read by /metrics).

A histogram is {"buckets": {upper bound in seconds, as text: pushes}, "sum": seconds};
a push counts in the first bucket whose bound it does not exceed, "+Inf" for the rest.
"""

import math

# A batch is 1 to a few hundred requests, paced at about 10 a second.
BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, math.inf)


def bound_key(bound):
    return "+Inf" if bound == math.inf else repr(float(bound))


def bound_value(key):
    return math.inf if key == "+Inf" else float(key)


def observe(histogram, seconds):
    """Add one push of `seconds` to `histogram` (a dict, changed in place)."""
    bound = next(bound for bound in BOUNDS if seconds <= bound)
    buckets = histogram.setdefault("buckets", {})
    buckets[bound_key(bound)] = buckets.get(bound_key(bound), 0) + 1
    histogram["sum"] = histogram.get("sum", 0.0) + seconds


def merged(first, second):
    """A new histogram holding the pushes of both."""
    buckets = dict((first or {}).get("buckets", {}))
    for key, count in (second or {}).get("buckets", {}).items():
        buckets[key] = buckets.get(key, 0) + count
    return {"buckets": buckets, "sum": (first or {}).get("sum", 0.0) + (second or {}).get("sum", 0.0)}


def cumulative(histogram):
    """[(bound key, pushes at most that long)] over BOUNDS, as Prometheus exposes
    them, and the sum of seconds. A bucket stored under a bound no longer in
    BOUNDS counts in the next one up."""
    stored = [(bound_value(key), count) for key, count in (histogram or {}).get("buckets", {}).items()]
    rows = [(bound_key(bound), sum(count for value, count in stored if value <= bound)) for bound in BOUNDS]
    return rows, (histogram or {}).get("sum", 0.0)
