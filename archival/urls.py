from django.contrib.auth.views import LogoutView
from django.urls import include, path

from archival.search import views as search_views

search_patterns = [
    path("", search_views.index, name="index"),
    path("login/", search_views.SearchLoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(next_page="search:login"), name="logout"),
    path("<str:source_db>/<str:schema>/<str:table>/", search_views.table_search, name="table"),
    path("<str:source_db>/<str:schema>/<str:table>/row/", search_views.row_detail, name="row"),
    path("<str:source_db>/<str:schema>/<str:table>/export.csv", search_views.export_csv, name="export"),
]

urlpatterns: list = [
    path("search/", include((search_patterns, "search"))),
]
