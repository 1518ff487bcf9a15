#!/usr/bin/env bash
# Builds jobkeeper's Debian package with cargo-deb (installed when missing), installs it with
# dpkg -i on this machine, checks what it installed (the unit passes `systemd-analyze verify`,
# `jobkeeper --version` runs, the user, folders and conffile exist, the shipped config is valid
# alone, the schema and CI templates are there) and purges it, which removes /etc/jobkeeper.
# Needs root (or sudo). Usage: scripts/deb-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet
cargo deb --locked --strip --quiet
deb="$(ls -t target/debian/jobkeeper_*.deb | head -1)"
echo "package: $deb ($(du -h "$deb" | cut -f1))"

cleanup() { as_root dpkg --purge jobkeeper >/dev/null 2>&1 || true; }
trap cleanup EXIT
as_root dpkg -i "$deb"
systemd-analyze verify /lib/systemd/system/jobkeeper.service
/usr/bin/jobkeeper --version
getent passwd jobkeeper >/dev/null || { echo "no jobkeeper user" >&2; exit 1; }
[ "$(stat -c %U /var/lib/jobkeeper)" = jobkeeper ] || { echo "/var/lib/jobkeeper is not jobkeeper's" >&2; exit 1; }
dpkg-query -W -f='${Conffiles}\n' jobkeeper | grep -q ' /etc/jobkeeper/config.yaml ' \
  || { echo "/etc/jobkeeper/config.yaml is not a conffile" >&2; exit 1; }
empty="$(mktemp -d)"
/usr/bin/jobkeeper validate "$empty" --config /etc/jobkeeper/config.yaml
rmdir "$empty"
# The config's own hint: the daemon config checked alone, where no job folder is.
(cd / && /usr/bin/jobkeeper validate --config /etc/jobkeeper/config.yaml)
# The schema and the CI templates docs/merge-requests.md names, where its links point.
for f in job.schema.json ci/github-actions.yml ci/gitlab-ci.yml merge-requests.md; do
  [ -s "/usr/share/doc/jobkeeper/$f" ] || { echo "the package lacks /usr/share/doc/jobkeeper/$f" >&2; exit 1; }
done
/usr/bin/jobkeeper schema | cmp -s - /usr/share/doc/jobkeeper/job.schema.json \
  || { echo "the packaged job.schema.json is not what \`jobkeeper schema\` prints" >&2; exit 1; }
# A purge removes /etc/jobkeeper whole (Debian policy 10.7.3), files the operator added too.
echo token | as_root tee /etc/jobkeeper/api_token >/dev/null
as_root dpkg --purge jobkeeper
[ ! -e /etc/jobkeeper ] || { echo "dpkg --purge left /etc/jobkeeper: $(ls -A /etc/jobkeeper)" >&2; exit 1; }
echo "package: installed, checked and purged"
