"""The XMPP layer: translates stanzas to service calls and answers back. Decides nothing."""
