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
RUN mkdir -p collector simulators rules grafana/boards \
 && touch collector/__init__.py simulators/__init__.py rules/__init__.py grafana/__init__.py grafana/boards/__init__.py \
 && pip install . \
 && pip uninstall -y ptmon \
 && rm -rf collector simulators rules grafana build *.egg-info

# A regular install: the rules, scenarios and dashboards travel inside the package
# (importlib.resources), so ptmon works from any directory. The demo profile's district
# (114,416 devices) is generated once, here.
COPY collector collector
COPY simulators simulators
COPY rules rules
COPY grafana grafana
COPY setup.py ./
# gcc for the install only: it compiles the archive scanner (collector/kernels.c), then goes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --no-deps . \
 && apt-get purge -y --auto-remove gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python -c "import ptmon.kernels as k; assert k.available(), 'the compiled scanner was not built'" \
 && rm -rf collector simulators rules grafana build *.egg-info setup.py \
 && cd / && ptmon rules check \
 && mkdir /opt/ptmon/demo \
 && ptmon registry generate --seed 1 --out /opt/ptmon/demo/registry.csv 2>/dev/null

USER ptmon
EXPOSE 9464
VOLUME ["/var/lib/ptmon"]
ENTRYPOINT ["ptmon"]
CMD ["collect", "--config", "/etc/ptmon/ptmon.toml"]
