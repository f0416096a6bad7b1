# One image for every batchyard service; compose.yaml chooses the service by its command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY contracts ./contracts
COPY shared ./shared
COPY services ./services
COPY cli ./cli
RUN pip install . \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/batchyard batchyard

USER batchyard
ENV BATCHYARD_DATA_DIR=/var/lib/batchyard \
    BATCHYARD_API_HOST=0.0.0.0
EXPOSE 8080
CMD ["python", "-m", "services.api.main"]
