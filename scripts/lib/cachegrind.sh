# Shared by scripts/bench-*-cachegrind.sh (sourced): valgrind installed when missing, and
# `counts BINARY ARGS...`, which prints "instructions D1-misses LL-misses" of one run
# (data misses; the last-level cache simulated at 1 MiB, this machine's L2).
if ! command -v valgrind >/dev/null; then
  echo "installing valgrind (Debian package)" >&2
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
  command -v valgrind >/dev/null || { echo "valgrind is missing and could not be installed" >&2; exit 1; }
fi

# A run that fails (valgrind exits with the program's status) prints its log and fails.
counts() {
  local log
  log=$(mktemp)
  if ! valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 \
    --cachegrind-out-file=/dev/null --log-file="$log" "$@" >/dev/null; then
    echo "failed under cachegrind: $*" >&2
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  awk '/I +refs:/ {i=$4} /D1 +misses:/ {d=$4} /LLd +misses:/ {l=$4}
       END {gsub(",", "", i); gsub(",", "", d); gsub(",", "", l); print i, d, l}' "$log"
  rm -f "$log"
}

# `per_unit LABEL N "i1 d1 l1" "i2 d2 l2" UNITS`: one table row of the difference of two
# runs divided by UNITS (negative miss differences, noise, shown as 0).
per_unit() {
  local label=$1 n=$2 units=$5
  read -r i1 d1 l1 <<<"$3"
  read -r i2 d2 l2 <<<"$4"
  if [[ -z $i1 || -z $l1 || -z $i2 || -z $l2 ]]; then
    echo "no cachegrind counts for $label $n" >&2
    return 1
  fi
  awk -v m="$label" -v t="$n" -v i="$((i2 - i1))" -v d="$((d2 - d1))" -v l="$((l2 - l1))" -v u="$units" \
    'BEGIN { d = d < 0 ? 0 : d; l = l < 0 ? 0 : l; printf "%-14s %7s %13.1f %10.2f %10.2f\n", m, t, i / u, d / u, l / u }'
}
