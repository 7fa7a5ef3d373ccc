#!/usr/bin/env bash
# Runs every ```sh block of README.md, in order, as one bash script, the way a new user pastes them:
# from the repository's root, with a private TMPDIR (the walk-through's `mktemp -d` lands there) that
# is removed at the end, as is every process the blocks left in the background. A block whose
# preceding line is `<!-- readme-check: skip (why) -->` is not run (it needs root and systemd, or runs
# for minutes). Fails on the first command that fails (set -eo pipefail, as a careful user would
# notice an error); prints the script it ran and the failing line.
#
# usage: scripts/readme-check.sh [README.md]
set -euo pipefail
cd "$(dirname "$0")/.."
readme=${1:-README.md}

work=$(mktemp -d)
script="$work/readme.sh"

# The blocks, each preceded by a comment naming its line in README.md.
awk -v readme="$readme" '
    /^[[:space:]]*<!-- readme-check: skip/ { skip = 1; next }
    !inblock && /^[[:space:]]*```sh[[:space:]]*$/ {
        inblock = 1
        match($0, /^[[:space:]]*/); indent = RLENGTH
        if (!skip) printf "\n# --- %s:%d\n", readme, NR + 1
        next
    }
    inblock && /^[[:space:]]*```[[:space:]]*$/ { inblock = 0; skip = 0; next }
    inblock && !skip { print substr($0, indent + 1) }
    !inblock && !/^[[:space:]]*$/ { skip = 0 }
' "$readme" >"$work/blocks.sh"
if [ "$(grep -c '^# --- ' "$work/blocks.sh")" -eq 0 ]; then
    echo "readme-check: no \`\`\`sh blocks found in $readme" >&2
    exit 1
fi

cat >"$script" <<PRELUDE
set -eo pipefail
# Whatever the blocks left running: background jobs (daemons, publishers) and a demo nginx.
cleanup() {
    for pidfile in "$work"/tmp/*/nginx.pid; do
        [ -f "\$pidfile" ] && kill "\$(cat "\$pidfile")" 2>/dev/null
    done
    jobs=\$(jobs -p)
    [ -n "\$jobs" ] && kill \$jobs 2>/dev/null
    wait 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'echo "readme-check: failed at \$BASH_COMMAND (line \$LINENO of $script)" >&2' ERR
PRELUDE
cat "$work/blocks.sh" >>"$script"

mkdir -p "$work/tmp"
status=0
TMPDIR="$work/tmp" bash "$script" || status=$?
if [ "$status" -ne 0 ]; then
    echo "readme-check: FAILED (exit $status); the script it ran:" >&2
    cat -n "$script" >&2
    rm -rf "$work"
    exit 1
fi
rm -rf "$work"
echo "readme-check: every runnable block of $readme passed"
