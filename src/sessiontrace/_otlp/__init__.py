"""OTLP, the OpenTelemetry wire format: our records to ``ExportTraceServiceRequest``
(``_encode``, used by the exporter in ``_export._otlp``) and back (``_decode``, used
by the server's ``/v1/traces``). ``_keys`` names every attribute both directions use.

Importing this package imports nothing third-party; ``_encode``/``_decode`` need the
``otlp`` extra (``opentelemetry-proto`` and ``protobuf``).
"""
