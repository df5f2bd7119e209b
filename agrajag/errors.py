"""One exception tree: every error agrajag raises on purpose is an AgrajagError."""


class AgrajagError(Exception):
    """Base of every error agrajag raises on purpose."""


class ConfigError(AgrajagError):
    """A configuration file, key or flag is missing or wrong; the message names it."""
