#!/usr/bin/env bash
# kill -9 crash harness for the real binaries, outside the test suite.
#
#   tools/crash_harness.sh [ROUNDS]          (default 100)
#
# Builds the release binaries, then for each round:
#   1. runs `evlog --dir D append` fed by an awk generator of JSON lines
#      (each line's payload names its round and line number), collecting
#      the acknowledgements it prints ({"seq":N,"id":"..."} once durable);
#   2. kills it with SIGKILL after a random delay: 2..200 ms, or in about
#      one round in five 0..2 ms, so that the kill lands while `evlog`
#      starts up and opens (recovers) the log;
#   3. in about one round in four, also starts `evlog info` (which opens and
#      so recovers the log, cutting the torn tail the kill left) and kills
#      it after 0..2 ms, to crash the recovery itself;
#   4. runs `evlog --dir D info` (recovers: a torn tail fails verify until
#      then), `evlog-dump D --verify` (must exit 0), and `evlog --dir D
#      replay`, and checks: sequence numbers 1..last with no gap; the events
#      of earlier rounds unchanged (same seq and id as in the previous
#      replay); the new events in the order they were sent; every
#      acknowledged seq, of this round and all earlier ones, present with
#      the acknowledged id.
# Ends with "crash_harness: R rounds, E acknowledged events verified, L lost"
# and exits 1 if anything was lost or corrupt (keeping the data directory),
# 2 on a usage or build error.
#
# Environment: CRASH_SEED seeds the delays (the default is printed);
# CARGO_TARGET_DIR is honoured; KEEP=1 keeps the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-100}"
if ! [[ "$rounds" =~ ^[0-9]+$ ]] || ((rounds < 1)); then
    echo "usage: $0 [ROUNDS]" >&2
    exit 2
fi
seed="${CRASH_SEED:-$(date +%s)}"
RANDOM=$seed

cargo build --release || exit 2
target="${CARGO_TARGET_DIR:-target}/release"
evlog="$target/evlog"
dump="$target/evlog-dump"

work="$(mktemp -d "${TMPDIR:-/tmp}/crash_harness.XXXXXX")"
data="$work/data"
acks_all="$work/acks.all" # "seq id" of every acknowledgement so far
ids_prev="$work/ids.prev" # "seq id" of the previous replay
: >"$acks_all"
: >"$ids_prev"

acknowledged=0
lost=0
done_rounds=0
early_kills=0
recovery_kills=0
started=$(date +%s.%N)

summary() {
    echo "crash_harness: $done_rounds rounds, $acknowledged acknowledged events verified, $lost lost"
}

# Reports a broken promise, keeps the evidence, and exits 1.
fail() {
    echo "crash_harness: round $round: $*" >&2
    echo "crash_harness: seed $seed; data kept in $work" >&2
    summary
    exit 1
}

# Sleeps for $1 microseconds.
sleep_us() {
    sleep "$(printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)))"
}

# Endless JSON lines for round $1, flushed (and paused 1 ms) every $2 lines.
# Ends when `evlog` dies and the pipe breaks.
generate() {
    awk -v round="$1" -v burst="$2" 'BEGIN {
        pad = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
        pad = pad pad pad
        for (i = 0; ; i++) {
            printf "{\"type\":\"crash.harness\",\"payload\":{\"round\":%d,\"i\":%d,\"pad\":\"%s\"}}\n",
                round, i, substr(pad, 1, (round * 31 + i * 17) % 150)
            if (i % burst == burst - 1) {
                fflush()
                system("sleep 0.001")
            }
        }
    }'
}

