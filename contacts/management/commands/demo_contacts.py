import random
import unicodedata

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from contacts.models import Contact

FIRST_NAMES = ("Ada", "Bruno", "Chloé", "Dmitri", "Emeka", "Fatima", "Grace", "Hiro", "Inès", "Jonas")
LAST_NAMES = ("Okafor", "Lindqvist", "García", "Nakamura", "Dubois", "Kowalski", "Haddad", "Smith")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Stark Industries", "Wayne Enterprises")


class Command(BaseCommand):
    help = (
        "Create demonstration contacts (addresses under example.com) on a development "
        "machine, so the admin has something to queue."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=1000, help="How many (default: %(default)s).")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when any contact exists.")

    def handle(self, *args, count, if_empty, **options):
        if not settings.DEBUG:
            raise CommandError("demo_contacts only runs with DEBUG=true.")
        if if_empty and Contact.objects.exists():
            return
        rng = random.Random(2026)
        contacts = []
        for i in range(count):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            company = rng.choice(COMPANIES)
            contacts.append(
                Contact(
                    email="%s.%s.%d@example.com" % (ascii_slug(first), ascii_slug(last), i),
                    first_name=first,
                    last_name=last,
                    company=company,
                    website="https://%s.example.com" % company.split()[0].lower(),
                    attributes={"demo": True},
                )
            )
        created = Contact.objects.bulk_create(contacts, ignore_conflicts=True, batch_size=500)
        self.stdout.write(self.style.SUCCESS("Created %d demonstration contacts." % len(created)))


def ascii_slug(name):
    """ "García" -> "garcia": email addresses here stay ASCII, as validators expect."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
