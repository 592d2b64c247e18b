#!/bin/sh
# Mosquitto's entry point in docker-compose.yml: writes the password file and the ACL into the
# data volume from the environment (.env) and the mounted files, then runs the broker.
# Secrets never sit in the repository: passwords come from the environment, device and gateway
# accounts from passwd.devices (already hashed with mosquitto_passwd) copied into the volume.
set -eu

config=/mosquitto/config
data=/mosquitto/data
umask 077

passwd="$data/passwd.new"
rm -f "$passwd"
touch "$passwd"
add_user() {
    mosquitto_passwd -b "$passwd" "$1" "$2"
}

: "${MQTT_COLLECTOR_PASSWORD:?set MQTT_COLLECTOR_PASSWORD in .env}"
add_user "${MQTT_COLLECTOR_USERNAME:-ptmon-collector}" "$MQTT_COLLECTOR_PASSWORD"
if [ -n "${MQTT_SIMULATOR_PASSWORD:-}" ]; then
    add_user ptmon-simulator "$MQTT_SIMULATOR_PASSWORD"
fi
# The health check's account gets a new random password at every start.
od -An -N18 -tx1 /dev/urandom | tr -d ' \n' > "$data/.healthcheck"
add_user healthcheck "$(cat "$data/.healthcheck")"
if [ -f "$data/passwd.devices" ]; then
    cat "$data/passwd.devices" >> "$passwd"
fi
mv "$passwd" "$data/passwd"

cat "$config/acl" > "$data/acl"
if [ -f "$data/acl.gateways" ]; then
    cat "$data/acl.gateways" >> "$data/acl"
fi

chown -R mosquitto:mosquitto "$data"
exec /usr/sbin/mosquitto -c "$config/mosquitto.conf"
