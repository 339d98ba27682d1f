# common.sh: helpers shared by scripts/demo, scripts/test and the benchmarks. Source it after
# setting GB_PROG (the name messages are prefixed with); it sets GB_ROOT to the repository root
# and defines:
#   gb_msg TEXT...            one line on stderr, prefixed with "$GB_PROG: "
#   gb_die TEXT...            the same, then exit 1
#   gb_run_logged LOG CMD...  run CMD with all its output in LOG; on failure show the lines that
#                             name errors plus the log's tail on stderr and return CMD's status
#   gb_build_release TGT...   configure build/ as an optimised build (RelWithDebInfo, as the
#                             "release" preset) without sanitizers (an existing configuration
#                             keeps its other options, GB_WERROR included) and build TGT...
#   gb_elapsed START          seconds since START (from $SECONDS) as "1m05s"
#   gb_header_help FILE       print FILE's header comment (its --help text)
# shellcheck shell=bash

GB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GB_PROG=${GB_PROG:-glovebox}
GB_JOBS=${GB_JOBS:-2}

gb_msg() {
    printf '%s: %s\n' "$GB_PROG" "$*" >&2
}

gb_die() {
    gb_msg "$@"
    exit 1
}

gb_run_logged() {
    local log=$1
    shift
    mkdir -p "$(dirname "$log")"
    local rc=0
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        gb_msg "command failed (exit $rc): $*"
        local errors
        errors=$(grep -n -i -E '(error|fatal|undefined reference)' "$log" | head -n 25 || true)
        if [ -n "$errors" ]; then
            printf '%s\n' "$errors" "--- last lines of $log ---" >&2
        fi
        tail -n 20 "$log" >&2
    fi
    return "$rc"
}

gb_build_release() {
    local dir=$GB_ROOT/build log=$GB_ROOT/var/log/build-release.log
    gb_run_logged "$log" cmake -S "$GB_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DGB_ASAN=OFF -DGB_UBSAN=OFF -DGB_FUZZ=OFF || return
    local args=() t
    for t in "$@"; do
        args+=(--target "$t")
    done
    gb_run_logged "$log" cmake --build "$dir" -j "$GB_JOBS" "${args[@]}"
}

gb_elapsed() {
    local s=$((SECONDS - $1))
    printf '%dm%02ds' $((s / 60)) $((s % 60))
}

gb_header_help() {
    awk 'NR == 1 { next } /^#/ { if ($0 !~ /shellcheck/) { sub(/^# ?/, ""); print } next } { exit }' "$1"
}
