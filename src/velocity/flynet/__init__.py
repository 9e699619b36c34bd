"""Fly's network on one Linux machine: the production topology, for tests and for trying the Fly path.

Network namespaces stand in for machines; two bridges join them as Fly's networks do:

* the **private network** (6PN), IPv6 only, one ``/48`` per organisation (``fdaa:0:1::/48``
  here), with Fly's resolver at ``fdaa::3`` answering ``.internal`` names (``dns``);
* the **proxy network**, IPv4, over which Fly's edge proxy reaches each machine's services
  (``edge``), as Fly's proxy reaches a machine that listens on ``0.0.0.0`` or ``::``.

``fabric`` makes the namespaces and links, ``dns`` is the resolver, ``edge`` the proxy, and
``topology`` puts the Machines API emulator, the orchestrator and the edge together
(docs/fly.md, "The topology on one machine").
"""
