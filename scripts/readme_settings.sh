#!/bin/sh
# README's table of environment variables is the config table (core/config.c)
# as `dcomm-info --markdown` prints it, between two marker lines; this keeps
# the two the same.
#   scripts/readme_settings.sh DCOMM_INFO [README]          rewrites README's table
#   scripts/readme_settings.sh --check DCOMM_INFO [README]  fails, with a diff, when
#       README's table is not the config table, or when README leaves out one
#       of the Horovod aliases that `dcomm-info -c` lists (ctest unit.readme_settings)
set -eu

check=0
if [ "${1:-}" = --check ]; then
    check=1
    shift
fi
info=${1:?usage: readme_settings.sh [--check] DCOMM_INFO [README]}
readme=${2:-$(dirname "$0")/../README.md}
begin='<!-- settings: the config table (core/config.c), written by scripts/readme_settings.sh -->'
end='<!-- end of settings -->'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "$(grep -cxF "$begin" "$readme")" != 1 ] || [ "$(grep -cxF "$end" "$readme")" != 1 ]; then
    echo "readme_settings: $readme needs the lines '$begin' and '$end' once each" >&2
    exit 1
fi
"$info" --markdown >"$tmp/table"
awk -v begin="$begin" -v end="$end" -v table="$tmp/table" '
    $0 == end { skip = 0 }
    !skip { print }
    $0 == begin { while ((getline line < table) > 0) print line; skip = 1 }
' "$readme" >"$tmp/readme"

if [ $check = 0 ]; then
    cp "$tmp/readme" "$readme"
    exit 0
fi
rc=0
if ! cmp -s "$readme" "$tmp/readme"; then
    echo "readme_settings: README's table is not the config table; run" \
         "scripts/readme_settings.sh $info to rewrite it:"
    diff -u "$readme" "$tmp/readme" || true
    rc=1
fi
aliases=$("$info" -c | grep -E '^    alias: |accepted' | grep -oE 'HOROVOD_[A-Z0-9_]+' | sort -u)
for alias in $aliases; do
    if ! grep -q "\`$alias\`" "$readme"; then
        echo "readme_settings: README does not list the Horovod alias $alias"
        rc=1
    fi
done
[ $rc = 0 ] && echo "readme_settings: README lists every setting and Horovod alias"
exit $rc
