"""The HTTP service (`pulse serve`; hosted by `pulse run` / `pulse up` too).

One ASGI app (FastAPI on uvicorn: the OpenAPI document comes from the handlers' types,
and uvicorn runs it in a thread of the flow's process, which holds an embedded store):

- :mod:`.auth`: API keys (hashed in the settings) -> a :class:`~.auth.Principal` with a
  tenant and scopes; every route names the scope it needs.
- :mod:`.context`: what the routes share (settings, the store, the event log, telemetry).
- :mod:`.app`: the app factory, one router per concern (health, ingest, reads, SQL,
  silences, metrics).
- :mod:`.server`: uvicorn in a thread; :mod:`.hosting` starts it with its context;
  :mod:`.discovery` writes ``<home>/service.json`` so local commands find it.
"""
