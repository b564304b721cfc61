#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system servers the tests and the demo start
# (nsd, postfix; unbound + ldnsutils for the DNSSEC-signed DANE world), a virtualenv in .venv with the project and its test extras.
# Services are never enabled: tests and the demo start their own instances on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) for apt-get" >&2; exit 1; }
    SUDO="sudo"
fi

need_apt=()
for pkg_bin in nsd:/usr/sbin/nsd postfix:/usr/sbin/postfix nginx-light:/usr/sbin/nginx \
               gnutls-bin:/usr/bin/gnutls-cli testssl.sh:/usr/bin/testssl iproute2:/usr/sbin/ip \
               chromium:/usr/bin/chromium ldnsutils:/usr/bin/ldns-signzone unbound:/usr/sbin/unbound; do
    [ -x "${pkg_bin#*:}" ] || need_apt+=("${pkg_bin%%:*}")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} (not started as services)"
    # postfix asks a debconf question at install time; answer it so the install is non-interactive.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the dependency list changed since the last install.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test,ray]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# Extracted exim binaries (they cannot be installed beside postfix) and sslyze in its own venv (its
# pinned dependencies would clash with ours): fetched once into /var/cache/smtp-tls-survey.
.venv/bin/python -m worlds.exim >/dev/null
.venv/bin/python -m worlds.peers install >/dev/null
