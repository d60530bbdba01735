"""The HTTP door to a running app: REST API ``/api/v1``, a server-sent-events feed and the dashboard page.

Sits on top of the ``App`` service (``edge_detect.app``) like the CLI: it uses only the calls listed in
:mod:`edge_detect.server.app_protocol`, and nothing below ``server/`` and ``cli/`` imports it.

* :mod:`~edge_detect.server.settings` -- the config's ``server:`` section, bind and token rules (no web framework
  imported; the CLI checks before anything heavy starts);
* :mod:`~edge_detect.server.api` -- :func:`~edge_detect.server.api.create_app`: the FastAPI application;
* :mod:`~edge_detect.server.models`, :mod:`~edge_detect.server.errors`, :mod:`~edge_detect.server.views` -- request
  validation, error answers, JSON views with credentials masked;
* :mod:`~edge_detect.server.store` -- the bounded event store fed by the bus (and the recorder's clips);
* :mod:`~edge_detect.server.frames` -- latest frames as JPEG, shared by snapshots and MJPEG streams;
* :mod:`~edge_detect.server.runner` -- uvicorn in the foreground or on a thread;
* :mod:`~edge_detect.server.persist` -- ``--save-config``;
* ``static/`` -- the page (plain HTML/CSS/JS, no build step).

Needs the ``server`` extra (``pip install 'edge-detect[server]'``: FastAPI, uvicorn).
"""
