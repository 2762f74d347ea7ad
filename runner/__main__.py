"""`python -m runner ...`: the Hydra entry point."""

from runner.main import cli

if __name__ == "__main__":
    cli()
