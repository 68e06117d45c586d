"""grantlink: one-time connection links, encrypted credentials and fresh OAuth tokens."""
