#!/usr/bin/env bash
# Fuzzes vcache's parsers with cargo fuzz (libFuzzer; nightly toolchain, `cargo install cargo-fuzz`).
#   fuzz/run.sh                      the bounded run CI makes: FUZZ_RUNS inputs per target (default
#                                    200000) from a fixed seed, starting from fuzz/seeds only, so it
#                                    repeats exactly
#   FUZZ_SECONDS=3600 fuzz/run.sh    the long run: an hour per target, growing fuzz/corpus/<target>
# A failing input is saved under fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run -O <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
targets=(${FUZZ_TARGETS:-http_request_head http_chunked http_ranges tsindex fmp4})
for t in "${targets[@]}"; do
  max_len=4096
  case $t in tsindex | fmp4) max_len=65536 ;; esac
  if [ -n "${FUZZ_SECONDS:-}" ]; then
    mkdir -p "corpus/$t"
    corpus="corpus/$t"
    limit=(-max_total_time="$FUZZ_SECONDS")
  else
    corpus="$scratch/$t"
    mkdir -p "$corpus"
    limit=(-runs="${FUZZ_RUNS:-200000}" -seed=1)
  fi
  echo "fuzz: $t (${limit[*]})"
  set +e
  cargo +nightly fuzz run -O "$t" "$corpus" "seeds/$t" -- "${limit[@]}" -max_len="$max_len" 2>&1 |
    grep -E '^(Done|==|SUMMARY)|panicked|ERROR|error'
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "fuzz: $t FAILED (exit $status)"; exit 1; }
done
echo "fuzz: every target ran clean"
