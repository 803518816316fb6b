"""minnoctl: the admin tool for the PostgreSQL database behind Minno."""

__version__ = "0.1.0"
