"""Entry point: `python -m services.api.main` serves the HTTP API."""

from aiohttp import web

from services.api.app import create_app
from shared.logging import setup_logging
from shared.settings import Settings

# Open SSE tails never finish on their own; waiting aiohttp's default 60 s for them would stall shutdown.
SHUTDOWN_GRACE_S = 2.0


def main() -> None:
    settings = Settings()
    setup_logging("api", settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        print=None,
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )


if __name__ == "__main__":
    main()
