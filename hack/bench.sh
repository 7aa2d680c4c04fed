#!/usr/bin/env bash
# hack/bench.sh — end-to-end benchmark of the webhook's hot path (user.created
# → 20 signup credits) against pgbench running the same SQL on the same
# PostgreSQL, fsync on. See docs/benchmarks.md for what it measures and why.
#
#   bash hack/bench.sh
#
# Knobs (environment):
#   BENCH_EVENTS=20000         signed user.created events per service run
#   BENCH_CLIENTS="16 64"      concurrent senders / pgbench clients, one run each
#   BENCH_PGBENCH_SECONDS=20   length of each pgbench run
#   BENCH_MAX_LOAD=0.7         wait while the 1-minute load average is above this...
#   BENCH_MAX_BUSY=0.3         before each run, wait while other processes keep more cores than this busy...
#   BENCH_LOAD_WAIT=900        ...(each wait) for at most this many seconds, then measure anyway
#   BENCH_DB_MAX_CONNS=        the service's DB_MAX_CONNS (empty: the service default)
#   BENCH_WEBHOOK_ENV=         more NAME=value settings for the service, e.g. "GOGC=400"
#   BENCH_SENDER_CLIENT=lean   svixsend's -client for the measured runs: lean, or net/http
#   BENCH_ONE_TRIP=1           also run pgbench with the same transaction sent in one round trip
#   BENCH_PREPARED=1           also run pgbench with the same statements prepared (-M prepared)
#   BENCH_PROFILE=0            1: afterwards, profile one more service run with perf
#   BENCH_OUT_DIR=             keep the report, logs, generated pgbench scripts, CPU accounting and profile here
#   BENCH_REV=                 build the webhook from this git revision (e.g. HEAD) instead of the
#                              working tree; cmd/svixsend always comes from the working tree
#   PG_BIN=                    PostgreSQL bin directory (default: newest /usr/lib/postgresql/*/bin)
set -euo pipefail

EVENTS=${BENCH_EVENTS:-20000}
CLIENTS=${BENCH_CLIENTS:-16 64}
PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-20}
MAX_LOAD=${BENCH_MAX_LOAD:-0.7}
LOAD_WAIT=${BENCH_LOAD_WAIT:-900}
MAX_BUSY=${BENCH_MAX_BUSY:-0.3}
DB_MAX_CONNS=${BENCH_DB_MAX_CONNS:-}
WEBHOOK_ENV=${BENCH_WEBHOOK_ENV:-}
SENDER_CLIENT=${BENCH_SENDER_CLIENT:-lean}
PROFILE=${BENCH_PROFILE:-0}
ONE_TRIP=${BENCH_ONE_TRIP:-1}
PREPARED=${BENCH_PREPARED:-1}
OUT_DIR=${BENCH_OUT_DIR:-}
REV=${BENCH_REV:-}
WARMUP_EVENTS=2000

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cd "$(dirname "$0")/.."

if [[ -z ${PG_BIN:-} ]]; then
	PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
for b in initdb pg_ctl psql pgbench; do
	[[ -x $PG_BIN/$b ]] || die "no $b in PG_BIN=$PG_BIN (install postgresql and postgresql-contrib)"
done
command -v go >/dev/null || die "go is not on PATH"
command -v curl >/dev/null || die "curl is not on PATH"
CLK_TCK=$(getconf CLK_TCK)

