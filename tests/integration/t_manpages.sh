#!/usr/bin/env bash
# tests/integration/t_manpages.sh - the man pages: every long option of
# --help is in its page, each page has the sections a manual needs, and
# man renders both without a warning.
. "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
for prog in coordinator/mapper-coord worker/mapper-worker; do
    name=$(basename "$prog")
    page="$root/$prog.1"
    # The page's text with roff's \- as plain hyphens.
    text=$(sed 's/\\-/-/g' "$page")
    opts=$("$MAPPER_BIN/$name" --help | grep -oE -- '--[a-z][a-z-]*' | sort -u)
    check_match "$name --help lists options" "--help" "$opts"
    missing=""
    for o in $opts; do
        grep -qE -- "(^|[^a-z-])$o([^a-z-]|$)" <<<"$text" || missing="$missing $o"
    done
    check "$name.1: every long option of --help" "" "$missing"
    for section in NAME SYNOPSIS DESCRIPTION OPTIONS '"EXIT STATUS"' ENVIRONMENT FILES EXAMPLES; do
        grep -qx ".SH $section" "$page"
        check "$name.1: section $section" 0 "$?"
    done
    check "$name.1: man renders it without warnings" "" \
        "$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)"
    check_match "$name.1: man renders it" "^${name^^}\(1\)" "$(MANWIDTH=80 man -l "$page" 2>/dev/null | head -1)"
done
# The exit codes in the page are the ones --help gives.
for code in 0 1 2 3 75; do
    grep -qx ".B $code" "$root/coordinator/mapper-coord.1"
    check "mapper-coord.1: exit status $code" 0 "$?"
done
finish
