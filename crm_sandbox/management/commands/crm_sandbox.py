import re
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from crm_sandbox import EMULATOR_CLASSES
from crm_sandbox.base import LIMITER_MODELS
from crm_sandbox.server import SandboxOptions, SandboxServer

RATE_LIMIT = re.compile(r"^(?P<crm>[\w-]+)=(?P<requests>\d+)/(?P<seconds>\d+(?:\.\d+)?)$")


def parse_rate_limit(spec):
    """ "hubspot=100/10" -> ("hubspot", (100, 10.0)); CommandError when it is not that."""
    known = sorted(cls.name for cls in EMULATOR_CLASSES)
    match = RATE_LIMIT.match(spec)
    if not match or match["crm"] not in known or int(match["requests"]) < 1 or float(match["seconds"]) <= 0:
        raise CommandError(
            "--rate-limit %r: expected CRM=REQUESTS/SECONDS with CRM one of %s, REQUESTS at least 1 and "
            "SECONDS above 0, e.g. hubspot=100/10." % (spec, ", ".join(known))
        )
    return match["crm"], (int(match["requests"]), float(match["seconds"]))


def parse_limiter(spec):
    """ "brevo=sliding" -> ("brevo", "sliding"); CommandError when it is not that."""
    known = sorted(cls.name for cls in EMULATOR_CLASSES if cls.primary_limit)
    crm, _, model = spec.partition("=")
    if crm not in known or model not in LIMITER_MODELS:
        raise CommandError(
            "--limiter %r: expected CRM=MODEL with CRM one of %s and MODEL one of %s, e.g. brevo=sliding."
            % (spec, ", ".join(known), ", ".join(LIMITER_MODELS))
        )
    return crm, model


class Command(BaseCommand):
    help = (
        "Serve a local emulator of every CRM's API on one port (/brevo/v3/..., /hubspot/crm/..., and "
        "/_sandbox/<crm>/contacts to see what arrived), with latency, slow answers and faults on demand. Runs until "
        "Ctrl-C or SIGTERM."
    )
    # The emulator uses none of crmsync's settings, models or CRM configuration, so
    # crmsync's checks say nothing about it; run, they would only repeat the sandbox
    # warning (integrations.W003) that `make run` already prints once.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025, help="0 picks a free port.")
        parser.add_argument("--latency-ms", type=float, default=0, help="Added to every CRM API request.")
        parser.add_argument(
            "--jitter-ms",
            type=float,
            default=0,
            help="Up to this much more latency per request, at random, before the rate limit counts it.",
        )
        parser.add_argument(
            "--error-rate", type=float, default=0.0, help="Share of requests answered with a 5xx (0 to 1)."
        )
        parser.add_argument(
            "--timeout-rate", type=float, default=0.0, help="Share of requests held, then answered 504 (0 to 1)."
        )
        parser.add_argument("--timeout-seconds", type=float, default=30.0, help="How long a timed-out request is held.")
        parser.add_argument(
            "--slow-body",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Send each answer's status and headers at once, then its body one byte per SECONDS.",
        )
        parser.add_argument(
            "--slow-headers",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Send each answer's status line, then its headers one byte per SECONDS.",
        )
        self.add_rate_limit_arguments(parser)
        parser.add_argument("--seed", type=int, help="Seed the fault dice, for repeatable runs.")

    def add_rate_limit_arguments(self, parser):
        parser.add_argument(
            "--rate-limit",
            action="append",
            default=[],
            metavar="CRM=REQUESTS/SECONDS",
            help="Replace a CRM's main rate limit, e.g. hubspot=100/10; repeat for several CRMs. "
            "The real limits apply otherwise.",
        )
        parser.add_argument(
            "--no-rate-limits", action="store_true", help="No rate limit, except those --rate-limit sets."
        )
        parser.add_argument(
            "--limiter",
            action="append",
            default=[],
            metavar="CRM=MODEL",
            help="How a CRM's main rate limit is enforced: fixed (window), sliding (at most N in any window) or "
            "bucket (token bucket), e.g. brevo=sliding; repeat for several CRMs. Default: what the vendor documents "
            "(Brevo bucket, HubSpot sliding).",
        )

    def handle(self, *args, **options):
        sandbox_options = self.sandbox_options(options)
        try:
            server = SandboxServer(options["host"], options["port"], sandbox_options)
        except OSError as exc:
            raise CommandError(
                "Cannot listen on %s:%s: %s" % (options["host"], options["port"], exc.strerror or exc)
            ) from exc
        stopping = threading.Event()
        restore = self._stop_on_signals(stopping)
        server.start()
        self.stdout.write(self.style.SUCCESS("CRM sandbox listening on %s" % server.url))
        self.stdout.write("Point crmsync at it with CRMSYNC_SANDBOX_URL=%s" % server.url)
        self.stdout.flush()
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            restore()
            self.stdout.write("CRM sandbox stopped.")

    def sandbox_options(self, options):
        for name in ("error_rate", "timeout_rate"):
            if not 0 <= options[name] <= 1:
                raise CommandError("--%s must be between 0 and 1." % name.replace("_", "-"))
        for name in ("latency_ms", "jitter_ms", "timeout_seconds", "slow_body", "slow_headers"):
            if options[name] < 0:
                raise CommandError("--%s must be 0 or more." % name.replace("_", "-"))
        return SandboxOptions(
            latency_ms=options["latency_ms"],
            jitter_ms=options["jitter_ms"],
            error_rate=options["error_rate"],
            timeout_rate=options["timeout_rate"],
            timeout_seconds=options["timeout_seconds"],
            slow_body=options["slow_body"],
            slow_headers=options["slow_headers"],
            rate_limits=dict(parse_rate_limit(spec) for spec in options["rate_limit"]),
            real_rate_limits=not options["no_rate_limits"],
            limiters=dict(parse_limiter(spec) for spec in options["limiter"]),
            seed=options["seed"],
        )

    def _stop_on_signals(self, stopping):
        """Let SIGINT and SIGTERM end the wait; returns what puts the old handlers back.
        Signals can only be caught on the main thread; elsewhere this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        for number in previous:
            signal.signal(number, lambda *_: stopping.set())

        def restore():
            for number, handler in previous.items():
                signal.signal(number, handler)

        return restore
