#!/usr/bin/env bash
# tests/integration/t_library.sh - libmapper as a Debian-style C library:
# make install into a DESTDIR, then tests/embed_job.c built with
# `cc prog.c $(pkg-config --cflags --libs mapper)` against that tree alone
# (the shared library), running a job with a progress callback.
. "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
dest="$T_OUT/root"
prefix=/usr/local
make -s -C "$root" install DESTDIR="$dest" PREFIX="$prefix" \
    BUILD="${MAPPER_BUILD#"$root"/}" BIN="${MAPPER_BIN#"$root"/}" >"$T_OUT/install.log" 2>&1
check "make install DESTDIR: exit 0" 0 "$?"
lib="$dest$prefix/lib"
names() { (cd "$1" && printf '%s ' *) | sed 's/ $//'; } # DIR: its entries

# What is installed, and only that.
check "installed binaries" "mapper-coord mapper-worker" "$(names "$dest$prefix/bin")"
check "installed headers: mapper.h only" "mapper.h" "$(names "$dest$prefix/include")"
check "installed libraries" "libmapper.a libmapper.so libmapper.so.0 libmapper.so.0.1.0 pkgconfig" "$(names "$lib")"
check "libmapper.so -> libmapper.so.0" libmapper.so.0 "$(readlink "$lib/libmapper.so")"
check "libmapper.so.0 -> the library" libmapper.so.0.1.0 "$(readlink "$lib/libmapper.so.0")"
check "soname" "libmapper.so.0" "$(readelf -d "$lib/libmapper.so.0.1.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
check "exports only mapper_* functions" "" "$(nm -D --defined-only "$lib/libmapper.so.0.1.0" | awk '$2 ~ /[TtDdBbRr]/ && $3 !~ /^mapper_/ {print $3}')"
check "man pages" "mapper-coord.1 mapper-worker.1" "$(names "$dest$prefix/share/man/man1")"
check "mapper.pc: Requires.private" "Requires.private: libpq libzmq msgpack" "$(grep '^Requires.private' "$lib/pkgconfig/mapper.pc")"

# Build the embedding program the way a user would, from the installed
# tree only (the compiler finds mapper.h nowhere else).
export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
flags=$(pkg-config --cflags --libs mapper)
check_match "pkg-config --libs: -lmapper from the tree" "-L$dest$prefix/lib -lmapper" "$flags"
# A sanitizer build's library needs its runtime first: the program too.
san=""
readelf -d "$lib/libmapper.so.0.1.0" | grep -q 'libasan' && san="-fsanitize=address,undefined"
# shellcheck disable=SC2086 # flags: several words
cc -Wall -Wextra -Werror $san -o "$T_OUT/embed" "$root/tests/embed_job.c" $flags 2>"$T_OUT/cc.err"
check "cc prog.c \$(pkg-config --cflags --libs mapper): exit 0" 0 "$?"
cat "$T_OUT/cc.err"
# The header alone, as strict C11.
echo '#include <mapper.h>' | cc -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only \
    -I"$dest$prefix/include" -x c - 2>"$T_OUT/hdr.err"
check "mapper.h stands alone (cc -std=c11 -pedantic)" "0 " "$? $(cat "$T_OUT/hdr.err")"
check_match "the program uses the shared library from the tree" "libmapper.so.0 => $lib/libmapper.so.0" \
    "$(LD_LIBRARY_PATH="$lib" ldd "$T_OUT/embed")"

# A job of 20 chunks, chunk 12 held mid-copy until the callback has run a
# few times; the worker is the installed one.
fresh_dbs library
q "$SRC" "CREATE TABLE em(id bigint PRIMARY KEY, v text); INSERT INTO em SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE em2(id bigint NOT NULL, v text)"
plog="$T_OUT/progress.log"
hold
MAPPER_FAULT=pause-mid-copy:12 LD_LIBRARY_PATH="$lib" "$T_OUT/embed" em em2 "$dest$prefix/bin/mapper-worker" "$plog" \
    >"$T_OUT/embed.out" 2>"$T_OUT/embed.err" &
pid=$!
held "$T_OUT/embed.err" 12
for _ in $(seq 2400); do [ "$(wc -l <"$plog")" -ge 3 ] && break; sleep 0.05; done
check_match "while held: the callback ran (progress output off)" "^[3-9]|^[1-9][0-9]" "$(wc -l <"$plog")"
release
wait $pid
check "embed_job: exit 0 and the rows" "0 rc=0 rows=20000 chunks=20/20" "$? $(head -1 "$T_OUT/embed.out")"
check "embed_job: its own child left for it to reap" "child=42" "$(tail -1 "$T_OUT/embed.out")"
check "embed_job: no progress lines (progress mode none)" "" "$(grep -E 'progress (job|pct)' "$T_OUT/embed.err")"
n=$(wc -l <"$plog")
check_match "the callback ran more than once" "^([2-9]|[1-9][0-9]+)$" "$n"
check "total_rows_successful never decreased" "" \
    "$(awk -F'[ =]' '{ r = $4 + 0; if (NR > 1 && r < last) print NR ": " r " < " last; last = r }' "$plog")"
check "at most once per progress_interval (0.05 s)" "" \
    "$(awk -F'[ =]' '{ e = $8 + 0; if (NR > 1 && NR < n && e - last < 0.049) print NR ": " e - last; last = e }' n="$n" "$plog")"
check_match "the last call: 100 % and the final row count" "^pct=100.0 rows=20000 chunks=20/20 " "$(tail -1 "$plog")"
check "the target holds the rows" "$(checksum "$SRC" em)" "$(checksum "$DST" em2)"
finish
