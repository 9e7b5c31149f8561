def register(sub) -> None:
    """Pipeline subcommands (extract, load, ...) are added here."""