# PostgreSQL refuses to run as root: run the server as the postgres user then.
as_pg() {
	if [[ $EUID -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

work=$(mktemp -d /tmp/creditgate-bench.XXXXXX)
chmod 755 "$work"
pgdir=$work/pg
pgdata=$pgdir/data
pglog=$pgdir/postgres.log
wh_pid=
perf_pid=
pg_started=
bg_pid=

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2>/dev/null; then
		pkill -TERM -P "$bg_pid"
		kill -TERM "$bg_pid"
		wait "$bg_pid"
	fi
	if [[ -n $perf_pid ]] && kill -0 "$perf_pid" 2>/dev/null; then
		kill -INT "$perf_pid"
		wait "$perf_pid"
	fi
	if [[ -n $wh_pid ]] && kill -0 "$wh_pid" 2>/dev/null; then
		kill -TERM "$wh_pid"
		wait "$wh_pid"
	fi
	if [[ -n $pg_started ]]; then
		as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
	fi
	if [[ -n $OUT_DIR ]]; then
		mkdir -p "$OUT_DIR"
		cp "$work"/*.txt "$work"/*.pgbench "$work"/*.vars "$work"/*.log "$pglog" "$OUT_DIR"/ 2>/dev/null
		# perf report -i perf.data needs the very binary it sampled.
		[[ -f $work/perf.data ]] && cp "$work/perf.data" "$work/webhook" "$OUT_DIR"/
		log "results kept in $OUT_DIR"
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Long commands run in the background while the script waits for them: bash
# runs a trap only between foreground commands, and a signal to the script
# must stop them at once.

# run_bg CPUFILE COMMAND...: runs COMMAND and writes its user and system CPU
# seconds to CPUFILE; returns COMMAND's status.
run_bg() {
	local cpu=$1 rc=0
	shift
	(
		st=0
		"$@" || st=$?
		# Not in a pipeline: there `times` would run in a subshell of its own.
		times >"$cpu.times"
		awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2], s[1] * 60 + s[2] }' \
			"$cpu.times" >"$cpu"
		rm -f "$cpu.times"
		exit "$st"
	) &
	bg_pid=$!
	wait "$bg_pid" || rc=$?
	bg_pid=
	return "$rc"
}

nap() {
	sleep "$1" &
	bg_pid=$!
	wait "$bg_pid" || true
	bg_pid=
}

free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free TCP port found"
}

# ---- machine and CPU accounting -------------------------------------------

# proc_ticks PID: the process's user+system CPU time, in clock ticks.
proc_ticks() {
	local s f
	read -r s <"/proc/$1/stat"
	# Fields after "pid (comm) ": f[0] is the state, f[11] utime, f[12] stime.
	read -r -a f <<<"${s##*) }"
	echo $((f[11] + f[12]))
}

# pg_ticks: CPU ticks of this cluster: the postmaster (with the children it
# has reaped) plus its live children (backends, walwriter, checkpointer, ...).
pg_ticks() {
	local pm total=0 p s f
	read -r pm <"$pgdata/postmaster.pid"
	for p in /proc/[0-9]*/stat; do
		read -r s 2>/dev/null <"$p" || continue
		# f[1] is the parent, f[11] utime, f[12] stime, f[13] and f[14] the
		# reaped children's.
		read -r -a f <<<"${s##*) }"
		if [[ ${s%% *} == "$pm" ]]; then
			total=$((total + f[11] + f[12] + f[13] + f[14]))
		elif [[ ${f[1]} == "$pm" ]]; then
			total=$((total + f[11] + f[12]))
		fi
	done
	echo "$total"
}

# machine_ticks: busy CPU ticks of the whole machine, all cores (steal, the
# time the hypervisor gave to other guests, is not this machine's work).
machine_ticks() {
	local user nice system irq softirq
	# cpu user nice system idle iowait irq softirq steal ...
	read -r _ user nice system _ _ irq softirq _ </proc/stat
	echo $((user + nice + system + irq + softirq))
}

calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }

# others_busy: cores busy with anything but this benchmark, over 5 idle seconds.
others_busy() {
	local m0 m1
	m0=$(machine_ticks)
	sleep 5
	m1=$(machine_ticks)
	calc "($m1 - $m0) / $CLK_TCK / 5" 2
}

# quiet: wait until other work on this machine leaves the cores free.
quiet() {
	local waited=0 load busy
	while :; do
		load=$(cut -d' ' -f1 /proc/loadavg)
		busy=$(others_busy)
		if awk -v b="$busy" -v m="$MAX_BUSY" 'BEGIN { exit !(b <= m) }'; then
			break
		fi
		if ((waited >= LOAD_WAIT)); then
			log "other processes still use $busy cores after ${waited}s: measuring anyway"
			break
		fi
		log "other processes use $busy cores (load average $load): waiting 20s"
		nap 20
		waited=$((waited + 20))
	done
	QUIET_BUSY=$busy
}

percentile() { # percentile P FILE (sorted numbers, one a line)
	awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print 0; exit } r = int(NR * p / 100 + 0.999999); if (r < 1) r = 1; print v[r] }' "$2"
}

# ---- setup -------------------------------------------------------------------

if [[ -n $REV ]]; then
	log "building cmd/webhook at $REV"
	mkdir "$work/src"
	git archive "$REV" | tar -x -C "$work/src"
	(cd "$work/src" && go build -o "$work/webhook" ./cmd/webhook)
	built="$(git rev-parse --short "$REV")"
else
	log "building cmd/webhook from the working tree"
	go build -o "$work/webhook" ./cmd/webhook
	built="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- cmd/webhook pkg migrations go.mod || echo ' + uncommitted changes')"
fi
go build -o "$work/svixsend" ./cmd/svixsend

load=$(cut -d' ' -f1 /proc/loadavg)
waited=0
while awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }' && ((waited < LOAD_WAIT)); do
	log "1-minute load average $load > $MAX_LOAD (other work on this machine): waiting 60s"
	nap 60
	waited=$((waited + 60))
	load=$(cut -d' ' -f1 /proc/loadavg)
done
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at start: $START_LOAD"

mkdir -p "$pgdir"
if [[ $EUID -eq 0 ]]; then
	chown postgres: "$pgdir"
fi
chmod 700 "$pgdir"
pgport=$(free_port)
log "starting PostgreSQL ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$pgport, fsync on"
as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
# The settings of pkg/pglocal, but durable: fsync and synchronous_commit stay on
# (the defaults), full_page_writes too. pg_stat_statements counts round trips.
as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$pglog" -w -t 60 start -o "-p $pgport \
	-c listen_addresses=127.0.0.1 -c unix_socket_directories=$pgdir \
	-c max_connections=300 -c shared_buffers=128MB \
	-c fsync=on -c synchronous_commit=on -c full_page_writes=on \
	-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=on \
	-c log_line_prefix='%m [%p] %a '" >/dev/null
