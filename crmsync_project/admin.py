import functools
from datetime import datetime, timedelta

from django.contrib import admin, messages
from django.contrib.admin.filters import ChoicesFieldListFilter
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.contrib.admin.widgets import url_params_from_lookup_dict
from django.core.exceptions import ValidationError
from django.urls import path
from django.utils.translation import gettext as _


class CRMSyncAdminSite(admin.AdminSite):
    """The admin, with the sync dashboard among its own pages. Every list registered
    here, Django's and django-q2's included, checks its query string (CheckedChangeList)."""

    site_header = "crmsync"
    site_title = "crmsync"
    index_title = "Contacts and CRM sync"

    def get_urls(self):
        from integrations import dashboard

        own = [
            path("dashboard/", self.admin_view(dashboard.dashboard), name="crmsync_dashboard"),
            path("dashboard/numbers/", self.admin_view(dashboard.dashboard_numbers), name="crmsync_dashboard_numbers"),
            path("dashboard/<str:crm>/pause/", self.admin_view(dashboard.pause), name="crmsync_pause"),
            path("dashboard/<str:crm>/resume/", self.admin_view(dashboard.resume), name="crmsync_resume"),
        ]
        return own + super().get_urls()

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, CheckedParametersAdmin):
            admin_class = type(
                admin_class.__name__,
                (CheckedParametersAdmin, admin_class),
                {
                    "__module__": admin_class.__module__,
                    "__qualname__": admin_class.__qualname__,
                    "__doc__": admin_class.__doc__,
                },
            )
        super().register(model_or_iterable, admin_class, **options)


def is_storable_text(value):
    """Whether the database can hold `value`: PostgreSQL refuses a NUL, and a lone
    surrogate cannot be encoded at all."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CheckedChangeList(ChangeList):
    """A changelist that uses only what its filters offer.

    Django filters by any lookup on a model's own fields (a regex, say) and passes
    values to the database unchecked; here text the database cannot hold, a lookup
    no filter takes, a value a choices field does not have, or a date the hierarchy
    cannot reach raises Django's IncorrectLookupParameters instead: the list without
    them, flagged ?e=1.
    """

    def get_filters(self, request):
        requested = self.get_filters_params()
        for key, values in request.GET.lists():
            if not all(is_storable_text(text) for text in (key, *values)):
                raise IncorrectLookupParameters("The query string holds text the database cannot store.")
        self._check_date_hierarchy(requested)
        filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters = super().get_filters(request)
        # Django left these for a plain .filter(); the date hierarchy's own bounds
        # are among them too, but were not in the query string.
        unused = sorted(key for key in remaining if key in requested and not self._raw_id_popup_lookup(key, requested))
        if unused:
            raise IncorrectLookupParameters("No filter of this list takes %s." % ", ".join(unused))
        for spec in filter_specs:
            _check_choices(spec)
        return filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters

    def _check_date_hierarchy(self, requested):
        """Django catches a year, month or day int() refuses, but not one whose end
        (the next day, month or year) is past the calendar: 500 for year 9999."""
        if not self.date_hierarchy:
            return
        year, month, day = (requested.get("%s__%s" % (self.date_hierarchy, part)) for part in ("year", "month", "day"))
        if year is None:
            return
        try:
            start = datetime(int(year[-1]), int(month[-1]) if month else 1, int(day[-1]) if day else 1)
            if day:
                start + timedelta(days=1)
            elif month:
                start + timedelta(days=32)
            else:
                start.replace(year=start.year + 1)
        except (ValueError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def _raw_id_popup_lookup(self, key, requested):
        """The lookups a raw-id widget's popup sends for a ForeignKey's limit_choices_to,
        which Django's lookup_allowed lets through too."""
        for lookup in self.model._meta.related_fkey_lookups:
            params = url_params_from_lookup_dict(lookup() if callable(lookup) else lookup)
            if key in params and all(value == params[key] for value in requested[key]):
                return True
        return False


def _check_choices(spec):
    if isinstance(spec, ChoicesFieldListFilter) and spec.lookup_val:
        offered = {str(value) for value, _label in spec.field.flatchoices}
        unknown = [value for value in spec.lookup_val if value not in offered]
        if unknown:
            raise IncorrectLookupParameters("%s has no choice %r." % (spec.field.verbose_name, unknown[0]))


@functools.cache
def checked_changelist(changelist):
    """An app's own ChangeList (DRF's token list, say) with CheckedChangeList's checks."""
    return type(changelist.__name__, (CheckedChangeList, changelist), {"__module__": changelist.__module__})


class CheckedParametersAdmin:
    """Mixed into every ModelAdmin registered on CRMSyncAdminSite: its list checks
    the query string, and its actions run only on ids of its model."""

    def changelist_view(self, request, extra_context=None):
        # Django redirects a list whose query string it cannot use to ?e=1, silently.
        if request.method == "GET" and ERROR_FLAG in request.GET:
            self.message_user(
                request,
                _(
                    "The address of this list held a filter or value the list does not offer (a mistyped or "
                    "outdated link?), so it shows all %s."
                )
                % self.opts.verbose_name_plural,
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    def get_changelist(self, request, **kwargs):
        changelist = super().get_changelist(request, **kwargs)
        if issubclass(changelist, CheckedChangeList):
            return changelist
        if changelist is ChangeList:
            return CheckedChangeList
        return checked_changelist(changelist)

    def response_action(self, request, queryset):
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if not all(self._is_an_id(value) for value in selected):
            self.message_user(
                request,
                _(
                    "The selection holds something that is not the id of a %s. Nothing was changed; "
                    "select the items again."
                )
                % self.opts.verbose_name,
                messages.ERROR,
            )
            return None
        return super().response_action(request, queryset)

    def _is_an_id(self, value):
        if not is_storable_text(value):
            return False
        pk = self.opts.pk
        try:
            # The validators hold the database's integer range: SQLite cannot even
            # take a number past it as a parameter.
            pk.run_validators(pk.to_python(value))
        except ValidationError:
            return False
        return True
