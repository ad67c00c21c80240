"""The gateway's HTTP front end: a thin Starlette app (see :func:`api.http.app.create_app`)."""
