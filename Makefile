# The two commands of the README:
#   make demo   installs what is missing, builds, and runs the demo
#   make test   installs what is missing, builds, and runs every test
# Both need root (boxes are made of namespaces, cgroups and mounts).

BUILD       ?= build
ASAN_BUILD  ?= build-asan
JOBS        ?= $(shell nproc)

.PHONY: all setup build demo test fuzz format-check format bench clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUPSTREAM_WERROR=ON

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)/upstream

test: build
	@scripts/test.sh $(BUILD) $(ASAN_BUILD)

# Long fuzzing of every parser (FUZZ_SECONDS per target, default 300; FUZZ_TARGETS to choose):
# run it before submitting a change to a parser. Crashes land in tests/fuzz/regressions/.
fuzz: setup
	@tests/fuzz/run.sh fuzz $(FUZZ_SECONDS)

format-check: setup
	@scripts/format.sh --check

format: setup
	@scripts/format.sh

bench: build
	@bench/run.sh $(BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
