"""Entry point: `python -m services.logarchiver.main`."""

from services.logarchiver.service import start
from shared.service import run_service


def main() -> None:
    run_service("logarchiver", start)


if __name__ == "__main__":
    main()
