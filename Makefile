# mapper - build, test, demo and install.
#   make deps     install missing Debian packages (apt-get; root or sudo)
#   make          build bin/mapper-coord, bin/mapper-worker, build/libmapper.a
#                 and build/libmapper.so (soname libmapper.so.0)
#   make check    deps + build + unit tests + integration tests (real PostgreSQL)
#   make demo     copy a 1,000,000-row table on a throwaway PostgreSQL
#   make asan / check-asan   the same under AddressSanitizer + UBSan
#   make bench    side-by-side benchmark (scripts/bench.sh)
#   make install  PREFIX=/usr/local DESTDIR= LIBDIR=$(PREFIX)/lib: binaries,
#                 libmapper.a and .so, mapper.h, mapper.pc, man pages

CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
BUILD ?= build
BIN ?= bin
PKGS := libpq libzmq msgpack
SAN_FLAGS ?=

WARN := -Wall -Wextra -Wshadow -Wformat=2
ifeq ($(CI),true)
WARN += -Werror
endif
ifneq ($(WERROR),)
WARN += -Werror
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

CFLAGS ?= -O2 -g
# Every object is position-independent, so one set serves the binaries,
# libmapper.a and libmapper.so.
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SAN_FLAGS) -Icommon -Icoordinator -Iworker
LDLIBS_ALL = $(PKG_LIBS) -lm $(SAN_FLAGS)

# The shared library: its soname changes when the ABI does (SOVERSION);
# only the mapper_* functions are exported (coordinator/libmapper.map).
VERSION := $(shell sed -n 's/^\#define MAPPER_VERSION "\(.*\)"/\1/p' common/defaults.h)
SOVERSION := 0
SONAME := libmapper.so.$(SOVERSION)

