"""HTTP: the Starlette app, its middleware, routes, errors, OpenAPI and health."""
