"""The ops page's pages: one module a page (or a few close ones), each with ``setup(app)`` adding its routes.
``home`` (login, logout, the overview, operators, the auditor's page) is the frame's; the data pages are listed in
``monitoring.app.VIEW_MODULES``."""
