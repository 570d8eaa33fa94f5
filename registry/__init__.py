"""The model registry: the client (:mod:`registry.client`: versions, aliases and update events) and
its command line (:mod:`registry.cli`, reached as ``python -m training list|show|promote|...``)."""