pg_started=1

psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
psql_ -d postgres -c "CREATE EXTENSION pg_stat_statements" -c "CREATE DATABASE creditgate" -c "CREATE DATABASE pgbench"
dburl() { echo "postgres://postgres@127.0.0.1:$pgport/$1?sslmode=disable"; }
for db in creditgate pgbench; do
	DATABASE_URL=$(dburl "$db") LOG_LEVEL=warn "$work/webhook" migrate
done

httpport=$(free_port)
metricsport=$(free_port)
secret="whsec_$(head -c 24 /dev/urandom | base64)"
url="http://127.0.0.1:$httpport/api/webhooks/clerk"
# LOG_LEVEL=warn: at info the service writes one JSON line per delivery, and on
# two shared cores that log I/O would be measured rather than the hot path.
read -r -a webhook_env <<<"$WEBHOOK_ENV ${DB_MAX_CONNS:+DB_MAX_CONNS=$DB_MAX_CONNS}"
env DATABASE_URL="$(dburl creditgate)" CLERK_WEBHOOK_SIGNING_SECRET="$secret" \
	HTTP_ADDR="127.0.0.1:$httpport" METRICS_ADDR="127.0.0.1:$metricsport" LOG_LEVEL=warn \
	"${webhook_env[@]}" \
	"$work/webhook" 2>"$work/webhook.log" &
wh_pid=$!
for _ in $(seq 100); do
	if curl -fsS "http://127.0.0.1:$httpport/readyz" >/dev/null 2>&1; then
		break
	fi
	kill -0 "$wh_pid" 2>/dev/null || die "webhook exited: $(cat "$work/webhook.log")"
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$httpport/readyz" >/dev/null || die "webhook not ready: $(cat "$work/webhook.log")"
log "webhook (pid $wh_pid) serving on 127.0.0.1:$httpport, LOG_LEVEL=warn, DB_MAX_CONNS=${DB_MAX_CONNS:-default} $WEBHOOK_ENV"

export CLERK_WEBHOOK_SIGNING_SECRET=$secret
log "warm-up: $WARMUP_EVENTS events from 16 senders"
"$work/svixsend" -url "$url" -n "$WARMUP_EVENTS" -c 16 >"$work/warmup.txt" 2>&1 ||
	die "warm-up failed: $(cat "$work/warmup.txt")"

