# One Dockerfile, two targets; env and the command pick what a container runs:
#   --target light    (~light: Python and the Google clients, no browser)
#                     the API (`htbase serve`, SERVICE_ROLE=api), the summarizer, the dead-letter
#                     handler, housekeeping, the migrate job (`htbase migrate`), the emulator bootstrap
#   --target browser  (the default: the last stage) adds Chromium, fonts, Node + SingleFile,
#                     Playwright, trafilatura and monolith: the archivers, and the all-in-one process
#   push services:    functions-framework --source functions/main.py --target archive_pdf \
#                       --host 0.0.0.0 --port 8080   (archive_*, summarize, dead_letter, housekeeping)

# SingleFile CLI, installed exactly as package-lock.json says.
FROM node:20.20.2-bookworm-slim AS node
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# monolith is not packaged for Debian bookworm: take the upstream release binary.
FROM debian:bookworm-slim AS monolith
ARG MONOLITH_VERSION=2.10.1
# Upstream publishes no checksums. Pass the hash of the binary you reviewed
# (--build-arg MONOLITH_SHA256=...) and the build refuses any other; it prints the hash either way.
ARG MONOLITH_SHA256=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN case "$(dpkg --print-architecture)" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=aarch64 ;; \
        *) echo "monolith has no release binary for $(dpkg --print-architecture)" >&2; exit 1 ;; \
    esac \
    && curl -fsSL -o /monolith \
        "https://github.com/Y2Z/monolith/releases/download/v${MONOLITH_VERSION}/monolith-gnu-linux-${arch}" \
    && sha256sum /monolith \
    && if [ -n "${MONOLITH_SHA256}" ]; then echo "${MONOLITH_SHA256}  /monolith" | sha256sum -c -; fi \
    && chmod 0755 /monolith

# What every role shares: Python, the web stack, the ledger and the Google Cloud clients.
FROM python:3.11-slim-bookworm AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Names that Settings.from_env reads (htbase/config.py).
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    LOCAL_STORAGE_PATH=/data/archives
WORKDIR /app
RUN groupadd --gid 10001 htbase \
    && useradd --uid 10001 --gid 10001 --create-home htbase \
    && mkdir -p /data \
    && chown 10001:10001 /data
# Dependencies before the source, so a code change does not reinstall them.
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt -c requirements/constraints.txt
EXPOSE 8080
CMD ["htbase", "serve", "--host", "0.0.0.0"]

# The capture tools on top, before the source for the same reason.
FROM python AS browser-tools
# Debian's Chromium headless shell renders every capture (the same Blink as the full browser,
# at well under half its CPU per capture); the fonts make Latin, CJK and emoji pages render
# as they do on a desktop. Versions come from bookworm(-security): pinning them would only
# block security updates, hence the DL3008 exception.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        chromium-headless-shell \
        fonts-dejavu-core \
        fonts-liberation \
        fonts-noto-cjk \
        fonts-noto-color-emoji \
        fonts-noto-core \
    && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=monolith /monolith /usr/local/bin/monolith
RUN node --version && monolith --version
RUN pip install -r requirements/all-in-one.txt -c requirements/constraints.txt
COPY --from=node /app/node_modules/ node_modules/
ENV CHROMIUM_PATH=/usr/bin/chromium-headless-shell \
    SINGLEFILE_PATH=/app/node_modules/.bin/single-file \
    MONOLITH_PATH=/usr/local/bin/monolith

# The roles that never open a browser: small and quick to start cold.
FROM python AS light
COPY . .
# Editable, so that the code runs from /app, where config.py finds its files.
RUN pip install --no-deps -e .
USER 10001:10001

# Every role (the default target).
FROM browser-tools AS browser
COPY . .
RUN pip install --no-deps -e .
USER 10001:10001
