# Sourced by the benchmark scripts: summaries of space-separated samples.

# stat: "median (min-max)" of the numbers on stdin, two decimals.
stat() {
    tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f (%.2f-%.2f)", m, a[1], a[NR]}'
}

# median: the median of the numbers on stdin.
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

# quantile P: the P-quantile (0-1) of the numbers on stdin, nearest rank, three decimals.
quantile() { grep . | sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p+0.5); if (i<1) i=1; printf "%.3f", a[i]}'; }

# rtt_stat: "median / p90" of the RTT samples on stdin, one per line.
rtt_stat() {
    local s
    s="$(cat)"
    echo "$(printf '%s\n' "$s" | quantile 0.5) / $(printf '%s\n' "$s" | quantile 0.9)"
}