for ((round = 0; round < rounds; round++)); do
    round_acks="$work/acks.$round"
    round_err="$work/stderr.$round"
    ids_new="$work/ids.new"

    prev_last=0
    if [[ -s "$ids_prev" ]]; then
        prev_last=$(wc -l <"$ids_prev")
    fi
    if ((RANDOM % 5 == 0)); then
        delay_us=$((RANDOM % 2000))
    else
        delay_us=$((2000 + (RANDOM * 32768 + RANDOM) % 198000))
    fi
    bursts=(1 8 64 512 100000)
    burst=${bursts[RANDOM % ${#bursts[@]}]}

    generate "$round" "$burst" | "$evlog" --dir "$data" append >"$round_acks" 2>"$round_err" &
    pid=$!
    sleep_us "$delay_us"
    kill -9 "$pid" 2>/dev/null || true
    # (Braces with 2>/dev/null: no "Killed" job notice from bash.)
    status=0
    { wait "$pid" || status=$?; } 2>/dev/null
    { wait || true; } 2>/dev/null # the generator, which the broken pipe ends
    if ((status != 137)); then
        fail "evlog append ended by itself (status $status) before the kill after ${delay_us} us: $(cat "$round_err")"
    fi

    # The acknowledgements of this round: consecutive from the recovered
    # end, the k-th for line k. A line cut by the kill can only be last.
    if ! awk -v prev="$prev_last" '
        /^\{"seq":[0-9]+,"id":"[0-9a-f-]+"\}$/ {
            if (cut) { print "acknowledgement after a cut line: " $0 > "/dev/stderr"; exit 1 }
            split($0, part, "\"")
            seq = part[3]; gsub(/[^0-9]/, "", seq)
            k++
            if (seq + 0 != prev + k) { print "acknowledgement " k " has seq " seq ", expected " prev + k > "/dev/stderr"; exit 1 }
            print seq, part[6]
            next
        }
        { cut = 1 }' "$round_acks" >"$work/acks.round"; then
        fail "bad acknowledgements (see $round_acks)"
    fi
    round_acked=$(wc -l <"$work/acks.round")
    cat "$work/acks.round" >>"$acks_all"
    if ((round_acked == 0)); then
        early_kills=$((early_kills + 1))
    fi

    # Sometimes crash the recovery itself.
    if ((RANDOM % 4 == 0)); then
        "$evlog" --dir "$data" info >/dev/null 2>&1 &
        info_pid=$!
        sleep_us $((RANDOM % 2000))
        kill -9 "$info_pid" 2>/dev/null || true
        info_status=0
        { wait "$info_pid" || info_status=$?; } 2>/dev/null
        if ((info_status == 137)); then
            recovery_kills=$((recovery_kills + 1))
        elif ((info_status != 0)); then
            fail "evlog info failed (status $info_status) before its kill"
        fi
    fi

    # Recover, then check.
    if ! info=$("$evlog" --dir "$data" info 2>&1); then
        fail "evlog info (recovery) failed: $info"
    fi
    last=$(printf '%s' "$info" | sed -n 's/.*"last_seq":\([0-9][0-9]*\).*/\1/p')
    last=${last:-0}
    if ! verdict=$("$dump" "$data" --verify 2>&1); then
        fail "evlog-dump --verify after recovery: $verdict"
    fi
    if ! "$evlog" --dir "$data" replay >"$work/replay" 2>"$work/replay.err"; then
        fail "evlog replay failed: $(cat "$work/replay.err")"
    fi
    # Every line: seq = line number; new events: this round's lines in order.
    if ! awk -v prev="$prev_last" -v round="$round" -v out="$ids_new" '
        {
            if (!match($0, /^\{"seq":[0-9]+,"id":"[0-9a-f-]+"/)) { print "unreadable line " NR > "/dev/stderr"; exit 1 }
            split(substr($0, RSTART, RLENGTH), part, "\"")
            seq = part[3]; gsub(/[^0-9]/, "", seq)
            if (seq + 0 != NR) { print "line " NR " holds seq " seq ": gap or duplicate" > "/dev/stderr"; exit 1 }
            print seq, part[6] > out
            if (NR > prev) {
                if (!match($0, /"payload":\{"round":[0-9]+,"i":[0-9]+/)) { print "seq " seq ": not a harness event" > "/dev/stderr"; exit 1 }
                split(substr($0, RSTART + 19, RLENGTH - 19), ri, ",\"i\":")
                if (ri[1] + 0 != round || ri[2] + 0 != NR - prev - 1) {
                    print "seq " seq " holds round " ri[1] " line " ri[2] ", expected round " round " line " NR - prev - 1 > "/dev/stderr"; exit 1
                }
            }
        }
        END { close(out) }' "$work/replay"; then
        fail "replay does not hold the history (see $work/replay)"
    fi
    [[ -e "$ids_new" ]] || : >"$ids_new"
    count=$(wc -l <"$ids_new")
    if ((count != last)); then
        fail "replay returned $count events, info says last_seq $last"
    fi
    if ((count < prev_last)); then
        fail "the log shrank from $prev_last to $count events"
    fi
    if ! head -n "$prev_last" "$ids_new" | cmp -s - "$ids_prev"; then
        fail "events of earlier rounds changed (compare $ids_prev and $ids_new)"
    fi
    # Every acknowledgement so far, with its id.
    lost=$(awk 'FNR == NR { id[$1] = $2; next }
        !($1 in id) || id[$1] != $2 { missing++; if (missing <= 10) print "lost: seq " $1 " id " $2 > "/dev/stderr" }
        END { print missing + 0 }' "$ids_new" "$acks_all")
    acknowledged=$(wc -l <"$acks_all")
    mv "$ids_new" "$ids_prev"
    done_rounds=$((round + 1))
    if ((lost > 0)); then
        fail "$lost acknowledged events lost"
    fi
done

elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "crash_harness: seed $seed, ${elapsed} s, $(wc -l <"$ids_prev") events in the log, $early_kills appends killed before their first acknowledgement (startup, recovery or first write), $recovery_kills recoveries (evlog info) killed"
if [[ "${KEEP:-0}" == 1 ]]; then
    echo "crash_harness: data kept in $work"
else
    rm -rf "$work"
fi
summary
