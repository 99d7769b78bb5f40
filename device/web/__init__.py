"""The device's own web page, served by ``kestrel run`` when ``web.enabled``.

:mod:`~device.web.hub` (a sink: the latest states, statuses, snapshots and events),
:mod:`~device.web.stream` (MJPEG, encoded only while watched), :mod:`~device.web.health`,
:mod:`~device.web.auth` (the token), :mod:`~device.web.app` (the routes) and
:mod:`~device.web.server` (uvicorn in a thread of the daemon). The page itself is plain
HTML/JS/CSS in ``static/``: no build step, nothing fetched from the internet.

Imported only when the page is enabled: Starlette and uvicorn cost a daemon without it nothing.
"""
