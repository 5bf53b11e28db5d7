# Shared helpers for the suites in scripts/suites/ (sourced, not run).
#
# Each suite installs what it needs from the package registries only, never a
# downloaded browser or binary. apt waits for the dpkg lock, so suites (and
# developers running several at once) do not trip over each other.

suite_step() { printf '  --> %s\n' "$*"; }
suite_die() { printf 'suite error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=${APT_UPDATED:-0}
# ensure_apt COMMAND PACKAGE: install PACKAGE with apt-get unless COMMAND exists.
ensure_apt() {
    local cmd=$1 pkg=$2
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ]; then return 0; fi
    [ "$(id -u)" -eq 0 ] || suite_die "$cmd missing: install the Debian package $pkg (or run as root)"
    suite_step "installing $pkg with apt-get"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq || suite_die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "$pkg" >/dev/null || suite_die "apt-get install $pkg failed"
}

# ensure_pip MODULE PACKAGE[==VERSION]: pip-install PACKAGE unless python can import MODULE.
ensure_pip() {
    local module=$1 pkg=$2
    if python3 -c "import $module" >/dev/null 2>&1; then return 0; fi
    suite_step "installing $pkg with pip"
    python3 -m pip install --quiet --disable-pip-version-check "$pkg" \
        || suite_die "pip install $pkg failed"
}

# The castellan binary the suites run (scripts/test.sh builds and exports it).
castellan_bin() {
    [ -n "${CASTELLAN_TEST_BIN:-}" ] && [ -x "$CASTELLAN_TEST_BIN" ] \
        || suite_die "CASTELLAN_TEST_BIN is not set to a built castellan (run through scripts/test.sh)"
    printf '%s\n' "$CASTELLAN_TEST_BIN"
}
