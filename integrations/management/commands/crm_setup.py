from django.core.management.base import BaseCommand, CommandError

from integrations.exceptions import CRMConfigurationError, SyncError, UnknownCRM
from integrations.mappings import use_mapping
from integrations.ratelimit import share_pace
from integrations.registry import enabled_backend_classes, get_enabled_backend_class


class Command(BaseCommand):
    help = (
        "Create, in each configured CRM, the custom fields its field map needs (Brevo "
        "attributes, HubSpot contact properties). Idempotent; changes nothing else."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--crm", action="append", default=[], metavar="NAME", help="Only this CRM; repeat for several."
        )

    def handle(self, *args, crm, **options):
        try:
            classes = [get_enabled_backend_class(name) for name in crm] if crm else list(enabled_backend_classes())
        except UnknownCRM as exc:
            raise CommandError(str(exc), returncode=2) from None
        except CRMConfigurationError as exc:
            raise CommandError(str(exc), returncode=3) from None
        failed = False
        for backend_class in classes:
            backend = use_mapping(share_pace(backend_class()))
            if not backend.has_custom_fields:
                self.stdout.write("%s: nothing to set up." % backend.verbose_name)
                continue
            try:
                created, existing = backend.ensure_custom_fields()
            except (SyncError, CRMConfigurationError) as exc:
                self.stderr.write(self.style.ERROR("%s: %s" % (backend.verbose_name, exc)))
                failed = True
                continue
            finally:
                backend.close()
            self.stdout.write(
                "%s: created %s; already there: %s."
                % (backend.verbose_name, ", ".join(created) or "nothing", ", ".join(existing) or "nothing")
            )
        if failed:
            raise CommandError("Some CRMs could not be set up; see above.", returncode=1)
