#!/usr/bin/env bash
# scripts/deps-check.sh [BUILD] - a rough but honest check of the tree's
# shape: no circle between files (over #include "..." of project headers,
# and over calls: a symbol an object file uses that another one defines,
# read with nm from BUILD's objects), no source file over 800 lines, no
# function over 120 lines (tables are not functions; --help text is allowed
# in functions named *usage* or *help*). Prints each finding, ends with one
# line, exits 1 when anything was found.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
cd "$root" || exit 2
dirs="common coordinator worker"
files=$(for d in $dirs; do ls "$d"/*.[ch]; done)
max_lines=800
max_func=120
found=0

# tsort reports a loop on stderr; "a b" means a depends on b.
s_circles() { # $1: what, stdin: edges
    local out
    out=$(tsort 2>&1 >/dev/null | grep -v 'input contains a loop' |
        sed 's/^tsort: //')
    if [ -n "$out" ]; then
        echo "circle ($1):" $out
        found=1
    fi
}

# Includes: file -> header, for headers of the project only.
for f in $files; do
    sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | while read -r h; do
        for d in $dirs; do
            [ -f "$d/$h" ] && echo "$f $d/$h"
        done
    done
done | s_circles includes

# Calls: object -> object that defines what it uses.
if ls "$build"/common/*.o >/dev/null 2>&1; then
    defs=$(mktemp)
    for o in $(ls "$build"/{common,coordinator,worker}/*.o 2>/dev/null); do
        nm --defined-only -g "$o" | awk -v o="${o#$build/}" '$2 ~ /[TDBR]/ {print $3, o}'
    done | sort >"$defs"
    for o in $(ls "$build"/{common,coordinator,worker}/*.o 2>/dev/null); do
        nm -u "$o" | awk '{print $2}' | sort |
            join - "$defs" | awk -v o="${o#$build/}" '$2 != o {print o, $2}'
    done | sort -u | s_circles calls
    rm -f "$defs"
else
    echo "deps-check: no objects in $build: build first (make)"
    found=1
fi

# File sizes.
for f in $files; do
    n=$(wc -l <"$f")
    if [ "$n" -gt "$max_lines" ]; then
        echo "$f: $n lines (more than $max_lines)"
        found=1
    fi
done

# Function lengths: a function's body runs from a "{" alone in column 0 to
# the next "}" in column 0; its name is on the line before the "{".
for f in $(echo "$files" | grep "\\.c$"); do
    awk -v f="$f" -v max="$max_func" '
        /^\{/ { start = NR; name = prev; next }
        /^\}/ && start { n = NR - start - 1
            if (n > max && name !~ /usage|help/) {
                sub(/\(.*/, "", name); print f ": " name ": " n " lines (more than " max ")"
            }
            start = 0 }
        { if ($0 !~ /^[ \t]/ && $0 != "") prev = $0 }' "$f"
done >"${tmp:=$(mktemp)}"
if [ -s "$tmp" ]; then
    cat "$tmp"
    found=1
fi
rm -f "$tmp"

if [ "$found" -ne 0 ]; then
    echo "deps-check: FAILED"
    exit 1
fi
echo "deps-check: ok (no circle, files <= $max_lines lines, functions <= $max_func lines)"
