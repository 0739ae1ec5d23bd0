#!/usr/bin/env bash
# dev.sh - install what is missing (Debian 12), build, and run the demo, the suite or benchmarks.
#   bash tests/dev.sh demo     build, then calibrate data/sample.h5 with the minmax recipe
#   bash tests/dev.sh check    build, then run the whole test suite (installs chromium for it)
#   bash tests/dev.sh bench    build (release), then run the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PACKAGES="gcc libc6-dev binutils pkg-config meson ninja-build libhdf5-dev zlib1g-dev liblua5.4-dev libcriterion-dev libjansson-dev libopenmpi-dev openmpi-bin"

missing_packages() {
    for p in $PACKAGES "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "dev.sh: installing $(echo $missing)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
}

build() {
    install_packages "$@"
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "${MESON_ARGS[@]}" >&2
    meson compile -C "$BUILD" >&2
}

# Criterion prints "Synthesis: Tested: N | Passing: N | Failing: N" per executable; add
# them up over the build directories given (a test program that died without one counts as
# one failure; so does a sanitizer report, which Criterion itself does not fail on).
summarize() {
    python3 - "$@" <<'PY'
import json, re, sys
passed = failed = 0
for build in sys.argv[1:]:
    for line in open(build + "/meson-logs/testlog.json"):
        t = json.loads(line)
        out = (t.get("stdout") or "") + (t.get("stderr") or "")
        m = re.findall(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+)", out)
        if m:
            passed += int(m[-1][1]); failed += int(m[-1][2])
        elif t.get("result") == "OK":
            passed += 1
        elif t.get("result") != "SKIP":
            failed += 1
        reports = len(re.findall(r"ERROR: (?:Address|Leak)Sanitizer|runtime error:", out))
        if reports:
            print(f"{build}: {t.get('name')}: {reports} sanitizer report(s)", file=sys.stderr)
            failed += 1
print(f"{passed} passed, {failed} failed")
PY
}

MESON_ARGS=()
case "${1:-}" in
build)
    build
    ;;
demo)
    build
    "$BUILD/core/qcal" run minmax data/sample.h5 -o "$BUILD/sample.minmax.h5" --force
    ;;
check)
    build chromium # the report test renders the page in a real browser
    status=0
    meson test -C "$BUILD" --print-errorlogs --num-processes 1 "${@:2}" >&2 || status=$?
    # The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
    SAN=${BUILD_SAN:-build-sanitize}
    [ -f "$SAN/build.ninja" ] ||
        meson setup "$SAN" -Db_sanitize=address,undefined -Db_lundef=false >&2
    meson compile -C "$SAN" >&2
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        meson test -C "$SAN" --print-errorlogs --num-processes 1 "${@:2}" >&2 || status=$?
    summarize "$BUILD" "$SAN"
    exit $status
    ;;
bench)
    BUILD=${BUILD_BENCH:-build-release}
    MESON_ARGS=(--buildtype=release)
    build
    bash tests/bench/run.sh "$BUILD" "${@:2}"
    ;;
*)
    echo "usage: bash tests/dev.sh build|demo|check|bench" >&2
    exit 64
    ;;
esac
