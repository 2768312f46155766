#!/usr/bin/env bash
# tests/integration/t_fidelity.sh - values survive text COPY whatever the
# databases' session defaults (DateStyle, IntervalStyle, extra_float_digits,
# bytea_output, TimeZone, client_encoding, xmloption, lc_monetary); money
# refused in text COPY when lc_monetary differs; LATIN1 <-> UTF8 databases;
# binary COPY only for types that have a binary form; every table and view
# of pg_catalog and information_schema either copies exactly or is refused
# before anything is created.
. "$(dirname "$0")/lib.sh"

# Every comparison reads both sides under the same settings, which are not
# the databases' defaults (the coordinator never sees these variables).
SAME="-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c extra_float_digits=3
      -c bytea_output=hex -c TimeZone=UTC -c lc_monetary=C -c xmloption=content"
qs() { PGOPTIONS="$SAME" PGCLIENTENCODING=UTF8 q "$@"; }

# columns_text URL TABLE COLUMNS...: per column, "name: v1|v2|..." (values as
# text, in id order), one line per column.
columns_text() {
    local url=$1 table=$2 sql="" c
    shift 2
    for c in "$@"; do
        sql+="${sql:+ UNION ALL }SELECT '$c: ' || string_agg(quote_nullable($c::text), '|' ORDER BY id) FROM $table"
    done
    qs "$url" "$sql"
}

# same_columns WHAT TABLE COLUMNS...: each column equal on both sides.
same_columns() {
    local what=$1 table=$2
    shift 2
    columns_text "$SRC" "$table" "$@" >"$T_OUT/src.txt"
    columns_text "$DST" "$table" "$@" >"$T_OUT/dst.txt"
    check "$what: same row count" "$(qs "$SRC" "SELECT count(*) FROM $table")" "$(qs "$DST" "SELECT count(*) FROM $table")"
    for c in "$@"; do
        check "$what: column $c equal" "$(grep "^$c: " "$T_OUT/src.txt")" "$(grep "^$c: " "$T_OUT/dst.txt")"
    done
}

ledger_absent() { q "$DST" "SELECT count(*) FROM pg_namespace WHERE nspname = 'mapper'"; }

# --- 1. Text COPY between databases whose defaults differ in every setting.
fresh_dbs fid
cols="d ts tz iv f4 f8 n m b t x da tsa tza iva f4a f8a na ma ba ta"
def="id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, iv interval,
     f4 float4, f8 float8, n numeric, m money, b bytea, t text, x xml,
     da date[], tsa timestamp[], tza timestamptz[], iva interval[], f4a float4[],
     f8a float8[], na numeric[], ma money[], ba bytea[], ta text[]"
qs "$SRC" "CREATE TABLE fid($def, force int4)"
qs "$DST" "CREATE TABLE fid($def, force int8)"
# Days of 12 or less (read month-first they are another valid date), floats
# that need 17 (9) digits, mixed-sign intervals, bytes a backslash or quote,
# text whose UTF-8 bytes, sent as LATIN1 (the source's client_encoding
# below), read back as other valid UTF-8, XML content that is no document.
qs "$SRC" "INSERT INTO fid VALUES
  (1, '2024-08-12', '2024-08-12 13:14:15.123456', '2024-03-05 01:02:03.5+00',
   '1 year 2 mons 3 days 04:05:06.789', 1.0000001, 0.1::float8 + 0.2, 12345678901234567890.123456789,
   1234.56, '\\x00ff5c0a27', 'Ã© Ã¼', 'a<b/>c',
   '{2001-02-03,2010-11-12}', '{\"2024-01-02 03:04:05\"}', '{\"1999-12-31 23:59:59.999999+00\"}',
   '{\"-1 year +2 days -03:00:00\",\"00:00:00.000001\"}', '{3.1415927,1e-45}', '{1e-310,2.718281828459045}',
   '{0.000000000000000000001,-1.5}', '{-92233720368547758.08,0.01}', '{\"\\\\x5c22\",\"\\\\x\"}', '{Ã©,\"a,b\"}', 1),
  (2, '1999-01-02', '0001-01-01 00:00:00', '1850-06-07 08:09:10+00:53:28', '-3 days +04:05:06',
   '-3.4028235e38', 1e308, -0.0000001, -0.01, '\\x', 'Ã¶', '<doc/>',
   NULL, '{}', '{infinity}', '{}', '{NaN}', '{-Infinity}', '{NaN}', '{}', '{NULL}', '{}', 2)"
