# The two commands of the README:
#   make demo   installs what is missing, builds, and runs the demo
#   make test   installs what is missing, builds, and runs every test
# Both need root (boxes are made of namespaces, cgroups and mounts).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
JOBS        ?= $(shell nproc)

.PHONY: all setup build demo test unit-test asan-test integration-test e2e-test format-check format bench clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)/upstream

test: build
	@scripts/test.sh $(BUILD) $(ASAN_BUILD)

format-check: setup
	@scripts/format.sh --check

format: setup
	@scripts/format.sh

bench: build
	@bench/run.sh $(BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
