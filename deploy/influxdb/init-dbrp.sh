#!/bin/sh
# InfluxDB 2.x first-start script (docker-compose.yml mounts it into /docker-entrypoint-initdb.d;
# the image runs it once, right after creating the org, the bucket and the admin token).
# Maps the InfluxQL database ptmon (retention policy autogen) to the ptmon bucket, so Grafana's
# InfluxQL datasource reads the bucket. 2.7+ would also offer a "virtual" mapping for a bucket
# named ptmon; the explicit one works on every 2.x and survives a renamed bucket.
set -eu
influx v1 dbrp create \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID" \
    --db "${INFLUX_DATABASE:-ptmon}" \
    --rp autogen \
    --default
