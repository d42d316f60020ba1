import getpass

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from contacts import erasure
from contacts.emails import canonical_email
from contacts.models import ErasureOutcome
from contacts.suppression import SuppressionKeyMissing
from integrations.registry import verbose_crm_name

# What the command says of each CRM's part of a new erasure.
STARTED = {
    ErasureOutcome.PENDING: "queued",
    ErasureOutcome.NOT_CONFIGURED: "not configured: erase there by hand",
}


class Command(BaseCommand):
    help = (
        "Erase people from every CRM (GDPR): each configured CRM is asked to erase them, "
        "their email goes on the suppression list at once, and the local contact is deleted "
        "once every CRM has confirmed. The proof (no email) is listed under Erasures in the admin. "
        "Every address is checked first: one bad address starts nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("emails", nargs="*", metavar="EMAIL", help="Addresses to erase.")
        parser.add_argument(
            "--file",
            help="A file with one address per line; blank lines and lines starting with # are skipped.",
        )
        parser.add_argument(
            "--requested-by",
            default=None,
            help="Who asked, as the proof records it (default: the operating system user).",
        )

    def handle(self, *args, emails, file, requested_by, **options):
        addresses = [*emails, *(self._read(file) if file else [])]
        if not addresses:
            raise CommandError("Give at least one email, or --file.")
        self._check(addresses)
        try:
            started = erasure.start(addresses, requested_by=requested_by or _os_user(), via="command")
        except SuppressionKeyMissing as exc:
            raise CommandError(str(exc)) from None
        for item in started:
            self.stdout.write("Erasure %d:" % item.pk)
            for result in item.results.order_by("crm"):
                self.stdout.write(
                    "  %s: %s" % (verbose_crm_name(result.crm), STARTED.get(result.outcome, result.outcome))
                )
        self.stdout.write(self.style.SUCCESS("%d erasures started." % len(started)))

    def _read(self, path):
        try:
            with open(path, encoding="utf-8") as lines:
                stripped = [line.strip() for line in lines]
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError("Cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
        return [line for line in stripped if line and not line.startswith("#")]

    def _check(self, addresses):
        bad = []
        for address in addresses:
            try:
                validate_email(canonical_email(address))
            except ValidationError:
                bad.append(address)
        if bad:
            raise CommandError(
                "Not a valid email address: %s. Nothing was erased." % ", ".join(repr(address) for address in bad)
            )


def _os_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
