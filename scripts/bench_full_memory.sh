#!/usr/bin/env bash
# Whole-process peak memory of a real `nslm-train loss=full` run at V = 1M: nslm's chunked exact
# cross-entropy (the default) beside the plain F.cross_entropy path (loss.chunked=false), same everything
# else. The ptb_example model on a generated corpus (data=synthetic, V = 1M), a few training steps and
# validation/test windows (exact softmax at V = 1M is ~13 s a step on a 2-core CPU).
#   bash scripts/bench_full_memory.sh            # prints one line per path: peak RSS (GNU time), wall-clock
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
COMMON=(experiment=ptb_example data=synthetic data.vocab_size=1000000 data.train_tokens=200000
        data.valid_tokens=2000 data.test_tokens=2000 trainer.max_epochs=1 +trainer.limit_train_batches=4
        +trainer.limit_val_batches=2 +trainer.limit_test_batches=2 task_name=bench_full_memory
        trainer.enable_progress_bar=false logger=[] print_config=false resume=false)
for path in chunked plain; do
  flag=$([ "$path" = plain ] && echo "loss.chunked=false" || echo "loss.chunked=true")
  log=$(mktemp)
  /usr/bin/time -v "$BIN/nslm-train" "${COMMON[@]}" "$flag" >/dev/null 2>"$log" || { tail -20 "$log"; exit 1; }
  peak_kb=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  printf "loss=full %-7s peak RSS %6.2f GB  wall %s\n" "$path" "$(echo "$peak_kb / 1048576" | bc -l)" "$wall"
  rm -f "$log"
done
