"""The append-only log: event catalog, stores, hash chain, encryption of sensitive fields.

One module per job: ``store`` (the event log's interface, values, ``open_store``),
``data_keys`` and ``rejections`` (the store's two other interfaces), ``errors``,
``clock``, ``sql`` (statements and methods both SQL backends share), ``sqlite`` and
``postgres`` (each backend's own), ``database`` (what a store tells about its
database), ``chain``, ``crypto``, ``digest``, ``export``, ``events``.
"""