for s in "datestyle = 'SQL, DMY'" "intervalstyle = sql_standard" "extra_float_digits = 0" \
    "bytea_output = escape" "timezone = 'Asia/Kolkata'" "client_encoding = LATIN1" "lc_monetary = 'C.utf8'"; do
    q postgres "ALTER DATABASE fid_src SET $s"
done
for s in "datestyle = 'SQL, MDY'" "intervalstyle = iso_8601" "extra_float_digits = -15" \
    "bytea_output = hex" "timezone = 'America/New_York'" "lc_monetary = 'C'" "xmloption = document"; do
    q postgres "ALTER DATABASE fid_dst SET $s"
done
check "the source's own session shows a DMY date" "12/08/2024" "$(q "$SRC" "SELECT d FROM fid WHERE id = 1")"

# money in text COPY between different lc_monetary: refused up front.
run_coord --table fid --workers 2
check "money, text COPY, lc_monetary differs: exit 3" 3 "$RC"
check_match "money refusal names the columns" 'columns "m", "ma" hold money.*lc_monetary' "$ERR"
check "money refusal: one line" 1 "$(grep -c 'lc_monetary' <<<"$ERR")"
check "money refusal: no ledger created" 0 "$(ledger_absent)"
check "money refusal: no row written" 0 "$(q "$DST" "SELECT count(*) FROM fid")"

# Same lc_monetary: every value arrives as it was.
q "$DST" "DROP SCHEMA IF EXISTS mapper CASCADE; TRUNCATE fid"
q postgres "ALTER DATABASE fid_dst SET lc_monetary = 'C.utf8'"
run_coord --table fid --workers 2
check "text COPY across different session defaults exits 0" 0 "$RC"
check_match "fid: text COPY" "text COPY" "$ERR"
# shellcheck disable=SC2086
same_columns "text COPY" fid id force $cols

# A day above 12 under DMY: the target must read it as it was written.
qs "$SRC" "CREATE TABLE d13(id int PRIMARY KEY, d date, force int4);
           INSERT INTO d13 VALUES (1, '2024-01-13', 1), (2, '2024-12-31', 2)"
qs "$DST" "CREATE TABLE d13(id int PRIMARY KEY, d date, force int8)"
run_coord --table d13 --workers 1
check "day above 12 exits 0" 0 "$RC"
same_columns "day above 12" d13 d

# Binary COPY (same types on both sides) carries money exactly even when
# lc_monetary differs.
q postgres "ALTER DATABASE fid_dst SET lc_monetary = 'C'"
qs "$SRC" "CREATE TABLE mb(id int PRIMARY KEY, m money, ma money[]);
           INSERT INTO mb VALUES (1, 1234.56, '{0.01,-92233720368547758.08}'), (2, NULL, NULL)"
run_coord --table mb --workers 1
check "money in binary COPY exits 0" 0 "$RC"
check_match "money table: binary COPY" "binary COPY" "$ERR"
same_columns "binary money" mb m ma
# Setting bad rows aside re-reads them as text: refused for that money.
q "$DST" "DROP TABLE mb"
run_coord --table mb --workers 1 --on-bad-rows reject --reject-file "$T_OUT/mb.rej"
check "money, binary COPY, --on-bad-rows reject: exit 3" 3 "$RC"
check_match "... naming the columns" 'columns "m", "ma" hold money.*--on-bad-rows reject' "$ERR"
# A target the tool would create is not created when the copy would be
# text (aclitem has no binary form) and money cannot go as text.
run_coord --query "SELECT id, m, (SELECT nspacl FROM pg_namespace WHERE nspname = 'pg_catalog') AS acl FROM mb" \
    --target-table mbq --workers 1
check "money and aclitem into a new target: exit 3" 3 "$RC"
check_match "... naming the column" 'column "m" holds money.*text COPY' "$ERR"
check "... before the target is created" f "$(q "$DST" "SELECT to_regclass('mbq') IS NOT NULL")"

# --- 2. Encodings.
# A LATIN1 source database into a UTF8 target: binary and text COPY.
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS fid_latin1" \
    -c "CREATE DATABASE fid_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null
SRC=$(url fid_latin1)
qs "$SRC" "CREATE TABLE lat(id int PRIMARY KEY, t text, ta text[], c varchar(10), force int4);
           INSERT INTO lat VALUES (1, 'café ñ ü ÿ ß Ä ©', '{é,\"à,è\"}', 'ØÞ', 1), (2, 'plain', '{}', '', 2)"
