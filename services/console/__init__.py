"""The web console, served by the query API's app under /console: server-rendered pages (Jinja2 with
autoescape everywhere, htmx for the live parts). `services.console.app.mount(app)` adds it; who may see
and do what is services/console/access.py's. docs/console.md, docs/adr/0002-console.md."""
