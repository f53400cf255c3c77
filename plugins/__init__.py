"""slixmpp plugins shared by the component and by client bots."""
