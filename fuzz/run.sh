#!/usr/bin/env bash
# Runs toolgraph's fuzz targets, each for SECONDS (default 10) over its committed corpus
# (fuzz/corpus/<target>). New inputs go to a scratch directory, so the corpus stays as
# committed. Stops at the first crash, which libFuzzer writes to fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]        (all targets when none is named)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and works on stable Rust:
# RUSTC_BOOTSTRAP=1 lets the stable compiler take the -Z flags cargo-fuzz passes, and no
# sanitizer is used (AddressSanitizer needs nightly; the workspace has no unsafe code).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(input_parser references sse_decoder llm_wire config mcp_result)
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build --sanitizer none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    case $target in
        input_parser | llm_wire | mcp_result) dict=(-dict=fuzz/dict/json.dict) ;;
        config) dict=(-dict=fuzz/dict/toml.dict) ;;
        *) dict=() ;;
    esac
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    # -timeout: an input that takes over 10 s is a hang, and a failure.
    if cargo fuzz run "$target" --sanitizer none "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        echo "fuzz $target: ${runs:-?} inputs in ${seconds} s (${speed:-?}/s), no crash"
    else
        tail -n 80 "$log"
        echo "fuzz $target: FAILED (the input is under fuzz/artifacts/$target/)"
        exit 1
    fi
done
# The plain closing line CI reads: targets that ran without a crash.
echo "fuzz: ${#targets[@]} passed, 0 failed"
