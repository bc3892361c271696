# Thin wrapper over CMake. `make demo` and `make test` work on a fresh Debian 12 machine: they
# install whatever Debian packages are missing first (as root, or through sudo).
#   make test SANITIZE=1   builds in build-asan/ with ASan+UBSan and runs every test there.

BUILD_DIR ?= build
SANITIZE ?= 0
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
ifeq ($(SANITIZE),1)
  BUILD_DIR := build-asan
  CMAKE_FLAGS += -DZEXEC_SANITIZE=ON
endif

APT_PACKAGES := cmake g++ make pkg-config libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libspdlog-dev \
                libgtest-dev python3-zmq python3-msgpack python3-pytest clang libclang-rt-14-dev \
                python3-venv python3-setuptools python3-wheel \
                libsystemd-dev systemd libtomlplusplus-dev libcpp-httplib-dev libsqlite3-dev \
                dpkg-dev groff-base debhelper dh-python lintian debootstrap systemd-container strace
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps configure build demo test package package-check bench clean format

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing missing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The seed example: 10 random_sleep tasks on an embedded daemon, printed in completion order,
# then the 0.05 s-timeout variant.
demo: build
	$(BUILD_DIR)/bin/as_completed
	$(BUILD_DIR)/bin/as_completed_timeout

test: build package
	cd $(BUILD_DIR) && ctest --output-on-failure -j2 --timeout 300

# Measurements next to their baselines (raw ZeroMQ relay, ProcessPoolExecutor, Gearman and
# Celery where installed): one table, also in build-bench/bench-results.md. Not part of `test`.
bench: deps
	@cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DZEXEC_BUILD_TESTS=OFF >/dev/null
	cmake --build build-bench -j$(JOBS)
	bench/run.sh build-bench

# The Debian packages (zexec, libzexec0, libzexec-dev, python3-zexec) into build-deb/, built by
# debhelper from packaging/debian on a copy of the sources (packaging/build-debs.sh).
DEB_DIR ?= build-deb
package: deps
	packaging/build-debs.sh $(DEB_DIR) $(JOBS)

# The packages built in a clean Debian 12 with only their Build-Depends (minutes; not in `test`).
package-check: deps
	packaging/check-build-depends.sh $(JOBS)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf build build-asan build-deb build-bench
