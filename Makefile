# gatehouse top-level Makefile.
#
#   make            build objs/gatehouse (runs ./configure first if needed)
#   make check      install missing Debian packages (as root), build, run
#                   the unit tests and the integration tests
#   make run        install, build, start gatehouse in the foreground on
#                   the demo config conf/demo.conf (port 8080, and 8443
#                   with a self-signed certificate made if absent)
#   make fuzz       build the libFuzzer targets with clang (objs/fuzz/)
#   make install    install in the configured paths (see ./configure --help)
#
# On a machine without make, ./dev does what "make check" and "make run"
# do: it installs make too. Object files live under objs/; dependencies on
# headers are tracked with -MMD so that rebuilds are incremental.

# deps, check and run install the compiler before they configure: for them
# the configuration is read only if it exists, never made first (make would
# run ./configure before anything else, which fails without g++).
NO_CONFIGURE_GOALS := deps check run lint clean demo-cert
ifneq ($(MAKECMDGOALS),)
ifeq ($(filter-out $(NO_CONFIGURE_GOALS),$(MAKECMDGOALS)),)
CONFIGURE_LATER := yes
endif
endif
ifeq ($(CONFIGURE_LATER),yes)
include $(wildcard objs/Makefile.conf)
else
-include objs/Makefile.conf
endif

MAKEFLAGS += --no-builtin-rules

# Profile-guided optimisation (./configure --with-pgo). The same sources
# are first built instrumented under objs/pgo/, contrib/pgo/train runs that
# binary through the bench's kinds of load, and its counters (one .gcda
# per object) are copied next to the final objects, which GCC reads with
# -fprofile-use. Code the training never ran is optimised as without a
# profile (-fprofile-partial-training).
ifeq ($(WITH_PGO),yes)
PGO_PROFILE := objs/pgo/profile
PGO_GEN := -fprofile-generate -fprofile-update=single
PGO_USE := -fprofile-use -fprofile-partial-training -Wno-missing-profile
endif
NPROC := $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= /usr/bin/python3

