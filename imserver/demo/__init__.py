"""`imserver demo`: a small city seeded through the protocol, a day of payments, a summary
and a picture of the network.

A client of the service, like the CLI and the benchmarks: it talks to the component over
XMPP with the protocol plugin (``plugins/``), through Prosody, as merchants, bots, users
and the admin would; it reads the database only through the service layer, to check the
numbers the bots were told.
"""
