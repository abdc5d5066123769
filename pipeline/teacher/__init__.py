"""Teacher inference, end to end: discovery and the shared plan, flip-test inference into the cache, shards.

``discovery`` reads every source once and writes the plan (``plan``); ``inference`` runs the teacher over a
plan's slot into the cache; ``shards`` runs one slot in this process, a subprocess or another machine;
``records`` maps pose records to cache columns and back.
"""
