import re
import signal

from django.core.management.base import BaseCommand, CommandError

from integrations.sandbox import EMULATOR_CLASSES
from integrations.sandbox.server import SandboxOptions, SandboxServer

RATE_LIMIT = re.compile(r"^(\w+)=(\d+)/(\d+(?:\.\d+)?)$")


class Command(BaseCommand):
    help = (
        "Serve a local emulator of every CRM's API on one port (/brevo/v3/..., /hubspot/crm/..., "
        "and /_sandbox/<crm>/contacts to see what arrived), with latency and faults on demand."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025)
        parser.add_argument("--latency-ms", type=int, default=0, help="Added to every CRM API request.")
        parser.add_argument("--error-rate", type=float, default=0.0, help="Share of requests answered with a 5xx (0 to 1).")
        parser.add_argument("--timeout-rate", type=float, default=0.0, help="Share of requests held 30 s, then 504 (0 to 1).")
        parser.add_argument(
            "--rate-limit",
            action="append",
            default=[],
            metavar="CRM=REQUESTS/SECONDS",
            help="Replace a CRM's main rate limit, e.g. hubspot=100/10. The real limits apply otherwise.",
        )
        parser.add_argument("--no-rate-limits", action="store_true", help="Turn every main rate limit off.")
        parser.add_argument("--seed", type=int, help="Seed the fault dice, for repeatable runs.")

    def handle(self, *args, **options):
        server = SandboxServer(options["host"], options["port"], self._options(options))
        self.stdout.write(self.style.SUCCESS("CRM sandbox listening on %s" % server.url))
        self.stdout.write("Point crmsync at it with CRMSYNC_SANDBOX_URL=%s" % server.url)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.httpd.server_close()
            self.stdout.write("CRM sandbox stopped.")

    def _options(self, options):
        for name in ("error_rate", "timeout_rate"):
            if not 0 <= options[name] <= 1:
                raise CommandError("--%s must be between 0 and 1." % name.replace("_", "-"))
        if options["latency_ms"] < 0:
            raise CommandError("--latency-ms must be 0 or more.")
        known = {cls.name for cls in EMULATOR_CLASSES}
        limits = {}
        for spec in options["rate_limit"]:
            match = RATE_LIMIT.match(spec)
            if not match or match.group(1) not in known or int(match.group(2)) < 1:
                raise CommandError(
                    "--rate-limit %r: expected CRM=REQUESTS/SECONDS with CRM one of %s, e.g. hubspot=100/10."
                    % (spec, ", ".join(sorted(known)))
                )
            limits[match.group(1)] = (int(match.group(2)), float(match.group(3)))
        return SandboxOptions(
            latency_ms=options["latency_ms"],
            error_rate=options["error_rate"],
            timeout_rate=options["timeout_rate"],
            rate_limits=limits,
            real_rate_limits=not options["no_rate_limits"],
            seed=options["seed"],
        )
