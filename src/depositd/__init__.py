"""depositd: credit every crypto deposit exactly once and tell everyone who needs to know."""

__version__ = "0.1.0"