check "the LATIN1 database stores one byte per letter" 16 "$(qs "$SRC" "SELECT octet_length(t) FROM lat WHERE id = 1")"
run_coord --source "$SRC" --table lat --target-table lat_bin --workers 1
check "LATIN1 -> UTF8, binary COPY exits 0" 0 "$RC"
check_match "LATIN1 -> UTF8: binary COPY" "binary COPY" "$ERR"
qs "$DST" "CREATE TABLE lat(id int PRIMARY KEY, t text, ta text[], c varchar(10), force int8)"
run_coord --source "$SRC" --table lat --workers 1
check "LATIN1 -> UTF8, text COPY exits 0" 0 "$RC"
for tb in lat lat_bin; do
    check "LATIN1 -> UTF8 ($tb): non-ASCII text intact" \
        "$(columns_text "$SRC" lat t ta c)" "$(columns_text "$DST" "$tb" t ta c)"
done

# UTF8 text a LATIN1 target cannot hold fails loudly, never silently.
fresh_dbs fidenc
psql -X -q -d postgres -c "DROP DATABASE fidenc_dst" \
    -c "CREATE DATABASE fidenc_dst ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null
qs "$SRC" "CREATE TABLE euro(id int PRIMARY KEY, t text); INSERT INTO euro VALUES (1, 'café'), (2, '10 €')"
run_coord --table euro --workers 1 --max-retries 0
check "a character the target cannot hold fails the job" 1 "$RC"
check_match "... with the conversion error" "22P05|has no equivalent in encoding" "$ERR"
check "... and writes no row" 0 "$(q "$DST" "SELECT count(*) FROM euro")"

# --- 3. Every table and view of pg_catalog and information_schema as a
# --query source, into a target the tool creates: each copies exactly, or is
# refused (exit 3, one line naming the column and its type) before anything
# is created. None may fail chunk by chunk.
#
# Exactness: the source is read (under the same settings as the target)
# before and after the copy. When both reads agree the relation did not
# change meanwhile, so the target must equal them. When they differ the
# relation changed on its own (statistics counters, timestamps) and only
# a clean copy is asserted (exit 0, no failed chunk, the target created),
# not its content. Views of the reading session itself (its locks,
# settings, memory, transaction counters, the backends connected) differ
# between the copying sessions and ours whatever the tool does: they are
# held to the same weaker check, and listed here.
session_views='^pg_catalog\.(pg_stat_activity|pg_locks|pg_settings|pg_cursors|pg_prepared_statements|pg_backend_memory_contexts|pg_stat_xact_[a-z_]+|pg_stat_progress_[a-z_]+|pg_stat_ssl|pg_stat_gssapi|pg_shmem_allocations|pg_stat_database)$'
fresh_dbs fidcat
q "$DST" "CREATE SCHEMA sweep"
digest() {
    qs "$1" "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '-') FROM ($2) t"
}

# aclitem has no binary form: a column of it, of an array of it, or of a
# composite holding it makes the copy text, and the values arrive.
acl="SELECT n.oid, n.nspname, n.nspacl, n AS whole FROM pg_namespace n"
run_coord --query "$acl" --target-table sweep.acl --workers 1
check "aclitem, aclitem[] and a composite holding them: exit 0" 0 "$RC"
check_match "... in text COPY" "text COPY" "$ERR"
check "... exact" "$(qs "$SRC" "SELECT md5(string_agg(t::text, '|' ORDER BY oid)) FROM ($acl) t")" \
    "$(qs "$DST" "SELECT md5(string_agg(t::text, '|' ORDER BY oid)) FROM sweep.acl t")"

# pg_node_tree cannot be loaded: refused before anything is created, with
# the way out, which works.
run_coord --query "SELECT * FROM pg_type" --target-table sweep.types --workers 1
check "pg_node_tree column: exit 3" 3 "$RC"
check_match "... naming the column, its type and the fix" \
    'column "typdefaultbin" of type pg_node_tree; select such a column as text in the query \(e.g. "typdefaultbin"::text\)' "$ERR"
check "... no target table, no ledger job" "f|0" \
    "$(q "$DST" "SELECT to_regclass('sweep.types') IS NOT NULL, (SELECT count(*) FROM mapper.jobs WHERE query = 'SELECT * FROM pg_type')")"