SRC := $(sort $(wildcard src/*/*.cc src/http/modules/*.cc src/http/v1/*.cc src/http/v2/*.cc))
MAIN_SRC := src/process/main.cc
LIB_SRC := $(filter-out $(MAIN_SRC),$(SRC))
LIB_OBJ := $(patsubst %.cc,objs/%.o,$(LIB_SRC)) objs/modules.o
MAIN_OBJ := objs/src/process/main.o
TEST_SRC := $(sort $(wildcard tests/unit/*.cc tests/unit/*/*.cc tests/unit/*/*/*.cc))
TEST_OBJ := $(patsubst %.cc,objs/%.o,$(TEST_SRC))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/*_fuzz.cc))

.PHONY: all check unit integration run demo-cert deps install fuzz clean lint strip

all: objs/gatehouse

objs/Makefile.conf:
	./configure

objs/gatehouse: $(LIB_OBJ) $(MAIN_OBJ)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LIBS)

objs/%.o: %.cc objs/Makefile.conf
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c -o $@ $<

# The server's own objects: with --with-pgo, compiled with the profile the
# training left (objs/pgo/profile, below), so they are built again after
# every training.
$(filter-out objs/modules.o,$(LIB_OBJ)) $(MAIN_OBJ): objs/%.o: %.cc objs/Makefile.conf $(PGO_PROFILE)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(PGO_USE) -MMD -MP -c -o $@ $<

objs/modules.o: objs/modules.cc objs/Makefile.conf $(PGO_PROFILE)
	$(CXX) $(CXXFLAGS) $(PGO_USE) -MMD -MP -c -o $@ $<

ifeq ($(WITH_PGO),yes)
# The instrumented build is this Makefile run in objs/pgo, a tree whose
# src/ and configuration are links back here: its objects then have the
# same relative paths (objs/src/...) as the final ones, as GCC needs to
# match the counters of functions with internal linkage to their code.
# Any source change builds it again (incrementally) and trains again.
PGO_HDR := $(wildcard src/*/*.h src/http/*/*.h)
objs/pgo/profile: $(SRC) $(PGO_HDR) objs/modules.cc objs/Makefile.conf objs/gh_config.h contrib/pgo/train
	@mkdir -p objs/pgo/objs
	@ln -sfn ../../src objs/pgo/src
	@for f in Makefile.conf gh_config.h modules.cc; do ln -sfn ../../$$f objs/pgo/objs/$$f; done
	$(MAKE) -C objs/pgo -f $(CURDIR)/Makefile WITH_PGO=no \
	    CXXFLAGS="$(CXXFLAGS) $(PGO_GEN)" LDFLAGS="$(LDFLAGS) $(PGO_GEN)" objs/gatehouse
	@# Counters add up over runs: the old ones go first.
	find objs/pgo/objs -name '*.gcda' -delete
	$(PYTHON) contrib/pgo/train objs/pgo/objs/gatehouse
	cd objs/pgo && for f in $$(find objs -name '*.gcda'); do mkdir -p ../../$$(dirname $$f) && cp $$f ../../$$f || exit 1; done
	touch $@
endif

objs/unit_tests: $(LIB_OBJ) $(TEST_OBJ)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LIBS)

# What make install installs: the binary without its symbols and debug
# information, which stay apart in objs/gatehouse.debug (gdb finds them
# through the .gnu_debuglink section when they are put next to the binary
# or under /usr/lib/debug).
objs/gatehouse.debug: objs/gatehouse
	objcopy --only-keep-debug objs/gatehouse $@

objs/gatehouse.stripped: objs/gatehouse objs/gatehouse.debug
	objcopy --strip-all --add-gnu-debuglink=objs/gatehouse.debug objs/gatehouse $@

strip: objs/gatehouse.stripped

# Unit tests may use exceptions (doctest's CHECK_THROWS); no RTTI, like src/ (a
# class with virtuals would otherwise need typeinfo that src/ never emits). They
# are built without src/core/banned.h: doctest's implementation (in
# tests/unit/main.cc) calls atoi(), which that header poisons.
$(TEST_OBJ): CXXFLAGS := $(filter-out -include src/core/banned.h,$(CXXFLAGS)) \
	-fexceptions -Itests/unit

deps:
	@sh contrib/install-deps.sh

unit: objs/unit_tests
	./objs/unit_tests

integration: objs/gatehouse
	GATEHOUSE_BIN=$(CURDIR)/objs/gatehouse $(PYTHON) -m pytest -q tests/integration

# The README's test command. Dependencies first, then configure if this
# tree has never been configured, then a parallel build and every test.
check: deps
	@test -f objs/Makefile.conf || ./configure
	$(MAKE) -j$(NPROC) objs/gatehouse objs/unit_tests
	$(MAKE) lint
	./objs/unit_tests
	GATEHOUSE_BIN=$(CURDIR)/objs/gatehouse $(PYTHON) -m pytest -q tests/integration

lint:
	@sh contrib/lint.sh

# The demo serves the files of this tree, which the default worker user
# (nobody) may not be allowed to read (a clone under /root): started as
# root, its workers stay root ("user root;"); otherwise they are you.
RUN_PREFIX := $(CURDIR)/objs/run/
RUN_USER = $(shell test "$$(id -u)" = 0 && echo ' user root;')
run: deps
	@test -f objs/Makefile.conf || ./configure
	$(MAKE) -j$(NPROC) objs/gatehouse
	@mkdir -p $(RUN_PREFIX)logs
	@ln -sfn $(CURDIR)/html $(RUN_PREFIX)html
	@ln -sfn $(CURDIR)/conf $(RUN_PREFIX)conf
	@test -f conf/demo.crt -a -f conf/demo.key || $(MAKE) demo-cert
	./objs/gatehouse -p $(RUN_PREFIX) -c conf/demo.conf -g 'daemon off;$(RUN_USER)'

# The demo's TLS certificate: self-signed ECDSA P-256 for localhost, made
# here and never committed (.gitignore) nor installed.
demo-cert:
	@umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout conf/demo.key -out conf/demo.crt -days 365 -subj /CN=localhost \
	    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
	@chmod 644 conf/demo.crt
	@echo "made conf/demo.crt and conf/demo.key (self-signed, localhost)"

FUZZ_CXX ?= clang++
FUZZ_FLAGS := -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-exceptions \
	-Isrc -I. -DPCRE2_CODE_UNIT_WIDTH=8 -include src/core/banned.h -DGH_ASAN=1 -DGH_HAVE_JEMALLOC=0
# Everything but main(): objs/modules.cc names process::core_module. The
# libraries are the build's (objs/Makefile.conf) but jemalloc, which would
# take malloc from ASan.
FUZZ_LIB_SRC := $(LIB_SRC)
fuzz: objs/Makefile.conf
	@mkdir -p objs/fuzz
	@for f in $(FUZZ_SRC); do \
	    n=$$(basename $$f .cc); \
	    echo "building objs/fuzz/$$n"; \
	    $(FUZZ_CXX) $(FUZZ_FLAGS) -o objs/fuzz/$$n $$f $(FUZZ_LIB_SRC) objs/modules.cc \
	        $(filter -I% -D%,$(CXXFLAGS)) $(filter-out -ljemalloc,$(LIBS)) || exit 1; \
	done

# The installation, in the paths of ./configure (objs/Makefile.conf, all
# absolute), under $(DESTDIR) when set, as nginx's: the binary, the
# configuration files (each also as NAME.default; a file already there is
# kept), the welcome page, the log directories, the man pages, and in
# $(PREFIX)/share/gatehouse the systemd unit and the logrotate
# configuration with the configured paths written in.
CONF_DIR = $(patsubst %/,%,$(dir $(CONF_PATH)))
LOG_DIRS = $(sort $(patsubst %/,%,$(dir $(ERROR_LOG_PATH) $(HTTP_LOG_PATH))))
SHARE_DIR = $(PREFIX)/share/gatehouse
SUBST = sed -e 's|@SBIN_PATH@|$(SBIN_PATH)|g' -e 's|@CONF_PATH@|$(CONF_PATH)|g' \
	    -e 's|@PID_PATH@|$(PID_PATH)|g' -e 's|@LOG_FILES@|$(addsuffix /*.log,$(LOG_DIRS))|g'

install: objs/gatehouse.stripped
	install -d $(DESTDIR)$(dir $(SBIN_PATH)) $(DESTDIR)$(CONF_DIR)/conf.d \
	    $(addprefix $(DESTDIR),$(LOG_DIRS)) $(DESTDIR)$(dir $(PID_PATH)) $(DESTDIR)$(PREFIX)/html \
	    $(DESTDIR)$(MAN_PATH)/man8 $(DESTDIR)$(MAN_PATH)/man5 $(DESTDIR)$(SHARE_DIR)
	@# A new file renamed over the old one: a running binary cannot be
	@# written to (ETXTBSY), and keeps running from the old file.
	install -m 755 objs/gatehouse.stripped $(DESTDIR)$(SBIN_PATH).new
	mv -f $(DESTDIR)$(SBIN_PATH).new $(DESTDIR)$(SBIN_PATH)
	for f in conf/*; do \
	    case $$f in \
	        conf/demo.crt|conf/demo.key) continue;; \
	        conf/gatehouse.conf) t=$(DESTDIR)$(CONF_PATH);; \
	        *) t=$(DESTDIR)$(CONF_DIR)/$$(basename $$f);; \
	    esac; \
	    install -m 644 $$f $$t.default; \
	    test -f $$t || install -m 644 $$f $$t; \
	done
	@# The demo configuration serves HTTPS too: an installation gets its
	@# own self-signed certificate (never the build tree's), made once.
	@test -f $(DESTDIR)$(CONF_DIR)/demo.crt || { \
	    umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	        -keyout $(DESTDIR)$(CONF_DIR)/demo.key -out $(DESTDIR)$(CONF_DIR)/demo.crt \
	        -days 365 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	        2>/dev/null && chmod 644 $(DESTDIR)$(CONF_DIR)/demo.crt; }
	for f in html/*; do \
	    t=$(DESTDIR)$(PREFIX)/$$f; test -f $$t || install -m 644 $$f $$t || exit 1; \
	done
	install -m 644 man/gatehouse.8 $(DESTDIR)$(MAN_PATH)/man8/gatehouse.8
	install -m 644 man/gatehouse.conf.5 $(DESTDIR)$(MAN_PATH)/man5/gatehouse.conf.5
	for f in gatehouse.service logrotate; do \
	    $(SUBST) contrib/$$f > $(DESTDIR)$(SHARE_DIR)/$$f && \
	    chmod 644 $(DESTDIR)$(SHARE_DIR)/$$f || exit 1; \
	done

clean:
	rm -rf objs

-include $(shell find objs -path objs/pgo -prune -o -name '*.d' -print 2>/dev/null)
