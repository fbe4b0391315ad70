# dfkd top-level commands. `make demo` runs the main job, `make test` the
# test suite; both install what they need first (scripts/install-deps.sh).
BUILD ?= build
JOBS ?= 2
CTEST_ARGS ?=

.PHONY: all deps configure build test test-unit demo bench clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Every tier that can run on this machine; the gpu tier reports itself as
# skipped where no CUDA LibTorch is present.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

# The main job: a local cluster runs the Fashion-MNIST KDCI campaign and prints
# the paper-style table (see README.md).
demo: build
	bash scripts/demo.sh $(BUILD)

bench: build
	bash bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD)
