"""The gateway's HTTP front end: a thin Starlette app (see :func:`api.app.create_app`)."""
