#!/usr/bin/env bash
# The project's one test command (see README "Run the tests"); CI runs it through .ci/run.
#
# 1. Installs what the tests need when it is missing: Debian packages dbus, gnome-keyring, libsecret-tools and
#    keyutils, systemd (for systemd-analyze), g++ (libFuzzer), grpcio for the python3 on PATH, the test OpenID
#    Provider's npm packages and Chromium with its driver; and a Python virtual environment in target/python with
#    this repository's Python package (`pip install ./python`, which brings the real pachyderm-sdk from PyPI) and
#    pytest. Installs run as root, or through sudo for other users; `apt-get update` runs only when something has
#    to be installed.
# 2. Runs, in order: `cargo fmt --check`, `cargo clippy --all-targets -- -D warnings`, and the whole test suite
#    (Rust, then the Python package's pytest suite) once inside a private D-Bus session with a fresh, unlocked
#    gnome-keyring whose files live in a temporary directory (so a developer's own keyring is never touched);
#    then every fuzz target for 15 seconds (scripts/fuzz.sh).
# Every step runs even when an earlier one failed; a summary follows, and the exit status is non-zero when any
# step failed. Works without a terminal or stdin (CI=true).
set -euo pipefail

cd "$(dirname "$0")/.."

KEYRING_PASSWORD="pachagent-test"

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'scripts/test.sh: %s\n' "$*" >&2
    exit 1
}

# Runs `apt-get`, `pip` and friends as root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "installing needs root: run as root, or install sudo"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# Dependencies

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# Debian packages, by a command each provides. dbus-run-session comes with dbus (dbus-bin); dbus-x11 is not needed
# because nothing here uses dbus-launch.
ensure_system_packages() {
    local -a missing=()
    command -v dbus-run-session >/dev/null 2>&1 || missing+=(dbus)
    command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
    command -v dbus-send >/dev/null 2>&1 || missing+=(dbus)
    command -v gnome-keyring-daemon >/dev/null 2>&1 || missing+=(gnome-keyring)
    command -v secret-tool >/dev/null 2>&1 || missing+=(libsecret-tools)
    command -v keyctl >/dev/null 2>&1 || missing+=(keyutils)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    # libFuzzer (built by the libfuzzer-sys crate for scripts/fuzz.sh) is C++.
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    if [ "${#missing[@]}" -gt 0 ]; then
        # shellcheck disable=SC2046 # word splitting is the point: a de-duplicated list of package names
        apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
    fi
}

# The pachd-dev tests run `python3 -c 'import grpc'` with the python3 on PATH. Debian's python3-grpcio only helps
# Debian's own python; a pyenv (or other) python3 gets grpcio from pip.
ensure_python_grpc() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if python3 -c 'import grpc' >/dev/null 2>&1; then
        return 0
    fi
    local prefix
    prefix="$(python3 -c 'import sys; print(sys.prefix)')"
    if [ "$prefix" = "/usr" ]; then
        apt_install python3-grpcio
    else
        log "python3 -m pip install grpcio (python3 is $(command -v python3), prefix $prefix)"
        # A user's own python (pyenv, venv) is installed into as that user, never through sudo.
        if [ "$(id -u)" -eq 0 ] || [ -w "$prefix" ]; then
            python3 -m pip install --quiet --disable-pip-version-check grpcio
        else
            python3 -m pip install --quiet --disable-pip-version-check --user grpcio
        fi
    fi
    python3 -c 'import grpc' || die "grpcio is still not importable by $(command -v python3)"
}

# The Python package's environment: target/python, a virtual environment with `pip install ./python` (the package
# builds its gRPC stubs from proto/ with grpcio-tools, and depends on grpcio and the real pachyderm-sdk) and pytest.
# Reinstalled every run, so it always matches the tree. The Rust tests that drive pachyderm-sdk use it too.
PYTHON_ENV="$PWD/target/python"
ensure_python_env() {
    if [ ! -x "$PYTHON_ENV/bin/python" ]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        log "python3 -m venv $PYTHON_ENV"
        python3 -m venv "$PYTHON_ENV"
    fi
    log "pip install ./python pytest (into $PYTHON_ENV)"
    "$PYTHON_ENV/bin/python" -m pip install --quiet --disable-pip-version-check ./python pytest
    "$PYTHON_ENV/bin/python" -c 'import pachagent, pachyderm_sdk, pytest' ||
        die "the pachagent package, pachyderm-sdk or pytest is not importable from $PYTHON_ENV"
}

