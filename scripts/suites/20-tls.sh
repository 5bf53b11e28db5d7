#!/usr/bin/env bash
# Suite: scan castellan's native TLS with sslyze (PyPI) and fail on any
# finding it rates insecure.
# covers: ASVS-12.1.1, ASVS-12.1.2, N63B-23
#
# castellan runs in the production profile with a certificate from a test
# CA made here with openssl; sslyze checks it against Mozilla's
# "intermediate" profile and probes the known TLS vulnerabilities. The
# JSON result and a JUnit report go to $CASTELLAN_TEST_REPORTS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/suites/lib.sh
. scripts/suites/lib.sh

ensure_apt openssl openssl
ensure_apt curl curl
ensure_pip sslyze sslyze
BIN=$(castellan_bin)
REPORTS=${CASTELLAN_TEST_REPORTS:-$(mktemp -d)}
mkdir -p "$REPORTS"

WORK=$(mktemp -d /tmp/castellan-tls.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

suite_step "test CA and server certificate (ECDSA P-256)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=castellan suite CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > "$WORK/ext.cnf"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$WORK/ext.cnf" -out "$WORK/server.pem" 2>/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
suite_step "starting castellan (production, native TLS) on 127.0.0.1:$PORT"
# CI runs the suites as root; production refuses root without this.
CASTELLAN_ALLOW_ROOT=true \
CASTELLAN_PROFILE=production \
CASTELLAN_SECRET_KEY=$(openssl rand -base64 32) \
CASTELLAN_PUBLIC_BASE_URL="https://localhost:$PORT" \
CASTELLAN_LISTEN="127.0.0.1:$PORT" \
CASTELLAN_DATA_DIR="$WORK/data" \
CASTELLAN_MAIL_DIR="$WORK/mail" \
CASTELLAN_TLS_CERT_FILE="$WORK/server.pem" \
CASTELLAN_TLS_KEY_FILE="$WORK/server.key" \
    "$BIN" serve >"$WORK/castellan.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    if curl -fsS --cacert "$WORK/ca.pem" "https://localhost:$PORT/health/live" >/dev/null 2>&1; then break; fi
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/castellan.log" >&2; suite_die "castellan exited"; }
    sleep 0.2
done
curl -fsS --cacert "$WORK/ca.pem" "https://localhost:$PORT/health/live" >/dev/null \
    || { cat "$WORK/castellan.log" >&2; suite_die "castellan did not answer over HTTPS"; }

suite_step "sslyze (Mozilla intermediate profile and vulnerability scans)"
set +e
python3 -m sslyze --mozilla_config=intermediate --certinfo_ca_file "$WORK/ca.pem" \
    --json_out "$REPORTS/sslyze.json" "localhost:$PORT" >"$WORK/sslyze.txt" 2>&1
set -e
cat "$WORK/sslyze.txt"
python3 tests/tls/sslyze_verdict.py "$REPORTS/sslyze.json" "$WORK/sslyze.txt" "$REPORTS/tls-sslyze.xml"