# ---- capture the hot path's SQL ---------------------------------------------
# One delivery with log_statement=all shows every round trip of the hot path,
# and the exact SQL the service sends, which the pgbench script then replays.
psql_ -d postgres -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2 # also lets the pool go idle for more than a second: a cold delivery
offset=$(stat -c %s "$pglog")
"$work/svixsend" -url "$url" >"$work/capture.txt" 2>&1 || die "capture delivery failed: $(cat "$work/capture.txt")"
sleep 0.5
psql_ -d postgres -c "ALTER SYSTEM RESET log_statement" -c "SELECT pg_reload_conf()" >/dev/null
cap_svix=$(sed -n 's/.*svix-id=\([^ ]*\).*/\1/p' "$work/capture.txt")
cap_user=$(sed -n 's/.* user=\([^ ]*\).*/\1/p' "$work/capture.txt")
[[ -n $cap_svix && -n $cap_user ]] || die "cannot read the captured ids: $(cat "$work/capture.txt")"
cap_uid=$(psql_ -d creditgate -At -c "SELECT id FROM users WHERE clerk_id = '$cap_user'")
# Split the log into statements (a statement's continuation lines do not start
# with a timestamp); keep those of the service's connections, and mark those
# that failed (an ERROR line follows them): a failed statement is a round trip
# too, but pgbench cannot replay it. A statement sent with the extended
# protocol (pgx's prepared statements) is logged as "execute NAME: SQL" with
# its bound values in a "DETAIL:  parameters: $1 = '...', $2 = NULL" line;
# the values are written back into the SQL as literals (PostgreSQL logs every
# value quoted, which its type inference reads as the parameter's type), so
# that the pgbench scripts below replay the same statement, and -M prepared
# turns them into bound parameters again.
tail -c +"$((offset + 1))" "$pglog" | awk -v dir="$work" '
	# subst: sql with each $n replaced by its logged value.
	function subst(sql, params,   out, i, j, num) {
		out = ""
		while (match(sql, /\$[0-9]+/)) {
			num = substr(sql, RSTART + 1, RLENGTH - 1) + 0
			if (!(num in params)) {
				printf "bench.sh: no logged value for $%d\n", num > "/dev/stderr"
				bad = 1
				exit 1
			}
			out = out substr(sql, 1, RSTART - 1) params[num]
			sql = substr(sql, RSTART + RLENGTH)
		}
		return out sql
	}
	# parse_params: the parameter values of a log line ($1 = a quoted value or NULL, ...) into params[1..].
	function parse_params(text, params,   num, j, v) {
		delete params
		while (match(text, /^\$[0-9]+ = /)) {
			num = substr(text, 2, RLENGTH - 4) + 0
			text = substr(text, RLENGTH + 1)
			if (substr(text, 1, 4) == "NULL") {
				params[num] = "NULL"
				text = substr(text, 5)
			} else if (substr(text, 1, 1) == "\047") {
				v = "\047"
				text = substr(text, 2)
				for (;;) {
					j = index(text, "\047")
					if (j == 0) {
						print "bench.sh: an unterminated logged parameter" > "/dev/stderr"
						bad = 1
						exit 1
					}
					v = v substr(text, 1, j)
					text = substr(text, j + 1)
					if (substr(text, 1, 1) != "\047")
						break
					v = v "\047"
					text = substr(text, 2)
				}
				params[num] = v
			} else {
				print "bench.sh: cannot read logged parameters: " substr(text, 1, 60) > "/dev/stderr"
				bad = 1
				exit 1
			}
			sub(/^, /, "", text)
		}
	}
	function flush() {
		if (!n || done[n])
			return
		done[n] = 1
		if (params_text != "") {
			parse_params(params_text, params)
			sql[n] = subst(sql[n], params)
		}
		printf "%s\n", sql[n] > (dir "/stmt." n)
		close(dir "/stmt." n)
	}
	/^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] / {
		keep = 0
		if (index($0, " creditgate LOG:  statement: ") || $0 ~ / creditgate LOG:  execute [^:]*: /) {
			flush()
			if (index($0, " creditgate LOG:  execute "))
				print "extended" > (dir "/protocol")
			keep = 1; n++
			params_text = ""
			sub(/.* creditgate LOG:  (statement|execute [^:]*): /, "")
			sql[n] = $0
		} else if (n && index($0, " creditgate DETAIL:  parameters: ")) {
			keep = 2
			sub(/.* creditgate DETAIL:  parameters: /, "")
			params_text = $0
		} else if (n && index($0, " creditgate ERROR:  ")) {
			sub(/.* creditgate ERROR:  /, "")
			print > (dir "/stmt." n ".failed")
		}
		next
	}
	keep == 1 { sql[n] = sql[n] "\n" $0 }
	keep == 2 { params_text = params_text "\n" $0 }
	END {
		if (bad)
			exit 1
		flush()
	}'
tx=()
for ((k = 1; ; k++)); do
	[[ -f $work/stmt.$k ]] || break
	tx+=("$work/stmt.$k")
