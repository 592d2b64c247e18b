# The ptmon image: the collector (`ptmon collect`), and the simulator for the demo profile.
# docker-compose.yml builds it; alone: `docker build -t ptmon .`
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TZ=Asia/Shanghai

# sqlite3: the ledger's online backup (`sqlite3 ledger.sqlite ".backup ..."`, docs/deploy.md);
# tzdata: Shanghai time in the logs (the KPIs use Asia/Shanghai whatever the host's zone).
RUN apt-get update \
 && apt-get install -y --no-install-recommends sqlite3 tzdata \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /var/lib/ptmon --shell /usr/sbin/nologin ptmon \
 && install -d -o ptmon -g ptmon /var/lib/ptmon

WORKDIR /opt/ptmon

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir collector simulators \
 && touch collector/__init__.py simulators/__init__.py \
 && pip install . \
 && pip uninstall -y ptmon \
 && rm -rf collector simulators build *.egg-info

# Installed in place, so ptmon finds rules/ beside its package, as in a checkout. The demo
# profile's district (114,416 devices) is generated once, here.
COPY collector collector
COPY simulators simulators
COPY rules rules
RUN pip install --no-deps -e . \
 && ptmon rules check \
 && mkdir demo \
 && ptmon registry generate --seed 1 --out demo/registry.csv 2>/dev/null

USER ptmon
EXPOSE 9464
VOLUME ["/var/lib/ptmon"]
ENTRYPOINT ["ptmon"]
CMD ["collect", "--config", "/etc/ptmon/ptmon.toml"]
