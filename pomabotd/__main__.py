"""`python -m pomabotd` runs the same command line as the `pomabotd` script."""

from pomabotd.cli import main

if __name__ == "__main__":
    main()
