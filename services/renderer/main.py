"""Entry point: `python -m services.renderer.main`."""

from services.renderer.service import start
from shared.service import run_service


def main() -> None:
    run_service("renderer", start)


if __name__ == "__main__":
    main()
