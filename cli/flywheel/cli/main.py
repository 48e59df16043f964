"""The `flywheel` command: the operator's front door."""

import typer

app = typer.Typer(help="Flywheel: operate the event-driven ML loop from a terminal.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print Flywheel's version."""
    from importlib.metadata import version as installed

    typer.echo(installed("flywheel-cli"))
