#!/usr/bin/env bash
# Runs the given make targets in order, timing each, and prints a table of their seconds at the
# end, also when one fails (then the failing phase is marked and the exit status is its own).
#   scripts/phases.sh TARGET...
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ms() { echo $(( $(date +%s%N) / 1000000 )); }
names=(); took=(); status=0; failed=""
start_all=$(ms)
for target in "$@"; do
  t0=$(ms)
  make --no-print-directory "$target"
  rc=$?
  names+=("$target"); took+=("$(( $(ms) - t0 ))")
  if [ $rc -ne 0 ]; then status=$rc; failed=$target; break; fi
done
total=$(( $(ms) - start_all ))
printf '\n| phase | seconds |\n|---|---:|\n'
for i in "${!names[@]}"; do
  mark=""; [ "${names[$i]}" = "$failed" ] && mark=" (FAILED)"
  printf '| %s%s | %d.%d |\n' "${names[$i]}" "$mark" "$(( took[i] / 1000 ))" "$(( took[i] % 1000 / 100 ))"
done
printf '| total | %d.%d |\n' "$(( total / 1000 ))" "$(( total % 1000 / 100 ))"
exit $status
