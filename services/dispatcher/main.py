"""Entry point: `python -m services.dispatcher.main`."""

from services.dispatcher.service import start
from shared.service import run_service


def main() -> None:
    run_service("dispatcher", start)


if __name__ == "__main__":
    main()
