"""One `sync_crm` process for bench/report.py: start Django, say ready, wait for the
go on standard input, run `sync_crm --crm CRM`, then write the times and the peak
memory as JSON to RESULT_PATH.

    python bench/report_worker.py CRM RESULT_PATH
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.report_settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402


def status_kb(field):
    """A memory figure of this process from /proc, in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """VmRSS every 20 ms, to tell memory that grows along the sync from a one-off peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stopping = [], threading.Event()

    def run(self):
        while not self.stopping.wait(0.02):
            self.samples.append(status_kb("VmRSS"))

    def at(self, share):
        return self.samples[min(len(self.samples) - 1, int(share * len(self.samples)))] if self.samples else 0


def main():
    crm, result_path = sys.argv[1], Path(sys.argv[2])
    connection.ensure_connection()
    ready = {"rss_kb": status_kb("VmRSS"), "peak_kb": status_kb("VmHWM")}
    result_path.with_suffix(".ready").write_text(json.dumps(ready))
    sys.stdin.readline()
    sampler = Sampler()
    sampler.start()
    started = time.time()
    with open(os.devnull, "w") as devnull:
        call_command("sync_crm", crm=[crm], stdout=devnull, stderr=devnull)
    ended = time.time()
    sampler.stopping.set()
    sampler.join()
    result = {
        **ready,
        "started": started,
        "ended": ended,
        # RSS a tenth, half way and all the way through the sync.
        "rss_profile_kb": [sampler.at(0.1), sampler.at(0.5), status_kb("VmRSS")],
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child
        # started by a large parent reports the parent's peak as its own.
        "max_rss_kb": status_kb("VmHWM"),
        "queries_kept": len(connection.queries_log),
    }
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
