"""Exporters that send finished traces somewhere other than the embedded store.

``HttpExporter`` is a pipeline ``Sink`` that posts batches to a sessiontrace server
(``sessiontrace ui`` / ``sessiontrace.server``); ``encode_batch`` is the JSON wire
format it speaks, kept separate so another transport can sit beside it.
"""

from ._http import ExportRejectedError, HttpExporter
from ._wire import WIRE_VERSION, encode_batch

__all__ = ["WIRE_VERSION", "ExportRejectedError", "HttpExporter", "encode_batch"]
