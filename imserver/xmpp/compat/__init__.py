"""Private parts of libraries that the XMPP layer relies on, one module per library.

Each module declares the versions its code was read against and every private name it
uses (:mod:`imserver.store.compat` has the types and explains the scheme), and is the
only place that touches those names; tests/test_compat.py fails when one moves.
"""
