"""``kestrel label``: label images in the browser, grouped by ``kestrel curate``.

``store`` (the folder: listing, moves with sidecars, the undo log, path checks), ``app`` (the
Starlette app and its JSON API), ``static/`` (the page: plain HTML, JS and CSS, no build step),
``cli`` (the command line).
"""
