"""The service: settings, JWT verification, the deciders (``lifecycle``, ``forge.decider``)
and the generic shell that runs them (``shell``), HTTP routes, admin API, CLI."""