# The same type in a target that exists: refused before the ledger.
q "$SRC" "CREATE TABLE nt(id int, x text); INSERT INTO nt VALUES (1, 'x')"
q "$DST" "CREATE TABLE nt(id int, x pg_node_tree)"
run_coord --table nt --workers 1
check "an existing pg_node_tree target column: exit 3" 3 "$RC"
check_match "... naming it and the fix" \
    'target table public.nt: COPY FROM cannot load column "x" of type pg_node_tree; give such a column a type' "$ERR"
check "... no ledger job" 0 "$(q "$DST" "SELECT count(*) FROM mapper.jobs WHERE target_table LIKE '%.nt'")"
run_coord --query "SELECT oid, typname, typdefaultbin::text FROM pg_type" --target-table sweep.types --workers 1
check "... cast to text: exit 0" 0 "$RC"
check "... and exact" "$(digest "$SRC" "SELECT oid, typname, typdefaultbin::text FROM pg_type")" \
    "$(digest "$DST" "SELECT * FROM sweep.types")"
run_coord --query "SELECT 1 AS x" --target-table sweep.first --workers 1
check "sweep: a first copy creates the ledger" 0 "$RC"

# sweep_one REL: copy REL and print "exact", "changing", "refused" or
# "bad: why". A refusal must be exit 3 with one error line naming a column
# (its type, or a name CREATE TABLE refuses such as xmin) and leave no
# target table and no ledger job behind.
sweep_one() {
    local rel=$1 tgt="sweep.${1/./__}" f="$T_OUT/sweep/$1" before after created rc err
    before=$(digest "$SRC" "SELECT * FROM $rel")
    "$COORD" --query "SELECT * FROM $rel" --target-table "$tgt" --workers 1 \
        --summary-json "$f.json" >"$f.out" 2>"$f.err"
    rc=$?
    after=$(digest "$SRC" "SELECT * FROM $rel")
    err=$(grep ' error: ' "$f.err")
    created=$(q "$DST" "SELECT to_regclass('$tgt') IS NOT NULL")
    if [ "$rc" = 3 ]; then
        if [[ "$err" =~ column\ (\"[^\"]+\"\ of\ type\ [a-z_]+|name\ \"[^\"]+\") ]] && [ "$created" = f ] &&
            [ "$(wc -l <<<"$err")" = 1 ] &&
            [ "$(q "$DST" "SELECT count(*) FROM mapper.jobs WHERE query = 'SELECT * FROM $rel'")" = 0 ]; then
            echo refused
        else
            echo "bad: exit 3 without a clean refusal (target created: $created): $err"
        fi
    elif [ "$rc" != 0 ] || [ "$created" != t ] || [ "$(json_field "$f.json" chunks_failed)" != 0 ]; then
        echo "bad: exit $rc: $(head -3 <<<"$err")"
    elif [ "$before" = "$after" ] && ! [[ "$rel" =~ $session_views ]]; then
        local target
        target=$(digest "$DST" "SELECT * FROM $tgt")
        if [ "$target" = "$after" ]; then echo exact; else echo "bad: target $target, source $after"; fi
    else
        echo changing
    fi
}

# Four copies at a time: a run mostly waits (worker start-up), so this
# keeps the sweep to about a minute without loading the cores more.
rels=$(q "$SRC" "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY 1")
mkdir -p "$T_OUT/sweep"
for rel in $rels; do
    sweep_one "$rel" >"$T_OUT/sweep/$rel.result" &
    while [ "$(jobs -rp | wc -l)" -ge 4 ]; do wait -n; done
done
wait
exact=0 changing=0 refused=0 bad=0
for rel in $rels; do
    r=$(cat "$T_OUT/sweep/$rel.result")
    case $r in
    exact) exact=$((exact + 1)) ;;
    changing) changing=$((changing + 1)) ;;
    refused) refused=$((refused + 1)) ;;
    *)
        fail "sweep: $rel: ${r#bad: }"
        bad=$((bad + 1))
        ;;
    esac
done
echo "# sweep: changing: $(grep -l changing "$T_OUT"/sweep/*.result | xargs -n1 basename | sed 's/.result$//' | tr '\n' ' ')"
echo "# sweep: refused: $(grep -l refused "$T_OUT"/sweep/*.result | xargs -n1 basename | sed 's/.result$//' | tr '\n' ' ')"
total=$(wc -w <<<"$rels")
check "sweep: every relation accounted for ($exact exact, $changing changing, $refused refused)" \
    "$total" "$((exact + changing + refused + bad))"
check "sweep: no relation failed" 0 "$bad"
check_match "sweep: most relations compared exactly" "^[0-9]+$" "$((exact > total * 3 / 4 ? exact : -1))"

finish
