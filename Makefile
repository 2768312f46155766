# mapper - build, test, demo and install.
#   make deps     install missing Debian packages (apt-get; root or sudo)
#   make          build bin/mapper-coord, bin/mapper-worker, build/libmapper.a
#   make check    deps + build + unit tests + integration tests (real PostgreSQL)
#   make demo     copy a 1,000,000-row table on a throwaway PostgreSQL
#   make asan / check-asan   the same under AddressSanitizer + UBSan
#   make bench    side-by-side benchmark (scripts/bench.sh)
#   make install  PREFIX=/usr/local DESTDIR=

CC ?= cc
PREFIX ?= /usr/local
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
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN_FLAGS) -Icommon -Icoordinator -Iworker
LDLIBS_ALL = $(PKG_LIBS) -lm $(SAN_FLAGS)

COMMON_SRC := $(wildcard common/*.c)
COORD_SRC := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
COORD_OBJ := $(COORD_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps check unit integration demo bench asan check-asan install clean format format-check

all: $(BIN)/mapper-coord $(BIN)/mapper-worker $(BUILD)/libmapper.a $(BUILD)/tests/embed_job

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c $(wildcard common/*.h coordinator/*.h worker/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# common/ as its own static library, and libmapper.a = common + coordinator.
$(BUILD)/libmappercommon.a: $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libmapper.a: $(COMMON_OBJ) $(COORD_OBJ)
	@rm -f $@
	ar rcs $@ $^

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

# Unit tests: tests/unit/test_X.c links libmapper.a (+ worker objects) and
# cmocka; tests/unit/test_X.wrap, when present, lists -Wl,--wrap flags.
$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libmapper.a $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(WORKER_OBJ) $(BUILD)/libmapper.a \
	    $(shell cat tests/unit/test_$*.wrap 2>/dev/null) $(CMOCKA_LIBS) $(LDLIBS_ALL)

check: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory format-check
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

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(BIN)/mapper-coord $(BIN)/mapper-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(BUILD)/libmapper.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 coordinator/mapper.h $(DESTDIR)$(PREFIX)/include/

FORMAT_FILES = $(wildcard common/*.[ch] coordinator/*.[ch] worker/*.[ch] tests/unit/*.c tests/*.c)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@if command -v clang-format >/dev/null; then \
	    clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format-check: ok"; \
	else echo "format-check: clang-format not installed (make deps installs it)"; exit 1; fi

clean:
	rm -rf build build-asan bin
