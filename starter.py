"""Launch and steer Ensemble runs: `python starter.py --help` (installed: `ensemble --help`)."""

from ensemble.cli import run

if __name__ == "__main__":
    run()