COMMON_SRC := $(wildcard common/*.c)
COORD_SRC := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
COORD_OBJ := $(COORD_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps check unit integration demo bench asan check-asan install clean format format-check

all: $(BIN)/mapper-coord $(BIN)/mapper-worker $(BUILD)/libmapper.a \
    $(BUILD)/libmapper.so $(BUILD)/tests/embed_job $(BUILD)/tests/peer

deps:
	@scripts/deps.sh

# Objects depend on the Makefile too: a change of flags rebuilds them.
$(BUILD)/%.o: %.c $(wildcard common/*.h coordinator/*.h worker/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# common/ as its own static library, and libmapper.a = common + coordinator.
$(BUILD)/libmappercommon.a: $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libmapper.a: $(COMMON_OBJ) $(COORD_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libmapper.so.$(VERSION): $(COMMON_OBJ) $(COORD_OBJ) coordinator/libmapper.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=coordinator/libmapper.map \
	    $(SAN_FLAGS) -o $@ $(COMMON_OBJ) $(COORD_OBJ) $(LDLIBS_ALL)

$(BUILD)/libmapper.so: $(BUILD)/libmapper.so.$(VERSION)
	ln -sf libmapper.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(BIN)/mapper-coord: $(BUILD)/coordinator/main.o $(BUILD)/libmapper.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libmapper.a $(LDLIBS_ALL)

$(BIN)/mapper-worker: $(BUILD)/worker/main.o $(WORKER_OBJ) $(BUILD)/libmappercommon.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(BUILD)/worker/main.o $(WORKER_OBJ) $(BUILD)/libmappercommon.a $(LDLIBS_ALL)

# A C program that runs a job through the library (tests/embed_job.c).
$(BUILD)/tests/embed_job: tests/embed_job.c $(BUILD)/libmapper.a coordinator/mapper.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(BUILD)/libmapper.a $(LDLIBS_ALL)

# A hostile peer for the trust tests (tests/peer.c).
$(BUILD)/tests/peer: tests/peer.c $(BUILD)/libmappercommon.a common/proto.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(BUILD)/libmappercommon.a $(LDLIBS_ALL)

# Unit tests: tests/unit/test_X.c links libmapper.a (+ worker objects) and
# cmocka; tests/unit/test_X.wrap, when present, lists -Wl,--wrap flags.
$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libmapper.a $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(WORKER_OBJ) $(BUILD)/libmapper.a \
	    $(shell cat tests/unit/test_$*.wrap 2>/dev/null) $(CMOCKA_LIBS) $(LDLIBS_ALL)

check: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory format-check
	@scripts/deps-check.sh "$(BUILD)"
	@$(MAKE) --no-print-directory fuzz-smoke >$(BUILD)/fuzz-smoke.log 2>&1 && \
	    echo "fuzz-smoke: ok ($$(grep -o 'stat::number_of_executed_units: *[0-9]*' $(BUILD)/fuzz-smoke.log | grep -o '[0-9]*$$') inputs, no crash)" || \
	    { tail -30 $(BUILD)/fuzz-smoke.log; echo "fuzz-smoke: FAILED"; exit 1; }
	@scripts/bench.sh --bin "$(BIN)" --rows 20000 --runs 1 --no-install \
	    --json $(BUILD)/bench-smoke.json >$(BUILD)/bench-smoke.log 2>&1 && \
	    echo "bench-smoke: ok (scripts/bench.sh --rows 20000 --runs 1)" || \
	    { tail -30 $(BUILD)/bench-smoke.log; echo "bench-smoke: FAILED"; exit 1; }
	@scripts/bench.sh --bin "$(BIN)" --rows 20000 --runs 1 --no-install --only modes \
	    --json $(BUILD)/bench-smoke-modes.json >$(BUILD)/bench-smoke-modes.log 2>&1 && \
	    echo "bench-smoke: ok (scripts/bench.sh --rows 20000 --runs 1 --only modes)" || \
	    { tail -30 $(BUILD)/bench-smoke-modes.log; echo "bench-smoke: FAILED"; exit 1; }
	@tests/run-all.sh "$(BUILD)" "$(BIN)"

unit: all $(UNIT_BIN)
	@tests/run-all.sh "$(BUILD)" "$(BIN)" unit

integration: all
	@tests/run-all.sh "$(BUILD)" "$(BIN)" integration

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/bin \
	    SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-O1 -g" all

check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/bin \
	    SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-O1 -g" \
	    all $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    tests/run-all.sh build-asan build-asan/bin

demo: deps all
	@scripts/with-postgres.sh scripts/demo.sh "$(BIN)"

bench: deps all
	@scripts/bench.sh --bin "$(BIN)"
	@scripts/bench.sh --bin "$(BIN)" --rows 2000000 --only modes --json $(BUILD)/bench-modes.json

# mapper.pc: the shared library needs nothing more; a static link
# (pkg-config --static) adds libpq, libzmq, msgpack and libm.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig \
	    $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(BIN)/mapper-coord $(BIN)/mapper-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(BUILD)/libmapper.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(BUILD)/libmapper.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libmapper.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libmapper.so
	install -m 0644 coordinator/mapper.h $(DESTDIR)$(INCLUDEDIR)/
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' \
	    'includedir=$(INCLUDEDIR)' '' 'Name: mapper' \
	    'Description: copy a PostgreSQL table or query in parallel chunks, exactly once' \
	    'Version: $(VERSION)' 'Requires.private: $(PKGS)' \
	    'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lmapper' \
	    'Libs.private: -lm' >$(DESTDIR)$(LIBDIR)/pkgconfig/mapper.pc
	install -m 0644 coordinator/mapper-coord.1 worker/mapper-worker.1 \
	    $(DESTDIR)$(MANDIR)/man1/

FORMAT_FILES = $(wildcard common/*.[ch] coordinator/*.[ch] worker/*.[ch] tests/unit/*.c tests/*.c)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@if command -v clang-format >/dev/null; then \
	    clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format-check: ok"; \
	else echo "format-check: clang-format not installed (make deps installs it)"; exit 1; fi

clean:
	rm -rf build build-asan bin

# Fuzzing proto_decode with libFuzzer (clang; make deps installs it):
# tests/fuzz/fuzz_proto.c decodes every input; what it accepts must obey the
# documented limits and survive an encode/decode round trip.
#   make fuzz          run for FUZZ_SECONDS (default 300)
#   make fuzz-smoke    run for 20 s; fails on any crash, leak, UB or timeout
#   make fuzz-corpus   regenerate the seed frames in tests/fuzz/corpus
# Both runs copy the seeds into $(BUILD)/fuzz/corpus and grow that copy (the
# committed seeds are never written); a crashing input is saved as
# $(BUILD)/fuzz/crash-* (replay: $(BUILD)/fuzz/fuzz_proto FILE).
# FUZZ_ARGS passes more libFuzzer flags (e.g. FUZZ_ARGS=-jobs=4).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 300
FUZZ_ARGS ?=
FUZZ_CFLAGS := -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1 -std=c11 \
    -D_GNU_SOURCE $(WARN) -Icommon
FUZZ_SRC := tests/fuzz/fuzz_proto.c common/proto.c common/proto_prescan.c \
    common/log.c
FUZZ_RUN = @mkdir -p $(BUILD)/fuzz/corpus && \
    cp tests/fuzz/corpus/* $(BUILD)/fuzz/corpus/ && \
    UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/fuzz/fuzz_proto \
    -dict=tests/fuzz/proto.dict -artifact_prefix=$(BUILD)/fuzz/ \
    -print_final_stats=1 $(FUZZ_ARGS) $(BUILD)/fuzz/corpus

.PHONY: fuzz fuzz-smoke fuzz-corpus

$(BUILD)/fuzz/fuzz_proto: $(FUZZ_SRC) common/proto.h common/log.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -o $@ $(FUZZ_SRC) $(PKG_LIBS)

fuzz: $(BUILD)/fuzz/fuzz_proto
	$(FUZZ_RUN) -max_total_time=$(FUZZ_SECONDS)

fuzz-smoke: $(BUILD)/fuzz/fuzz_proto
	$(FUZZ_RUN) -max_total_time=20

$(BUILD)/fuzz/make_corpus: tests/fuzz/make_corpus.c common/proto.c \
    common/proto_prescan.c common/log.c common/proto.h common/log.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -o $@ $< common/proto.c common/proto_prescan.c \
	    common/log.c \
	    $(LDLIBS_ALL)

fuzz-corpus: $(BUILD)/fuzz/make_corpus
	@mkdir -p tests/fuzz/corpus
	rm -f tests/fuzz/corpus/*
	$(BUILD)/fuzz/make_corpus tests/fuzz/corpus
