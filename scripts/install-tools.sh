#!/usr/bin/env bash
# Installs the external tools some tests use (promtool for the metrics check,
# the PostgreSQL client). Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v psql >/dev/null || need+=(postgresql-client)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them with apt-get (as root)" >&2
  fi
fi