# The OpenID Provider of the login tests (npm oidc-provider, pinned by tests/oidc/package-lock.json). Needs Node.js
# 20 or later with npm; a missing or older node is reported, not installed (Debian 12's own nodejs is 18). `npm ci`
# runs when node_modules is missing or older than the lockfile (npm writes node_modules/.package-lock.json).
ensure_oidc_provider() {
    command -v node >/dev/null 2>&1 || die "node is missing: install Node.js 20 or later (with npm) for the login tests"
    command -v npm >/dev/null 2>&1 || die "npm is missing: install it alongside node for the login tests"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$major" -ge 20 ] || die "node $(node --version) is too old for tests/oidc (oidc-provider 9): install Node.js 20 or later"
    local installed=tests/oidc/node_modules/.package-lock.json
    if [ ! -f "$installed" ] || [ tests/oidc/package-lock.json -nt "$installed" ] ||
        [ ! -f tests/oidc/node_modules/oidc-provider/package.json ]; then
        log "npm ci in tests/oidc"
        (cd tests/oidc && npm ci --no-audit --no-fund </dev/null)
    fi
}

# The headless browser of the browser-login tests: Debian's chromium and chromedriver (tests/support/chromium.rs).
ensure_chromium() {
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        apt_install chromium chromium-driver
    fi
}

prepare() {
    ensure_system_packages
    ensure_python_grpc
    ensure_python_env
    ensure_oidc_provider
    ensure_chromium
    command -v cargo-nextest >/dev/null 2>&1 || die "cargo-nextest is missing: cargo install cargo-nextest --locked"
}

# ---------------------------------------------------------------------------------------------------------------
# Steps

declare -a SUMMARY=()
declare -a FAILED_TESTS=()
FAILED=0
# A CI run builds once from a clean clone: incremental compilation's caches would only take disk (1.6 GB).
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi

# Where the test step keeps nextest's output (read back for the summary).
export NEXTEST_LOG="${NEXTEST_LOG:-$PWD/target/nextest-output.log}"

# run_step NAME COMMAND...: runs one step, records its outcome, and carries on whatever happened.
run_step() {
    local name="$1" start=$SECONDS rc=0
    shift
    log "$name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("ok      $name ($((SECONDS - start)) s)")
    else
        SUMMARY+=("FAILED  $name (exit $rc after $((SECONDS - start)) s)")
        FAILED=1
    fi
}

# The test suite, in a D-Bus session of its own with a gnome-keyring that keeps its files in a temporary
# directory. The keyring is created and unlocked with a throwaway password, and checked to be unlocked before a
# single test runs, so a keyring problem shows up as such and not as a hundred failing tests.
run_tests_in_keyring_session() {
    local dir rc=0
    dir="$(mktemp -d "${TMPDIR:-/tmp}/pachagent-test.XXXXXX")"
    mkdir -p "$dir/data" "$dir/run"
    chmod 700 "$dir/run"
    env -u DBUS_SESSION_BUS_ADDRESS -u GNOME_KEYRING_CONTROL \
        XDG_DATA_HOME="$dir/data" XDG_RUNTIME_DIR="$dir/run" PACHAGENT_TEST_KEYRING_PASSWORD="$KEYRING_PASSWORD" \
        dbus-run-session -- bash scripts/test.sh --inside-keyring-session </dev/null || rc=$?
    rm -rf "$dir"
    # The tests nextest reported as failed (FAIL, TIMEOUT, SIGSEGV, ...) in its closing lines, for the summary: the
    # fuzz step's output comes after nextest's, so without this a failure's name is far up the log.
    if [ "$rc" -ne 0 ] && [ -f "$NEXTEST_LOG" ]; then
        local line
        while IFS= read -r line; do
            FAILED_TESTS+=("$line")
        done < <(sed -n '/^ *Summary \[/,$p' "$NEXTEST_LOG" | grep -E '^ *(FAIL|TIMEOUT|SIG[A-Z]+|LEAK|ABORT)' | sed 's/^ *//' | sort -u)
    fi
    return "$rc"
}

# Where the suite's gnome-keyring writes its messages: if it dies mid-run (D-Bus then activates a fresh, locked
# one and every Secret Service test fails), this says why.
KEYRING_LOG="${KEYRING_LOG:-$PWD/target/gnome-keyring.log}"

