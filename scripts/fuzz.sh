#!/usr/bin/env bash
# Fuzzes the IDX / gzip reader (include/bilevel/data/idx.hpp) with libFuzzer.
#
#   scripts/fuzz.sh [SECONDS]       build, then fuzz for SECONDS (default 600), one process
#   scripts/fuzz.sh merge           add the inputs of build/fuzz/corpus that bring new coverage
#                                   to fuzz/corpus (the regression corpus tests/test_idx_corpus.cpp reads)
#   scripts/fuzz.sh build           only build build/fuzz/idx_fuzzer
#
# Needs clang++ with libFuzzer (Debian: apt-get install clang) and zlib. Inputs start from
# fuzz/corpus (read only) and what the fuzzer finds goes to build/fuzz/corpus; crashes, leaks,
# timeouts and out-of-memory inputs are written to build/fuzz/artifacts/. Reproduce one with
#   build/fuzz/idx_fuzzer build/fuzz/artifacts/crash-...
# Extra libFuzzer flags can be passed in $FUZZ_FLAGS (e.g. FUZZ_FLAGS=-seed=1), another clang++
# in $CXX_FUZZ.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
out=$root/build/fuzz
mkdir -p "$out/corpus" "$out/artifacts"
CXX=${CXX_FUZZ:-clang++}

build() {
  "$CXX" -std=c++20 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$root/include" "$root/fuzz/idx_fuzzer.cpp" -lz -o "$out/idx_fuzzer"
}

common=(-max_len=4096 -rss_limit_mb=2048 -malloc_limit_mb=64 -timeout=10 -dict="$root/fuzz/idx.dict")
# shellcheck disable=SC2206  # FUZZ_FLAGS is split into words on purpose
common+=(${FUZZ_FLAGS:-})
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

case "${1:-600}" in
  build)
    build
    echo "built $out/idx_fuzzer"
    ;;
  merge)
    [ -x "$out/idx_fuzzer" ] || build
    before=$(find fuzz/corpus -type f | wc -l)
    # Edge coverage only (-use_counters=0): merging by hit-count features too would add ~140
    # near-duplicates; this keeps the corpus to a few dozen small files.
    "$out/idx_fuzzer" "${common[@]}" -use_counters=0 -merge=1 fuzz/corpus "$out/corpus"
    echo "fuzz/corpus: $before files before the merge, $(find fuzz/corpus -type f | wc -l) after"
    ;;
  *[!0-9]*)
    echo "usage: $0 [SECONDS|build|merge]" >&2
    exit 2
    ;;
  *)
    build
    "$out/idx_fuzzer" "${common[@]}" -max_total_time="$1" -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/" "$out/corpus" fuzz/corpus
    ;;
esac
