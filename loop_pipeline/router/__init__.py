"""The router: an OpenAI-compatible service that serves the champion, escalates edge cases to the
frontier model and writes every call back into the loop (``loop serve``).

Modules: ``settings`` (RouterSettings), ``chat_request`` (reading a request), ``policy`` (the routing
rules), ``backends/`` (in-process transformers with micro-batching, OpenAI-compatible URLs),
``champion`` + ``loading`` (the registry watcher and hot swap), ``service`` (one request end to
end), ``records`` (the native trace and costs), ``trace_writer`` (rotated JSONL segments),
``metrics``, ``auth``, ``errors``, ``routes/`` (one module per endpoint group), ``app``.

Importing this package imports no torch, transformers, mlflow or Dagster: those load with a local
backend, on the watcher's thread.
"""

from loop_pipeline.router.app import create_app
from loop_pipeline.router.settings import RouterSettings

__all__ = ["RouterSettings", "create_app"]
