#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need (PostgreSQL and
# Redis servers, and Chromium for the browser tests of the status page and
# the HTML report), when they are missing. Needs root for apt-get.
set -euo pipefail

log() { printf '[deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	missing+=(postgresql postgresql-contrib)
fi
if ! command -v redis-server >/dev/null 2>&1; then
	missing+=(redis-server)
fi
if ! command -v chromium >/dev/null 2>&1; then
	missing+=(chromium)
fi
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		log "missing packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}"
		exit 1
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL refuses to run as root; the test harness runs it as this user.
pg_user=${WARDEN_PG_USER:-postgres}
if [[ $(id -u) -eq 0 ]] && ! id "$pg_user" >/dev/null 2>&1; then
	log "creating unprivileged user $pg_user for the test PostgreSQL"
	useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
fi
log "PostgreSQL, Redis and Chromium binaries present"
