"""`python -m runner ...`: the Hydra entry point."""

from runner.main import main

if __name__ == "__main__":
    main()
