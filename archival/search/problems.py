"""Error pages of the archive search that say what went wrong and what to do.

A bad page link, a filter the table does not offer or a table that is not
searchable answers with its status (400, 404) and a page in the site's look,
with a way back, instead of a bare status line.
"""

from __future__ import annotations

from django.shortcuts import render
from django.urls import reverse

# What a reader can do about each kind of refusal.
ADVICE = {
    400: "The link was edited or is out of date (a page position from another sort, a key value of the wrong "
    "type). Start again from the first page of the search, or correct the value.",
    404: "Pick the table from the list of searchable tables and use the filters the search form offers.",
}


def problem(request, status: int, message: str, table=None):
    """The error page: what was refused, why, and links back."""
    table_url = (
        reverse("search:table", args=[table.config.source_db, table.config.schema_name, table.config.table_name])
        if table is not None
        else None
    )
    context = {
        "status": status,
        "message": message[:1].upper() + message[1:],
        "advice": ADVICE.get(status, ""),
        "table": table,
        "table_url": table_url,
    }
    return render(request, "search/problem.html", context, status=status)
