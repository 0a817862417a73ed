"""The HTTP API (FastAPI) under /api/v1, served by the app's own process and port: app.py hands
`api.server.api_routes()` to `st.App`. Docs at /api/docs, the OpenAPI schema at /api/openapi.json.

A front end like the pages and the CLI: each endpoint checks the token's user and calls one
service of the core; feedback.client is the Python client for it.
"""