done
round_trips_cold=${#tx[@]}
((${#tx[@]} >= 1)) || die "captured no statement for one delivery; see $pglog"
{
	echo "-- round trips of one cold delivery (log_statement=all):"
	for f in "${tx[@]}"; do
		printf -- '--   %s%s\n' "$(head -c 90 "$f" | tr '\n\t' '  ' | tr -s ' ')" \
			"$([[ -f $f.failed ]] && echo " -> ERROR: $(cat "$f.failed")")"
	done
} >"$work/round-trips.txt"

# The pgbench script: the statements of the delivery (those between begin and
# commit, when it used a transaction), with the ids of the captured delivery
# replaced by per-client, per-transaction variables (the same lengths and
# shape), a user id that a later statement got from the first one's result
# taken from it (\gset), everything else (the 1.8 KB payload, the timestamps)
# literally as the service sent it.
#
# A second script sends the same transaction in one round trip (pgbench's \;
# joins statements into one simple-protocol message), a later statement then
# reading the user id by a subquery: what PostgreSQL would gain if the service
# sent its transaction in one round trip. It is skipped when the delivery
# already was a single statement.
script=$work/signup.pgbench
script1=$work/signup-one-round-trip.pgbench
in_tx=0
used_tx=0
work_stmts=()
failed_stmts=0
for f in "${tx[@]}"; do
	if [[ -f $f.failed ]]; then
		failed_stmts=$((failed_stmts + 1))
		log "warning: a statement of the captured delivery failed ($(cat "$f.failed")); pgbench leaves it out"
		continue
	fi
	s=$(cat "$f")
	case $(echo "$s" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]') in
	begin)
		in_tx=1
		used_tx=1
		continue
		;;
	commit)
		in_tx=0
		continue
		;;
	--ping)
		continue
		;;
	esac
	if ((used_tx && !in_tx)); then
		die "a statement after the transaction: update hack/bench.sh"
	fi
	work_stmts+=("$s")
done
statements_in_tx=${#work_stmts[@]}
((statements_in_tx > 0)) || die "no statement captured; see $pglog"
# Round trips of the replayed transaction.
replay_trips=$((statements_in_tx + 2 * used_tx))
gset=0
for ((k = 1; k < statements_in_tx; k++)); do
	s=${work_stmts[k]}
	s2=${s//"($cap_uid, '$cap_user'"/"(:id, '$cap_user'"}
	if [[ $s2 != "$s" ]]; then
		gset=1
		work_stmts[k]=$s2
	fi
done
header="-- generated by hack/bench.sh from the SQL the webhook sent for one user.created"
printf '%s\n\\set n :n + 1\n' "$header" >"$script"
printf '%s, as one round trip\n\\set n :n + 1\n' "$header" >"$script1"
if ((used_tx)); then
	echo "BEGIN;" >>"$script"
	echo "BEGIN \;" >>"$script1"
fi
for ((k = 0; k < statements_in_tx; k++)); do
	s=${work_stmts[k]}
	s=${s//"$cap_user"/"user_:run-:client_id-:n"}
	s=${s//"$cap_svix"/"msg_:run-:client_id-:n"}
	if ((k == 0 && gset)); then
		printf '%s \\gset\n' "$s" >>"$script"
	else
		printf '%s;\n' "$s" >>"$script"
	fi
	s=${s//"(:id, "/"((SELECT id FROM users WHERE clerk_id = 'user_:run-:client_id-:n'), "}
	if ((used_tx || k < statements_in_tx - 1)); then
		printf '%s \\;\n' "$s" >>"$script1"
	else
		printf '%s;\n' "$s" >>"$script1"
	fi
done
if ((used_tx)); then
	echo "COMMIT;" >>"$script"
	echo "COMMIT;" >>"$script1"
fi
if ((replay_trips == 1)); then
	ONE_TRIP=0
fi

# A third script runs the same statements prepared (-M prepared: parsed and
# planned once per connection, executed with bound parameters), as the
# service would with pgx's extended protocol. -M prepared reads every colon
# followed by a name as a variable, so: a literal holding the per-transaction
# ids becomes an expression of variables, each colon ending a piece; any
# other literal with such a colon (the JSON payload, timestamps) becomes a -D
# variable, that is a bound parameter.
script_prep=$work/signup-prepared.pgbench
cat >"$work/prepare.awk" <<'AWK'
# Turns a pgbench script whose SQL carries its values as literals into one
# for -M prepared: a literal holding only the per-transaction ids becomes an
# expression of pgbench variables (bound parameters), and any other literal
# with a colon in it (the JSON payload, timestamps), which -M prepared would
# take for variables, becomes a -D variable written to the file `vars`.
function lit_out(lit,   t, e) {
	t = lit
	gsub(/:run-:client_id-:n/, "", t)
	if (t ~ /:[A-Za-z0-9_]/ && (index(t, "{") || !index(lit, ":run-:client_id-:n"))) {
		k++
		printf "lit%d=%s\n", k, lit > vars
		return ":lit" k
	}
	e = lit
	gsub(/'/, "''", e)
	if (!index(e, ":run-:client_id-:n"))
		return "'" e "'"
	# Each colon ends a piece, so that -M prepared never reads it as a variable.
	gsub(/:run-:client_id-:n/, "\001", e)
	gsub(/:/, ":' || '", e)
	gsub(/\001/, "' || :run || '-' || :client_id || '-' || :n || '", e)
	return "('" e "')"
}
/^\\/ || /^--/ { print; next }
{
	line = $0
	out = ""
	while ((i = index(line, "'")) > 0) {
		out = out substr(line, 1, i - 1)
		rest = substr(line, i + 1)
		lit = ""
		for (;;) {
			j = index(rest, "'")
			if (j == 0) {
				print "prepare.awk: a literal spans lines" > "/dev/stderr"
				exit 1
			}
			lit = lit substr(rest, 1, j - 1)
			rest = substr(rest, j + 1)
			if (substr(rest, 1, 1) != "'")
				break
			lit = lit "'"
			rest = substr(rest, 2)
		}
		out = out lit_out(lit)
		line = rest
	}
	print out line
}
AWK
: >"$work/signup-prepared.vars"
awk -v vars="$work/signup-prepared.vars" -f "$work/prepare.awk" "$script" >"$script_prep"
prep_args=()
while IFS= read -r v; do
	prep_args+=(-D "$v")
done <"$work/signup-prepared.vars"

# ---- measured runs -----------------------------------------------------------

results=$work/results.txt
row() {
	local v line=
	for v in "$@"; do
		line+="| $v "
	done
	echo "$line|" >>"$results"
}
echo "| run | clients | events or tx | duration s | per second | p50 ms | p90 ms | p99 ms | max ms | service CPU µs/event | PostgreSQL CPU µs/event | client CPU µs/event | other processes, cores | service peak RSS MB | round trips/event |" >"$results"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" >>"$results"

# statements DB FILE: this database's pg_stat_statements, busiest first.
statements() {
	psql_ -d postgres -c "SELECT calls, round(mean_exec_time::numeric, 3) AS mean_ms,
		round(total_exec_time::numeric) AS total_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS query
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = '$1' ORDER BY calls DESC, total_exec_time DESC LIMIT 8" >"$2"
}
calls() {
	psql_ -d postgres -At -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
		JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$1'"
}
reset_db_stats() {
	psql_ -d postgres -c "CHECKPOINT" -c "SELECT pg_stat_statements_reset()" >/dev/null
	settle
}

# settle: let exiting backends be reaped before pg_ticks reads the cluster's
# CPU. A backend that the postmaster reaps while pg_ticks walks /proc would be
# counted neither as a live child nor in the postmaster's children's time.
settle() { sleep 1; }

service_run() {
	local c=$1 out=$work/service-c$1.txt w0 w1 p0 p1 m0 m1 t0 t1 dur cli hwm rt
	quiet
	reset_db_stats
	# Reset the peak RSS, so that VmHWM is this run's peak.
	echo 5 2>/dev/null >"/proc/$wh_pid/clear_refs" || true
	log "service: $EVENTS events from $c senders (others busy: $QUIET_BUSY cores)"
	local logoff errs
	logoff=$(stat -c %s "$pglog")
	w0=$(proc_ticks "$wh_pid") p0=$(pg_ticks) m0=$(machine_ticks) t0=$EPOCHREALTIME
	run_bg "$work/svixsend-c$c.time" "$work/svixsend" -url "$url" -n "$EVENTS" -c "$c" -pregenerate -client "$SENDER_CLIENT" >"$out" 2>"$work/svixsend-c$c.log" ||
		die "svixsend failed: $(cat "$out" "$work/svixsend-c$c.log")"
	t1=$EPOCHREALTIME w1=$(proc_ticks "$wh_pid") p1=$(pg_ticks) m1=$(machine_ticks)
	echo "service-c$c webhook=$((w1 - w0)) postgres=$((p1 - p0)) machine=$((m1 - m0)) sender_s=$(cat "$work/svixsend-c$c.time") t=$(calc "$t1 - $t0" 3) stat=$(head -n 1 /proc/stat)" >>"$work/accounting.txt"
	hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$wh_pid/status")
	rt=$(calls creditgate)
	# pg_stat_statements counts only statements that succeeded.
	errs=$(tail -c +"$((logoff + 1))" "$pglog" | grep -c ' creditgate ERROR:  ' || true)
	statements creditgate "$work/statements-service-c$c.txt"
	dur=$(calc "$t1 - $t0" 3)
	cli=$(awk '{ print $1 + $2 }' "$work/svixsend-c$c.time")
	get() { sed -n "s/^$1: //p" "$out"; }
	row "service" "$c" "$(get events)" "$dur" "$(get throughput_per_s)" \
		"$(get latency_p50_ms)" "$(get latency_p90_ms)" "$(get latency_p99_ms)" "$(get latency_max_ms)" \
		"$(calc "($w1 - $w0) * 1e6 / $CLK_TCK / $EVENTS" 0)" \
		"$(calc "($p1 - $p0) * 1e6 / $CLK_TCK / $EVENTS" 0)" \
		"$(calc "$cli * 1e6 / $EVENTS" 0)" \
		"$(calc "(($m1 - $m0) - ($w1 - $w0) - ($p1 - $p0) - $cli * $CLK_TCK) / $CLK_TCK / $dur" 2)" \
		"$(calc "$hwm / 1024" 1)" "$(calc "$rt / $EVENTS" 2)$( ((errs)) && echo " + $(calc "$errs / $EVENTS" 2) failed")"
	SERVICE_TPS[$c]=$(get throughput_per_s)
	SERVICE_P99[$c]=$(get latency_p99_ms)
	SERVICE_CPU[$c]=$(calc "($w1 - $w0) * 1e6 / $CLK_TCK / $EVENTS" 0)
	SERVICE_RSS[$c]=$(calc "$hwm / 1024" 1)
}

# pgbench_run CLIENTS SCRIPT NAME LABEL [ROUND_TRIPS]: ROUND_TRIPS is written
# instead of statements per transaction when statements share round trips.
pgbench_run() {
	local c=$1 f=$2 name=$3-c$1 label=$4 mode=simple extra=() p0 p1 m0 m1 t0 t1 ta dur cli tps n rt lat out
	out=$work/$name.txt
	if [[ $f == "$script_prep" ]]; then
		mode=prepared
		extra=("${prep_args[@]}")
	fi
	quiet
	reset_db_stats
	mkdir -p "$work/$name-log"
	log "$label: $c clients for ${PGBENCH_SECONDS}s (others busy: $QUIET_BUSY cores)"
	p0=$(pg_ticks) m0=$(machine_ticks) t0=$EPOCHREALTIME
	run_bg "$work/$name.time" "$PG_BIN/pgbench" -n -M "$mode" -h 127.0.0.1 -p "$pgport" -U postgres -c "$c" -j 2 \
		-T "$PGBENCH_SECONDS" -D n=0 -D "run=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')" "${extra[@]}" \
		-l --log-prefix="$work/$name-log/tx" -f "$f" pgbench >"$out" 2>&1 ||
		die "pgbench failed: $(tail -n 20 "$out")"
	t1=$EPOCHREALTIME
	settle
	p1=$(pg_ticks) m1=$(machine_ticks) ta=$EPOCHREALTIME
	echo "$name postgres=$((p1 - p0)) machine=$((m1 - m0)) pgbench_s=$(cat "$work/$name.time") t=$(calc "$t1 - $t0" 3) stat=$(head -n 1 /proc/stat)" >>"$work/accounting.txt"
	grep -q '^number of failed transactions: 0 ' "$out" || die "pgbench transactions failed: $(cat "$out")"
	tps=$(sed -n "s/^tps = \([0-9.]*\) .*/\1/p" "$out")
	tps=$(calc "$tps" 1)
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
	rt=$(calls pgbench)
	statements pgbench "$work/statements-$name.txt"
	# Per-transaction log: the third field is the latency in µs.
	lat=$work/$name-latency
	cat "$work/$name-log"/tx.* | awk '{ print $3 / 1000 }' | sort -n >"$lat"
	rm -rf "$work/$name-log"
	dur=$(calc "$t1 - $t0" 3)
	cli=$(awk '{ print $1 + $2 }' "$work/$name.time")
	rt=$(calc "$rt / $n" 2)
	row "$label" "$c" "$n" "$dur" "$tps" \
		"$(percentile 50 "$lat")" "$(percentile 90 "$lat")" "$(percentile 99 "$lat")" "$(tail -n 1 "$lat")" \
		"–" "$(calc "($p1 - $p0) * 1e6 / $CLK_TCK / $n" 0)" "$(calc "$cli * 1e6 / $n" 0)" \
		"$(calc "(($m1 - $m0) - ($p1 - $p0) - $cli * $CLK_TCK) / $CLK_TCK / ($ta - $t0)" 2)" \
		"–" "${5:-$rt}"
	if [[ $label == pgbench ]]; then
		PGBENCH_TPS[$c]=$tps
	elif [[ $label == "pgbench, prepared" ]]; then
		PGBENCH_PREP_TPS[$c]=$tps
	fi
}

declare -A SERVICE_TPS SERVICE_P99 SERVICE_CPU SERVICE_RSS PGBENCH_TPS PGBENCH_PREP_TPS

log "pgbench warm-up (3s) and check of the generated script"
"$PG_BIN/pgbench" -n -M simple -h 127.0.0.1 -p "$pgport" -U postgres -c 16 -j 2 -T 3 -D n=0 -D run=warmup \
	-f "$script" pgbench >"$work/pgbench-warmup.txt" 2>&1 || die "pgbench warm-up failed: $(tail -n 20 "$work/pgbench-warmup.txt")"
grep -q '^number of failed transactions: 0 ' "$work/pgbench-warmup.txt" || die "pgbench warm-up had failures"
if [[ $ONE_TRIP == 1 ]]; then
	"$PG_BIN/pgbench" -n -M simple -h 127.0.0.1 -p "$pgport" -U postgres -c 2 -j 1 -t 50 -D n=0 -D run=check1rt \
		-f "$script1" pgbench >"$work/pgbench-1rt-check.txt" 2>&1 ||
		die "one-round-trip script failed: $(tail -n 20 "$work/pgbench-1rt-check.txt")"
	grep -q '^number of failed transactions: 0 ' "$work/pgbench-1rt-check.txt" || die "one-round-trip script had failures"
fi
"$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$pgport" -U postgres -c 2 -j 1 -t 50 -D n=0 -D run=checkprep \
	"${prep_args[@]}" -f "$script_prep" pgbench >"$work/pgbench-prepared-check.txt" 2>&1 ||
	die "prepared script failed: $(tail -n 20 "$work/pgbench-prepared-check.txt")"
grep -q '^number of failed transactions: 0 ' "$work/pgbench-prepared-check.txt" || die "prepared script had failures"
[[ $(psql_ -d pgbench -At -c "SELECT count(*) = (SELECT count(*) FROM credit_transactions) AND count(*) > 100
	AND bool_and(available_credits = 20) FROM users") == t ]] || die "the pgbench scripts do not grant 20 credits per new user"

for c in $CLIENTS; do
	service_run "$c"
	pgbench_run "$c" "$script" pgbench pgbench
	if [[ $ONE_TRIP == 1 ]]; then
		pgbench_run "$c" "$script1" pgbench-1rt "pgbench, 1 round trip" "1 ($replay_trips in one message)"
	fi
	if [[ $PREPARED == 1 ]]; then
		pgbench_run "$c" "$script_prep" pgbench-prepared "pgbench, prepared" "$replay_trips (prepared)"
	fi
done

# Every event made one user with 20 credits.
want=$((WARMUP_EVENTS + 1 + EVENTS * $(wc -w <<<"$CLIENTS")))
check=$(psql_ -d creditgate -At -F' ' -c "SELECT count(*), count(*) FILTER (WHERE available_credits = 20),
	(SELECT count(*) FROM credit_transactions), (SELECT count(*) FROM webhook_events) FROM users")
[[ $check == "$want $want $want $want" ]] || die "ledger check: want $want users with 20 credits, entries and events; got $check"

if [[ $PROFILE == 1 ]]; then
	command -v perf >/dev/null || die "BENCH_PROFILE=1 needs perf"
	quiet
	log "profiling one more service run (16 senders) with perf"
	perf record -F 999 -g -p "$wh_pid" -o "$work/perf.data" 2>"$work/perf-record.log" &
	perf_pid=$!
	sleep 1
	run_bg "$work/svixsend-profiled.time" "$work/svixsend" -url "$url" -n "$EVENTS" -c 16 -pregenerate -client "$SENDER_CLIENT" >"$work/service-profiled.txt" 2>&1 ||
		die "profiled run failed"
	kill -INT "$perf_pid"
	wait "$perf_pid" || true
	perf_pid=
	# Self time by function, and inclusive time (children) by function.
	{ perf report -i "$work/perf.data" --stdio --no-children --sort dso,sym -g none 2>/dev/null |
		grep -v '^#' | grep '%' | head -n 60 >"$work/perf-self.txt"; } || true
	{ perf report -i "$work/perf.data" --stdio --children --sort sym -g none 2>/dev/null |
		grep -v '^#' | grep '%' | head -n 120 >"$work/perf-children.txt"; } || true
fi

# ---- report -----------------------------------------------------------------

verdict() { awk -v a="$1" -v b="$2" "BEGIN { exit !(a $3 b) }" && echo met || echo "MISSED"; }
{
	echo "## Results"
	echo
	echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(($(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1024)) MB RAM"
	echo "- $("$PG_BIN/postgres" --version); $(go version | cut -d' ' -f3-); webhook built from $built"
	echo "- load average at start: $START_LOAD; service DB_MAX_CONNS=${DB_MAX_CONNS:-default (10)}${WEBHOOK_ENV:+, $WEBHOOK_ENV}; $EVENTS events per service run (svixsend -pregenerate -client $SENDER_CLIENT), ${PGBENCH_SECONDS}s per pgbench run"
	echo "- round trips of one delivery after an idle second (log_statement=all): $round_trips_cold$( ((failed_stmts)) && echo ", $failed_stmts of them failing statements (not replayed by pgbench)"); statements replayed: $statements_in_tx$( ((used_tx)) && echo ', in a transaction (BEGIN and COMMIT are round trips too)')$([[ -f $work/protocol ]] && echo '; the service sent them with the extended protocol (prepared, bound parameters), so "pgbench, prepared" is the like-for-like run')"
	echo
	cat "$results"
	echo
	echo "### Targets"
	echo
	first=${CLIENTS%% *}
	ratio=$(calc "${SERVICE_TPS[$first]} / ${PGBENCH_TPS[$first]}" 2)
	echo "| target | measured | verdict |"
	echo "|---|---|---|"
	echo "| throughput ≥ 0.5 × pgbench TPS at $first clients | ${SERVICE_TPS[$first]} / ${PGBENCH_TPS[$first]} = $ratio | $(verdict "$ratio" 0.5 '>=') |"
	if [[ -n ${PGBENCH_PREP_TPS[$first]:-} ]]; then
		ratio=$(calc "${SERVICE_TPS[$first]} / ${PGBENCH_PREP_TPS[$first]}" 2)
		echo "| (stricter) throughput ≥ 0.5 × pgbench -M prepared TPS at $first clients | ${SERVICE_TPS[$first]} / ${PGBENCH_PREP_TPS[$first]} = $ratio | $(verdict "$ratio" 0.5 '>=') |"
	fi
	for c in $CLIENTS; do
		echo "| p99 < 50 ms ($c senders) | ${SERVICE_P99[$c]} ms | $(verdict "${SERVICE_P99[$c]}" 50 '<') |"
	done
	for c in $CLIENTS; do
		echo "| service CPU < 250 µs per new event ($c senders) | ${SERVICE_CPU[$c]} µs | $(verdict "${SERVICE_CPU[$c]}" 250 '<') |"
	done
	for c in $CLIENTS; do
		echo "| peak RSS < 64 MB ($c senders) | ${SERVICE_RSS[$c]} MB | $(verdict "${SERVICE_RSS[$c]}" 64 '<') |"
	done
	echo
	echo "### Round trips"
	echo
	echo '```'
	cat "$work/round-trips.txt"
	for f in "$work"/statements-*.txt; do
		echo "-- pg_stat_statements, $(basename "$f" .txt):"
		cat "$f"
	done
	echo '```'
	if [[ $PROFILE == 1 ]]; then
		echo
		echo "### Profile of the service (perf, 16 senders): self time, then inclusive time"
		echo
		echo '```'
		head -n 40 "$work/perf-self.txt"
		echo
		head -n 80 "$work/perf-children.txt"
		echo '```'
	fi
} | tee "$work/report.txt"