# Runs inside dbus-run-session: start and check gnome-keyring, then the tests.
inside_keyring_session() {
    mkdir -p "$(dirname "$KEYRING_LOG")"
    : >"$KEYRING_LOG"
    # In the foreground (as a child of this shell) so that its stderr is kept and its end is noticed.
    printf '%s' "$PACHAGENT_TEST_KEYRING_PASSWORD" |
        gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>>"$KEYRING_LOG" &
    local keyring_child=$!
    # --unlock returns before the daemon owns its bus name; a call made earlier would make D-Bus start a second,
    # locked gnome-keyring. Wait (up to 10 s) for the name to have an owner.
    local tries=0
    until dbus-send --session --print-reply=literal --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q true; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || die "gnome-keyring-daemon did not take org.freedesktop.secrets on the private bus"
        sleep 0.1
    done
    local collection locked
    collection="$(dbus-send --session --print-reply=literal --dest=org.freedesktop.secrets /org/freedesktop/secrets \
        org.freedesktop.Secret.Service.ReadAlias string:default | tr -d '[:space:]')" ||
        die "no Secret Service answers on the private bus after gnome-keyring-daemon --unlock"
    [ -n "$collection" ] && [ "$collection" != "/" ] || die "gnome-keyring started without a default collection"
    locked="$(dbus-send --session --print-reply=literal --dest=org.freedesktop.secrets "$collection" \
        org.freedesktop.DBus.Properties.Get string:org.freedesktop.Secret.Collection string:Locked)" ||
        die "cannot read the Locked property of $collection"
    case "$locked" in
        *false*) printf '\ngnome-keyring is up on %s; %s is unlocked\n' "$DBUS_SESSION_BUS_ADDRESS" "$collection" >&2 ;;
        *) die "the keyring collection $collection is locked after gnome-keyring-daemon --unlock ($locked)" ;;
    esac
    local keyring_pid
    keyring_pid="$(secrets_pid || true)"
    [ "$keyring_pid" = "$keyring_child" ] ||
        printf 'note: org.freedesktop.secrets is owned by pid %s, not the gnome-keyring started here (%s)\n' \
            "$keyring_pid" "$keyring_child" >&2
    local rc=0
    mkdir -p "$(dirname "$NEXTEST_LOG")"
    # A copy of nextest's output goes to a file so that the summary at the very end can name the failed tests.
    cargo nextest run --no-fail-fast 2>&1 | tee "$NEXTEST_LOG" || rc=$?
    # nextest does not run doctests.
    cargo test --doc || rc=$?
    # The Python package against the debug binaries nextest just built (python/tests/conftest.py).
    (cd python && "$PYTHON_ENV/bin/python" -m pytest -q -p no:cacheprovider) || rc=$?
    if ! kill -0 "$keyring_child" 2>/dev/null; then
        printf '\nscripts/test.sh: the suite'"'"'s gnome-keyring (pid %s) died during the run; its log (%s):\n' \
            "$keyring_child" "$KEYRING_LOG" >&2
        tail -n 40 "$KEYRING_LOG" >&2
    fi
    # gnome-keyring-daemon does not always exit when its bus goes away: stop it when the tests are done.
    kill "$keyring_child" 2>/dev/null || true
    return "$rc"
}

# The pid of the process that owns org.freedesktop.secrets on the session bus, or nothing.
secrets_pid() {
    dbus-send --session --print-reply=literal --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets 2>/dev/null |
        awk '{ print $2 }'
}

main() {
    prepare
    run_step "cargo fmt --check" cargo fmt --check
    run_step "cargo fmt --check (fuzz targets)" cargo fmt --check --manifest-path fuzz/Cargo.toml
    run_step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
    run_step "tests (cargo nextest run + doctests + pytest python/tests, in a D-Bus session with gnome-keyring)" run_tests_in_keyring_session
    run_step "fuzz targets, 15 s each (scripts/fuzz.sh 15)" bash scripts/fuzz.sh 15

    printf '\n==> summary\n' >&2
    printf '  %s\n' "${SUMMARY[@]}" >&2
    if [ "${#FAILED_TESTS[@]}" -gt 0 ]; then
        printf '  failed tests (full output: %s):\n' "$NEXTEST_LOG" >&2
        printf '    %s\n' "${FAILED_TESTS[@]}" >&2
        # What each failure said, so that a run seen only by its last lines still tells why.
        printf '  their panics (first 80 lines):\n' >&2
        awk '/panicked at/ { n = 8 } /stack backtrace:|^ *note: run with/ { n = 0 } n > 0 { print "    " $0; n-- }' \
            "$NEXTEST_LOG" | head -n 80 >&2 || true
    fi
    if [ "$FAILED" -ne 0 ]; then
        printf 'scripts/test.sh: FAILED\n' >&2
        exit 1
    fi
    printf 'scripts/test.sh: all steps passed\n' >&2
}

if [ "${1:-}" = "--inside-keyring-session" ]; then
    inside_keyring_session
else
    main "$@"
fi
