"""The dashboard's routes (added to the app's own in ``api.http.app``)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.dashboard import pages

routes: list[BaseRoute] = [
    Route("/dashboard", pages.dashboard, methods=["GET"]),
    Route("/favicon.ico", pages.favicon, methods=["GET"]),
    Route("/dashboard/login", pages.login_form, methods=["GET"]),
    Route("/dashboard/login", pages.login, methods=["POST"]),
    Route("/dashboard/logout", pages.logout, methods=["POST"]),
    Route("/dashboard/api/chat", pages.try_it, methods=["POST"]),
    Route("/admin/doctor", pages.doctor_status, methods=["GET"]),
    Route("/admin/doctor", pages.doctor_run, methods=["POST"]),
    Mount("/dashboard/static", StaticFiles(directory=pages.STATIC_DIR), name="dashboard-static"),
]
