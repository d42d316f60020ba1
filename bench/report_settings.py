"""Settings for bench/report.py and the processes it starts: crmsync's own, plus the
no-HTTP backend the scale-out and memory sections sync, and a cluster name of the
report's own so that its django-q2 tasks never meet another cluster's on a shared
Redis."""

import os

from crmsync_project.settings import *  # noqa: F403
from crmsync_project.settings import Q_CLUSTER

CRMSYNC_EXTRA_BACKENDS = ["bench.report_support.NoopBackend"]
Q_CLUSTER = {**Q_CLUSTER, "name": os.environ.get("CRMSYNC_REPORT_CLUSTER", "crmsync-report")}
