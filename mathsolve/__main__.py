"""`python -m mathsolve` is the same program as `mathsolve`."""

from mathsolve.cli import main

if __name__ == "__main__":
    main()
