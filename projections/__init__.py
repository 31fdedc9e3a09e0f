"""Read models as pure folds over the log, and the runner that keeps them current.

Persistence: ``storage`` (the interface and what both databases share),
``storage_sqlite`` / ``storage_postgres`` (each database's own), ``locks``, and
``backends``, the one factory that picks them by the store's database kind.
"""
