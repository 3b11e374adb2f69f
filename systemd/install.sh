#!/bin/sh
# Install pomabotd as a systemd service, or upgrade an installed one: run as root from a
# checkout of the version to install.
#
#   sh systemd/install.sh                  install or upgrade, start, and check it answers
#   sh systemd/install.sh --files-only     only put the files in place (no venv, no user,
#                                          no systemctl); with DESTDIR=DIR, under DIR
#
# An upgrade is the same command from a checkout of the new version: the code in
# /opt/pomabotd, the unit, the user, the logrotate rules and the docs are replaced; the
# configuration /etc/pomabotd/pomabotd.toml and the env file /etc/pomabotd/env are the
# operator's and are never overwritten; the ledger in /var/lib/pomabotd is kept as it is.
set -eu

files_only=false
case "${1:-}" in
    --files-only) files_only=true ;;
    "") ;;
    *) echo "usage: sh systemd/install.sh [--files-only]" >&2; exit 2 ;;
esac
root="${DESTDIR:-}"
cd "$(dirname "$0")/.."

if [ "$files_only" = false ]; then
    # Debian 12 and other current distributions refuse pip into the system's Python.
    python3 -m venv /opt/pomabotd
    /opt/pomabotd/bin/pip install --quiet --upgrade .
fi

install -D -m 0644 systemd/pomabotd.service "$root/etc/systemd/system/pomabotd.service"
install -D -m 0644 systemd/pomabotd.sysusers "$root/etc/sysusers.d/pomabotd.conf"
install -D -m 0644 config/logrotate.conf "$root/etc/logrotate.d/pomabotd"
install -d -m 0755 "$root/etc/pomabotd" "$root/usr/share/doc/pomabotd" "$root/usr/local/bin"
# The configuration and the env file are the operator's: an upgrade keeps them.
if [ ! -e "$root/etc/pomabotd/pomabotd.toml" ]; then
    install -m 0644 config/service.toml "$root/etc/pomabotd/pomabotd.toml"
fi
if [ ! -e "$root/etc/pomabotd/env" ]; then
    install -m 0640 /dev/null "$root/etc/pomabotd/env"
fi
# The docs the unit's Documentation= names, and the example with every key.
install -m 0644 README.md CHANGELOG.md docs/*.md "$root/usr/share/doc/pomabotd/"
install -m 0644 config/pomabotd.toml "$root/usr/share/doc/pomabotd/pomabotd.example.toml"
ln -sf /opt/pomabotd/bin/pomabotd "$root/usr/local/bin/pomabotd"

if [ "$files_only" = true ]; then
    exit 0
fi

systemd-sysusers /etc/sysusers.d/pomabotd.conf
# The env file may hold secrets (a webhook URL, a status token): root and the group only.
chgrp pomabotd /etc/pomabotd/env
chmod 0640 /etc/pomabotd/env
systemctl daemon-reload
systemctl enable pomabotd.service
# Type=notify: this returns once the daemon is ready (its pool warm, its ledger checked).
systemctl restart pomabotd.service

# Smoke test: the daemon answers, and the first cycle of this start completes.
pomabotd status
tries=0
until pomabotd status --json | grep -q '"cycles_ok":[1-9]'; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
        echo "pomabotd answers but no cycle completed within 2 minutes; see:" \
             "journalctl -u pomabotd -p warning" >&2
        exit 1
    fi
    sleep 2
done
pomabotd status
echo "pomabotd is installed and running; let operators read its outputs:" \
     "usermod -aG pomabotd NAME"
